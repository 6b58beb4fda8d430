"""How stable is the LR finder's suggestion, and does training at it beat the lab's hand-picked lr?

    python benchmarks/lr_finder.py [--train-subset 10000] [--epochs 5] [--threads 1]

For the lab's simple CNN (batch 32) with SGD (momentum 0.9) and with Adam, on the real CIFAR-10
copy (../shared/datasets/cifar10-jpeg.zip, prepared once into --data-dir): the repeated range
test with config/config.yaml's finder settings, the spread of each suggestion across the
repeats, and the test accuracy (all 10,000 test images, last epoch) of an `--epochs` run at
each suggestion's median against the same run at the lab's lr (0.001 for both). Prints markdown
tables (benchmarks/lr_finder.md holds the measured ones); writes the sweeps (JSON and figure)
and the raw numbers to --out-dir.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from cifarlab.analysis.lr_finder import METHODS, run_lr_finder
from cifarlab.config.validate import validate_config
from cifarlab.core.files import write_json
from cifarlab.core.yamlfiles import load_yaml
from cifarlab.data.prepare import prepare
from cifarlab.plots.run_figures import plot_lr_finder
from cifarlab.training.loop import train_run

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.zip"
CPU = torch.device("cpu")


def load_data(archive: Path, folder: Path) -> tuple[dict, dict]:
    """The prepared train/test dicts, decoded from `archive` into `folder` the first time."""
    train_path, test_path = folder / "train.pt", folder / "test.pt"
    if not (train_path.exists() and test_path.exists()):
        print(f"preparing {archive} into {folder} (once) ...", flush=True)
        prepare(archive, train_path, test_path, None, image_size=32)
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
    return load(train_path), load(test_path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/cifarlab-bench/cifar10-jpeg"))
    parser.add_argument("--train-subset", type=int, default=10_000, help="stratified, images")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="1: small convs on a busy CPU")
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "adam"])
    parser.add_argument("--start-lr", type=float, help="default: config/config.yaml's lr_finder.start_lr")
    parser.add_argument("--end-lr", type=float, help="default: config/config.yaml's")
    parser.add_argument("--num-iter", type=int, help="default: config/config.yaml's")
    parser.add_argument("--train-at", nargs="*", default=list(METHODS), help="suggestions to train at")
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/cifarlab-bench/lr_finder"))
    args = parser.parse_args()
    if not args.archive.exists():
        print(f"skipped: {args.archive} not found")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    train, test = load_data(args.archive, args.data_dir)

    config = load_yaml(ROOT / "config" / "config.yaml")
    runs = validate_config(config)
    finder = {**config["lr_finder"], "repeats": args.repeats, "suggestion": "valley"}
    for key in ("start_lr", "end_lr", "num_iter"):
        if getattr(args, key) is not None:
            finder[key] = getattr(args, key)
    rows = []
    for optimizer in args.optimizers:
        run = {**runs[f"simple_cnn-{optimizer}"], "epochs": args.epochs, "train_subset": args.train_subset}
        sweep = run_lr_finder(run, train, finder, device=CPU)
        write_json(sweep, args.out_dir / f"{run['name']}.json")
        plot_lr_finder(args.out_dir / f"{run['name']}.json", args.out_dir / f"{run['name']}.png")
        row = {
            "optimizer": optimizer,
            "finder": sweep["suggestions"],
            "steps": [r["steps"] for r in sweep["repeats"]],
            "sweep_seconds": sweep["seconds"],
            "trained": {},
        }
        lrs = {"lab": float(run["lr"]), **{m: sweep["suggestions"][m]["median"] for m in args.train_at}}
        for label, lr in lrs.items():
            result = train_run(run, train, test, device=CPU, lr=lr)
            history = result["history"]
            row["trained"][label] = {
                "lr": lr,
                "status": result["status"],
                "test_accuracy": history[-1]["test_accuracy"],
                # the best epoch on the test set: an upper bound for comparing lrs, never a result
                "oracle_test_accuracy": max(h["test_accuracy"] for h in history),
                "train_seconds": result["train_seconds"],
            }
            print(f"{optimizer} lr {lr:.3g} ({label}): {history[-1]['test_accuracy']:.2f} %", flush=True)
        rows.append(row)
        (args.out_dir / "summary.json").write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1)
        )

    print(
        f"\nsimple CNN, batch 32, {args.train_subset} training images, {args.epochs} epochs, "
        f"{args.repeats} repeats of {finder['num_iter']} steps over "
        f"{finder['start_lr']:g}..{finder['end_lr']:g}\n"
    )
    print("| optimizer | suggestion | per repeat | median | spread (decades) | IQR (decades) | sweep s |")
    print("|" + " --- |" * 7)
    for row in rows:
        for method in METHODS:
            s = row["finder"][method]
            print(
                f"| {row['optimizer']} | {method} | {', '.join(f'{v:.2g}' for v in s['lrs'])} "
                f"| {s['median']:.3g} | {s['spread_decades']:.2f} | {s['iqr_decades']:.2f} "
                f"| {row['sweep_seconds']:.0f} |"
            )
    print(f"\n| optimizer | lr from | lr | test acc. after {args.epochs} epochs | best test epoch (bound) |")
    print("|" + " --- |" * 5)
    for row in rows:
        for label, t in row["trained"].items():
            status = "" if t["status"] == "ok" else f" ({t['status']})"
            print(
                f"| {row['optimizer']} | {label} | {t['lr']:.3g} | {t['test_accuracy']:.2f} %{status} "
                f"| {t['oracle_test_accuracy']:.2f} % |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
