"""Training images/s of two trees side by side: the hot path before and after a change (issue 23).

    git worktree add /tmp/hot-before 08659dd
    python benchmarks/hotpath.py /tmp/hot-before . --data results/data/cifar10-jpeg \\
        --runs airbench:4096 dropout_cnn-dropout0.1:2048 simple_cnn-yogi:2048 --repeats 3 --threads 1

Each tree trains each run (a run of config/config.yaml: RUN:IMAGES trains on a stratified IMAGES
of the real training images, one epoch) through its own `cifarlab.training.loop.train_run`, in a
fresh process with PYTHONPATH set to that tree, the two trees alternating so that both see the
same load. The figures: train_run's `images_per_second` (the training epochs' wall time, the
test pass, whitening and model build excluded) and the same images over the CPU seconds of the
training epochs alone (`train_one_epoch`, wrapped in the child), steadier on a loaded machine.
Its own script rather than a train_speed.py command because it runs other trees' code in child
processes, as dry_run.py and planning.py do.
Timings on a shared CPU are noisy: compare the ratios of one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = """
import json, sys, time, torch
torch.set_num_threads({threads})
from cifarlab.config.validate import validate_config
from cifarlab.core.yamlfiles import load_yaml
from cifarlab.training import loop
from cifarlab.training.loop import train_run
cpu = []
real_epoch = loop.train_one_epoch
def timed_epoch(*args, **kwargs):  # the CPU seconds of the training steps alone
    started = time.process_time()
    try:
        return real_epoch(*args, **kwargs)
    finally:
        cpu.append(time.process_time() - started)
loop.train_one_epoch = timed_epoch
config = load_yaml("config/config.yaml")
config["pretrained"] = False
run = dict(validate_config(config)[{run!r}], epochs=1, train_subset={images}, test_subset=256, seed=0)
train = torch.load({data!r} + "/train.pt", weights_only=True)
test = torch.load({data!r} + "/test.pt", weights_only=True)
lr = run["lr"] if run["lr"] != "auto" else 0.01
result = train_run(run, train, test, device=torch.device("cpu"), lr=lr, precision={precision!r})
images = sum(row["images"] for row in result["history"])
print(json.dumps({{"images_per_second": result["images_per_second"],
                  "cpu_images_per_second": images / sum(cpu),
                  "train_loss": result["history"][-1]["train_loss"]}}))
"""


def measure(tree: Path, run: str, images: int, args: argparse.Namespace) -> dict:
    """One training of `run` on `images` images by the code of `tree` (a child process)."""
    code = WORKER.format(
        threads=args.threads, run=run, images=images, data=str(args.data.resolve()), precision=args.precision
    )
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"error: {tree} {run}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="the tree before (a git worktree or an archive)")
    parser.add_argument("after", type=Path, help="the tree after")
    parser.add_argument("--data", type=Path, required=True, help="folder with the prepared train.pt, test.pt")
    parser.add_argument("--runs", nargs="+", default=["airbench:4096", "dropout_cnn-dropout0.1:2048"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()
    figures: dict = {}
    for spec in args.runs:
        run, _, images = spec.partition(":")
        got: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(args.repeats):
            for side, tree in (("before", args.before), ("after", args.after)):
                got[side].append(measure(tree, run, int(images or 2048), args))
        figures[run] = {"runs": got}
        for key in ("images_per_second", "cpu_images_per_second"):
            before, after = (statistics.median(g[key] for g in got[side]) for side in ("before", "after"))
            figures[run][key] = {"before": before, "after": after, "ratio": after / before}
            print(
                f"{run:26s} {images:>6s} images  {key:22s} before {before:8.1f}  after {after:8.1f}  "
                f"after/before {after / before:5.2f}x",
                flush=True,
            )
        same = {g["train_loss"] for g in got["before"]} == {g["train_loss"] for g in got["after"]}
        print(f"{run:26s} same training loss before and after: {same}", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
