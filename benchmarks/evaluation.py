"""The passes over a split (issue 23; one pass for training, the LR finder and evaluate): per-epoch,
test and feature passes, before vs after, side by side.

    python benchmarks/evaluation.py passes --data results/data/cifar10-jpeg --threads 2 --repeats 3
    python benchmarks/evaluation.py cached OLD_TREE NEW_TREE --out OUT
    python benchmarks/evaluation.py batch-sizes --data results/data/cifar10-jpeg

- passes: images/s of the passes over a split of each model (untrained; the speed does not depend
  on the weights) over --test-images images of --data/test.pt, before vs after. Before: the pass
  that training's per-epoch validation and test and (until issue 23) evaluate made, over the run's
  batches of --batch-size, one pass per view set: scoring.split_logits with `batch_size` (the
  removed per-batch loop ran the same forward passes). After: scoring.split_logits at its default
  (one upload, batching.inference_batch images per pass, the plain view's pass shared with TTA,
  one copy back). Rows: training's per-epoch pass (plain: scoring.evaluation_pass), evaluate's
  pass (plain + --tta; left out for --tta none), and the `features` pass at its old 64 images per
  pass against the new default. The two alternate --repeats times in one process; medians, fp32
  and bf16 (where the CPU has native bf16), and the new / old ratio. Both must give the same fp32
  predictions (checked).
- cached: a frozen VGG16 head (random backbone, seed 0, 32 px, 1 epoch on 200 images: no
  ImageNet weights needed) through `features`, `train` and `evaluate` in a fresh Python per
  tree: the size of model.pt and the seconds of the train and evaluate calls (evaluate without
  its model.pt2 export, which is the same in both trees).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHED = r"""
import json, sys, time, torch
from pathlib import Path
from cifarlab.data import synthetic
from cifarlab.training import evaluate, features, loop
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(int(sys.argv[2]))
sys.path.insert(0, "tests")
from conftest import lab_run, prepared_split
splits = synthetic.make_dataset(train_per_class=20, test_per_class=10, size=32, seed=0)
train = prepared_split(*splits["train"])
torch.save(train, out / "train.pt")
torch.save(prepared_split(*splits["test"], mean=train["mean"], std=train["std"]), out / "test.pt")
backbone = {"model": "vgg16", "pretrained": False, "seed": 0, "image_size": 32}
features.main(train_path=out / "train.pt", test_path=out / "test.pt", out_train=out / "f_train.pt",
              out_test=out / "f_test.pt", backbone=backbone, device="cpu", precision="fp32")
run = lab_run(name="vgg16_head", model="vgg16", pretrained=False, freeze="head", epochs=1, batch_size=50,
              seed=0)
started = time.perf_counter()
loop.main(train_path=out / "train.pt", test_path=out / "test.pt", model_path=out / "model.pt",
          history_path=out / "history.csv", run=run, device="cpu", precision="fp32",
          cached_train=out / "f_train.pt", cached_test=out / "f_test.pt")
trained = time.perf_counter() - started
started = time.perf_counter()
metrics = evaluate.main(model_path=out / "model.pt", history_path=out / "history.csv",
                        test_path=out / "test.pt", metrics_path=out / "metrics.json", dataset="synthetic",
                        seed=0, device="cpu", precision="fp32", cached_test=out / "f_test.pt")
evaluated = time.perf_counter() - started
print(json.dumps({"model_pt_bytes": (out / "model.pt").stat().st_size, "train_s": trained,
                  "evaluate_s": evaluated, "test_accuracy": metrics["test_accuracy"]}))
"""


def cached(args: argparse.Namespace) -> None:
    rows = {}
    for tree in args.trees:
        out = Path(tempfile.mkdtemp(dir=args.out))
        env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
        done = subprocess.run(
            [sys.executable, "-c", CACHED, str(out), str(args.threads)], env=env, cwd=tree,
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode:
            raise SystemExit(f"{tree}:\n{done.stderr[-3000:]}")
        rows[str(tree)] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{tree}: {rows[str(tree)]}", flush=True)
    (args.out / "cached.json").write_text(json.dumps(rows, indent=1))


def alternate(functions: dict, repeats: int) -> dict[str, float]:
    """{label: median seconds} of the `functions` (label -> no-argument callable), run in turn
    --repeats times, so that a change of machine load hits each alike."""
    seconds: dict[str, list[float]] = {label: [] for label in functions}
    for _ in range(repeats):
        for label, fn in functions.items():
            started = time.perf_counter()
            fn()
            seconds[label].append(time.perf_counter() - started)
    return {label: statistics.median(values) for label, values in seconds.items()}


def compare_test_passes(
    model, settings, data: dict, precision: str, tta: str, repeats: int
) -> dict[str, dict[str, float]]:
    """{row: {"old", "new": median seconds}} of training's per-epoch pass (plain) and evaluate's
    (plain and `tta`, unless "none"), before (split_logits at the run's batch size, a pass per view
    set) and after (at its default batch, the plain view's pass shared)."""
    import torch

    from cifarlab.training import scoring

    cpu, size = torch.device("cpu"), settings.image_size

    views = ("none",) if tta == "none" else ("none", tta)  # evaluate's view sets

    def old_logits(tta: str):  # the run's batches, one pass per view set
        return scoring.split_logits(
            model,
            data,
            image_size=size,
            device=cpu,
            precision=precision,
            tta=tta,
            batch_size=settings.batch_size,
        )

    def old_epoch() -> tuple[float, float]:
        return scoring.loss_accuracy(old_logits("none")[0], data["labels"])

    def old_test() -> list[torch.Tensor]:
        return [old_logits(v)[v != "none"].argmax(1).cpu() for v in views]

    def new_epoch() -> tuple[float, float]:  # what training runs after each epoch
        return scoring.evaluation_pass(model, data, settings, cpu, precision)

    def new_test() -> list[torch.Tensor]:
        logits = scoring.split_logits(model, data, image_size=size, device=cpu, precision=precision, tta=tta)
        return [x.argmax(1).cpu() for x in logits if x is not None]

    if precision == "fp32":  # the same predictions, hence accuracy, before and after
        assert all(torch.equal(a, b) for a, b in zip(old_test(), new_test(), strict=True)), (
            "predictions differ"
        )
        assert old_epoch()[1] == new_epoch()[1], "per-epoch accuracy differs"
    rows = {"per-epoch pass, plain": alternate({"old": old_epoch, "new": new_epoch}, repeats)}
    if tta != "none":  # with --tta none evaluate's pass is the per-epoch one
        rows[f"test, plain + {tta}"] = alternate({"old": old_test, "new": new_test}, repeats)
    return rows


def compare_feature_passes(model, data: dict, precision: str, repeats: int) -> dict[str, float]:
    """{"old", "new": median seconds} of compute_features at its old 64 images per pass and now."""
    import torch

    from cifarlab.training.features import compute_features

    def at(batch: int | None):
        return lambda: compute_features(
            model, data, image_size=32, device=torch.device("cpu"), precision=precision, batch_size=batch
        )

    return alternate({"old": at(64), "new": at(None)}, repeats)


def passes(args: argparse.Namespace) -> None:
    import torch

    from cifarlab.core.device import resolve_precision
    from cifarlab.models import build_model
    from cifarlab.training.sampling import subset
    from cifarlab.training.settings import RunSettings

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import lab_run

    torch.set_num_threads(args.threads)
    data = subset(torch.load(args.data / "test.pt", weights_only=True), torch.arange(args.test_images))
    precisions = ["fp32"] + (["bf16"] if resolve_precision(torch.device("cpu"), "auto") == "bf16" else [])
    print("| pass | precision | old images/s | new images/s | new / old |")
    for name in args.models:
        run = lab_run(name=name, model=name, batch_size=args.batch_size, pretrained=False, tta=args.tta)
        model = build_model(run, len(data["classes"])).eval()
        for precision in precisions:
            passes_of = compare_test_passes(
                model, RunSettings.from_dict(run), data, precision, args.tta, args.repeats
            )
            rows = {f"{name} {label}": seconds for label, seconds in passes_of.items()}
            if name == "vgg16":
                rows["vgg16 features"] = compare_feature_passes(model, data, precision, args.repeats)
            for label, seconds in rows.items():
                old, new = (args.test_images / seconds[k] for k in ("old", "new"))
                print(f"| {label} | {precision} | {old:.0f} | {new:.0f} | {new / old:.2f}x |", flush=True)


def batch_sizes(args: argparse.Namespace) -> None:
    """Images/s of scoring.split_logits at each of --sizes images per pass (plain, no TTA), per
    model and precision, at --image-size px: where batching.inference_batch's CPU figures come from."""
    import torch

    from cifarlab.core.device import resolve_precision
    from cifarlab.models import build_model
    from cifarlab.training import scoring
    from cifarlab.training.sampling import subset

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import lab_run

    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    data = subset(torch.load(args.data / "test.pt", weights_only=True), torch.arange(args.test_images))
    precisions = ["fp32"] + (["bf16"] if resolve_precision(cpu, "auto") == "bf16" else [])
    print("| model | precision | " + " | ".join(f"{b} / pass" for b in args.sizes) + " |")
    for name in args.models:
        run = lab_run(name=name, model=name, pretrained=False, image_size=args.image_size)
        model = build_model(run, len(data["classes"])).eval()
        for precision in precisions:
            passes_at = {
                size: functools.partial(
                    scoring.split_logits, model, data, image_size=args.image_size, device=cpu,
                    precision=precision, batch_size=size,
                )
                for size in args.sizes
            }  # fmt: skip
            seconds = alternate(passes_at, args.repeats)
            rate = " | ".join(f"{args.test_images / seconds[b]:.1f}" for b in args.sizes)
            print(f"| {name} | {precision} | {rate} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("passes")
    p.add_argument("--data", type=Path, required=True, help="a folder with a prepared test.pt")
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--models", nargs="+", default=["simple_cnn", "airbench", "vgg16"])
    p.add_argument("--batch-size", type=int, default=64, help="the run's batch size: the old evaluation's")
    p.add_argument("--tta", default="flip_translate")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    b = commands.add_parser("batch-sizes")
    b.add_argument("--data", type=Path, required=True, help="a folder with a prepared test.pt")
    b.add_argument("--test-images", type=int, default=2048)
    b.add_argument("--models", nargs="+", default=["simple_cnn", "dropout_cnn", "airbench"])
    b.add_argument("--sizes", nargs="+", type=int, default=[32, 64, 128, 256, 512, 1024])
    b.add_argument("--image-size", type=int, default=32)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--repeats", type=int, default=3)
    c = commands.add_parser("cached")
    c.add_argument("trees", nargs="+", type=Path)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.command == "cached":
        args.out.mkdir(parents=True, exist_ok=True)
        cached(args)
    elif args.command == "batch-sizes":
        batch_sizes(args)
    else:
        passes(args)


if __name__ == "__main__":
    main()
