"""The fast recipe (airbench94, config run `airbench`) and bf16 against fp32, on the real CIFAR-10 copy.

    python benchmarks/fast.py --threads 2 --out OUT run       --data D --seeds 0 1 2 [--config FILE]
    python benchmarks/fast.py --threads 1 --out OUT precision --data D [--steps 6]
    python benchmarks/fast.py --threads 1 --out OUT accuracy  --data D --seeds 0 1 --epochs 4
    python benchmarks/fast.py --threads 2 --out OUT flops     --data D [--compile]

- run: the `airbench` run of config/config.yaml (merged with --config overlays, e.g. quick.yaml
  for its 10,000-image run), once per seed: plain and 6-view-TTA test accuracy, training seconds
  (the TTA pass is not counted: it is evaluation), images/s. --epochs overrides the epochs.
- precision: one training step of every model of the lab (simple_cnn, dropout_cnn, vgg16 and
  resnet18 at 32 px trained fully, vit) and airbench, fp32 against bf16 autocast + channels_last,
  same batch, alternating the two so that both see the same load: images/s and their ratio.
- accuracy: the lab's simple CNN (SGD lr 0.01, 10,000 images) for --epochs, fp32 and bf16, once per
  seed: is the accuracy the same within seed noise?
- flops: the FLOPs of one airbench training step (torch.utils.flop_counter), the rate reached
  (FLOP/s) in fp32 and bf16, with and without torch.compile (--compile).

--data is a folder with the prepared train.pt/test.pt (see benchmarks/README.md). Each command
prints a table and writes <command>.json into --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from cifarlab.config.validate import validate_config
from cifarlab.core.device import autocast, cpu_has_native_bf16, pick_device, synchronize, use_channels_last
from cifarlab.core.files import load_torch
from cifarlab.models import build_model
from cifarlab.study.status import load_config
from cifarlab.training.augment import epoch_batches
from cifarlab.training.evaluate import compute_metrics
from cifarlab.training.hooks import init_from_data
from cifarlab.training.loop import save_model, train_run, write_history
from cifarlab.training.optim import build_optimizer
from cifarlab.training.sampling import stratified_subset, subset
from cifarlab.training.settings import RunSettings

ROOT = Path(__file__).resolve().parent.parent
DEVICE = torch.device("cpu")  # set by --device (benchmarks/gpu.sh: cuda); the CPU by default
PRECISIONS = ("fp32", "bf16")


def load_data(folder: str) -> tuple[dict, dict]:
    return load_torch(Path(folder) / "train.pt"), load_torch(Path(folder) / "test.pt")


def study_runs(overlays: list[str]) -> dict[str, dict]:
    """The expanded runs of config/config.yaml merged with `overlays` (as Snakemake merges them)."""
    return validate_config({**load_config(overlays, [], ROOT), "pretrained": False}, ROOT)


def cmd_run(args) -> dict:
    train, test = load_data(args.data)
    base = study_runs(args.config)["airbench"]
    if args.epochs:
        base["epochs"] = args.epochs
    rows = []
    for seed in args.seeds:
        run = {**base, "seed": seed, "name": f"airbench-seed{seed}"}
        result = train_run(run, train, test, device=DEVICE, lr=run["lr"], precision=args.precision)
        folder = Path(args.out) / run["name"]
        folder.mkdir(parents=True, exist_ok=True)
        save_model(result, folder / "model.pt")
        write_history(result["history"], folder / "history.csv")
        metrics = compute_metrics(
            folder / "model.pt",
            folder / "history.csv",
            Path(args.data) / "test.pt",
            dataset=Path(args.data).name,
            seed=seed,
            device=DEVICE,
            precision=args.precision,
            tta=run["tta"],
        )
        rows.append(
            {
                "seed": seed,
                # "diverged": no test accuracy (null), counted in no mean (benchmarks/gpu.sh reads it)
                "status": metrics["status"],
                "test_accuracy": metrics["test_accuracy"],
                "tta_test_accuracy": metrics["tta_test_accuracy"],
                "train_seconds": result["train_seconds"],
                "images_per_second": result["images_per_second"],
                "history": [round(r["test_accuracy"], 2) for r in result["history"]],
            }
        )
        print(
            f"seed {seed}: {_percent(metrics['test_accuracy'])} plain, "
            f"{_percent(metrics['tta_test_accuracy'])} TTA, {result['train_seconds']:.1f} s of training, "
            f"status {metrics['status']}",
            flush=True,
        )
    ok = [r for r in rows if r["status"] == "ok"] or [{"tta_test_accuracy": None, "test_accuracy": None}]
    tta = [r["tta_test_accuracy"] for r in ok]
    summary = {
        "epochs": base["epochs"],
        "train_subset": base.get("train_subset"),
        "test_subset": base.get("test_subset"),
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "rows": rows,
        "diverged": len(rows) - sum(r["status"] == "ok" for r in rows),
        # means over the seeds that did not diverge (None if all did)
        "tta_mean": _mean(tta),
        "plain_mean": _mean([r["test_accuracy"] for r in ok]),
        "train_seconds_mean": statistics.mean(r["train_seconds"] for r in rows),
    }
    print(
        f"\nairbench, {base['epochs']} epochs, {len(rows)} seeds, {args.precision}, "
        f"{torch.get_num_threads()} "
        f"threads: TTA {_percent(summary['tta_mean'])} (plain {_percent(summary['plain_mean'])}) mean, "
        f"{summary['train_seconds_mean']:.1f} s of training mean, {summary['diverged']} diverged"
    )
    return summary


def _mean(values: list[float | None]) -> float | None:
    return None if None in values or not values else statistics.mean(values)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} %"


def lab_models() -> dict[str, dict]:
    """One run per model of the lab at 32 px, trained fully (no frozen backbone), and airbench."""
    runs = study_runs([])
    picks = {
        "simple_cnn": runs["simple_cnn-sgd"],
        "dropout_cnn": runs["dropout_cnn-dropout0.1"],
        "vgg16": {**runs["vgg16"], "freeze": "none", "image_size": 32},
        "resnet18": {**runs["resnet18"], "freeze": "none", "image_size": 32},
        "vit": runs["vit"],
        "airbench": runs["airbench"],
    }
    return {name: {**run, "optimizer": "sgd"} for name, run in picks.items()}


def step_seconds(model, optimizer, run: dict, x: torch.Tensor, y: torch.Tensor, precision: str) -> float:
    """Seconds of one training step (forward, loss, backward, optimizer) at `precision`."""
    started = time.perf_counter()
    with autocast(DEVICE, precision):
        logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    synchronize(DEVICE)
    return time.perf_counter() - started


def fresh_model(run: dict, train: dict, precision: str) -> torch.nn.Module:
    """A run's new model, initialised from the data as train does, on DEVICE in train mode."""
    model = build_model(run, 10)
    init_from_data(model, train, RunSettings.from_dict(run))
    layout = torch.channels_last if use_channels_last(DEVICE, precision) else torch.preserve_format
    return model.to(DEVICE, memory_format=layout).train()


def cmd_precision(args) -> dict:
    train, _ = load_data(args.data)
    rows = []
    for name, run in lab_models().items():
        run = {**run, "batch_size": args.batch_size}
        state = {}
        for precision in PRECISIONS:
            model = fresh_model(run, train, precision)
            lr = 1e-3 if run["optimizer"] != "sgd" else 0.01
            optimizer = build_optimizer(model, RunSettings.from_dict(run), lr)
            x, y = next(
                epoch_batches(
                    subset(train, torch.arange(run["batch_size"])),
                    RunSettings.from_dict(run),
                    epoch=0,
                    device=DEVICE,
                    precision=precision,
                )
            )
            step_seconds(model, optimizer, run, x, y, precision)  # warm-up: oneDNN picks its kernels
            state[precision] = (model, optimizer, x, y, [])
        for _ in range(args.steps):  # alternate, so that both precisions see the same load
            for precision in PRECISIONS:
                model, optimizer, x, y, times = state[precision]
                times.append(step_seconds(model, optimizer, run, x, y, precision))
        speed = {p: run["batch_size"] / statistics.median(state[p][4]) for p in PRECISIONS}
        rows.append(
            {
                "model": name,
                "batch_size": run["batch_size"],
                **{f"{p}_images_per_second": s for p, s in speed.items()},
                "bf16_over_fp32": speed["bf16"] / speed["fp32"],
            }
        )
        print(
            f"{name}: fp32 {speed['fp32']:.0f}, bf16 {speed['bf16']:.0f} images/s, "
            f"ratio {rows[-1]['bf16_over_fp32']:.2f}",
            flush=True,
        )
    print(
        f"\nnative bf16 on this CPU: {cpu_has_native_bf16()}; {torch.get_num_threads()} threads, "
        f"batch {args.batch_size}"
    )
    print("| model | fp32 images/s | bf16 images/s | bf16 / fp32 |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['model']} | {r['fp32_images_per_second']:.0f} | {r['bf16_images_per_second']:.0f} | "
            f"{r['bf16_over_fp32']:.2f} |"
        )
    return {"native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads(), "rows": rows}


def cmd_accuracy(args) -> dict:
    train, test = load_data(args.data)
    base = {
        **study_runs([])["simple_cnn-sgd"],
        "lr": 0.01,
        "epochs": args.epochs,
        "train_subset": 10000,
        "test_subset": 10000,
    }
    rows = []
    for seed in args.seeds:
        for precision in PRECISIONS:
            result = train_run(
                {**base, "seed": seed}, train, test, device=DEVICE, lr=base["lr"], precision=precision
            )
            rows.append(
                {
                    "seed": seed,
                    "precision": precision,
                    "test_accuracy": result["history"][-1]["test_accuracy"],
                    "train_seconds": result["train_seconds"],
                }
            )
            print(f"seed {seed} {precision}: {rows[-1]['test_accuracy']:.2f} %", flush=True)
    means = {p: statistics.mean(r["test_accuracy"] for r in rows if r["precision"] == p) for p in PRECISIONS}
    print(
        f"\nsimple CNN, SGD lr 0.01, 10,000 images, {args.epochs} epochs: "
        f"fp32 {means['fp32']:.2f} %, bf16 {means['bf16']:.2f} %"
    )
    return {"rows": rows, "means": means}


def cmd_flops(args) -> dict:
    train, _ = load_data(args.data)
    run = {**study_runs([])["airbench"], "batch_size": args.batch_size}
    index = stratified_subset(train["labels"], run["batch_size"], 0)
    rows, flops = [], None
    for precision in args.precisions:
        for compiled in (False, True) if args.compile else (False,):
            model = fresh_model(run, train, precision)
            optimizer = build_optimizer(model, RunSettings.from_dict(run), run["lr"])
            x, y = next(
                epoch_batches(
                    subset(train, index),
                    RunSettings.from_dict(run),
                    epoch=0,
                    device=DEVICE,
                    precision=precision,
                )
            )
            if flops is None:  # counted on the eager model: the FLOPs of the step, whatever runs them
                with FlopCounterMode(display=False) as counter:
                    step_seconds(model, optimizer, run, x, y, precision)
                flops = counter.get_total_flops()
            forward = torch.compile(model) if compiled else model
            started = time.perf_counter()
            step_seconds(forward, optimizer, run, x, y, precision)  # compilation, kernel choice
            first = time.perf_counter() - started
            seconds = statistics.median(
                step_seconds(forward, optimizer, run, x, y, precision) for _ in range(args.steps)
            )
            rows.append(
                {
                    "precision": precision,
                    "compiled": compiled,
                    "first_step_seconds": first,
                    "flops_per_step": flops,
                    "seconds_per_step": seconds,
                    "flop_per_second": flops / seconds,
                    "images_per_second": len(y) / seconds,
                }
            )
            print(
                f"{precision} compiled={compiled}: {flops / 1e9:.1f} GFLOP/step, {seconds:.2f} s "
                f"(first step {first:.1f} s), {flops / seconds / 1e9:.1f} GFLOP/s",
                flush=True,
            )
    return {"threads": torch.get_num_threads(), "batch_size": run["batch_size"], "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    parser.add_argument("--out", required=True, help="folder for <command>.json")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {"run": cmd_run, "precision": cmd_precision, "accuracy": cmd_accuracy, "flops": cmd_flops}
    for name in commands:
        p = sub.add_parser(name)
        p.add_argument("--data", required=True, help="folder with the prepared train.pt and test.pt")
    commands_parsers = sub.choices
    commands_parsers["run"].add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    commands_parsers["run"].add_argument("--epochs", type=int, default=None)
    commands_parsers["run"].add_argument(
        "--config", nargs="*", default=[], help="overlays, e.g. config/quick.yaml"
    )
    commands_parsers["run"].add_argument("--precision", choices=PRECISIONS, default="fp32")
    commands_parsers["precision"].add_argument("--steps", type=int, default=6)
    commands_parsers["precision"].add_argument("--batch-size", type=int, default=128)
    commands_parsers["accuracy"].add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    commands_parsers["accuracy"].add_argument("--epochs", type=int, default=4)
    commands_parsers["flops"].add_argument("--steps", type=int, default=3)
    commands_parsers["flops"].add_argument("--compile", action="store_true")
    commands_parsers["flops"].add_argument("--batch-size", type=int, default=1024)
    commands_parsers["flops"].add_argument(
        "--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS)
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = pick_device(args.device)
    result = commands[args.command](args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.command}.json").write_text(
        json.dumps({"args": vars(args), **result}, indent=1, default=str)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
