"""Time `prepare` on the real CIFAR-10 copy (60,000 JPEGs) and check what it produced.

    python benchmarks/prepare.py ../shared/datasets/cifar10-jpeg.zip [--workers 2]

Decodes into a temporary folder (nothing under results/ is touched), prints the seconds, and
exits non-zero unless there are 50,000 training and 10,000 test images of 10 classes, 32 x 32.
Without an argument it looks for ../shared/datasets/cifar10-jpeg.zip and skips when it is absent.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from cifarlab.data.prepare import prepare

DEFAULT = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "cifar10-jpeg.zip"
EXPECTED = {"train": 50_000, "test": 10_000, "classes": 10, "size": 32}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", nargs="?", type=Path, help=f"default: {DEFAULT}")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="decoding processes")
    args = parser.parse_args()
    if args.archive is None and not DEFAULT.exists():
        print(f"skipped: {DEFAULT} not found")
        return 0
    archive = args.archive or DEFAULT
    if not archive.exists():
        print(f"error: {archive} not found", file=sys.stderr)
        return 2

    torch.set_num_threads(args.workers)
    with tempfile.TemporaryDirectory(prefix="cifarlab-prepare-") as tmp:
        start = time.perf_counter()
        out = prepare(
            archive, f"{tmp}/train.pt", f"{tmp}/test.pt", f"{tmp}/samples.png", workers=args.workers
        )
        seconds = time.perf_counter() - start

    train, test = out["train"], out["test"]
    got = {
        "train": len(train["labels"]),
        "test": len(test["labels"]),
        "classes": len(train["classes"]),
        "size": train["images"].shape[-1],
    }
    print(f"prepare {archive.name}: {seconds:.1f} s with {args.workers} worker(s) on {os.cpu_count()} CPUs")
    print(f"  {got['train']} train, {got['test']} test images, {got['classes']} classes: {train['classes']}")
    mean, std = ([round(v, 4) for v in train[k].tolist()] for k in ("mean", "std"))
    print(f"  mean {mean}, std {std}")
    if got != EXPECTED:
        print(f"error: expected {EXPECTED}, got {got}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
