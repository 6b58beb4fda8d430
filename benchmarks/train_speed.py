"""Training speed and recipes on the real CIFAR-10 copy, each comparison side by side in one process.

    python benchmarks/train_speed.py epoch  --data results/data/cifar10-jpeg --images /tmp/me/cifar10
    python benchmarks/train_speed.py frozen --data results/data/cifar10-jpeg
    python benchmarks/train_speed.py recipe --data results/data/cifar10-jpeg --target 60 --notebook-epoch 45
    python benchmarks/train_speed.py vit    --data results/data/cifar10-jpeg

--data is a folder with the prepared train.pt/test.pt (`snakemake results/data/cifar10-jpeg/train.pt
--config data_source=../shared/datasets/cifar10-jpeg.zip`); --images is the same zip extracted
(`unzip -q ../shared/datasets/cifar10-jpeg.zip -d /tmp/me/cifar10`), which the notebook baseline
reads with ImageFolder. Each command prints a table and writes <command>.json into --out.

- epoch: one simple-CNN epoch (SGD lr 0.001 momentum 0.9, batch 32) through our in-memory tensor
  batches vs a course notebook's ImageFolder + ToTensor/Normalize per sample + DataLoader, over the
  same number of batches, alternating the two to share the machine's load fairly.
- frozen: a frozen VGG16 with a new head, 10 epochs: cached features (one backbone pass) vs the
  backbone run on every batch of every epoch (measured over --measured-epochs, scaled to 10).
- recipe: epochs of a config run (--run: our simple-CNN recipe, batch 256, one-cycle, nesterov,
  crop+flip, by default; `airbench` for the fast recipe, --set for overrides) needed to reach
  --target (the notebook's 10-epoch accuracy), against 10 notebook epochs of --notebook-epoch s.
- vit: the lab's ViT settings vs our recipe (vit_recipe), same small ViT, subset and epochs.
- seeds: one run of config/config.yaml, unchanged but for its seed, once per --seeds value: how
  much of a difference to the lab is seed noise.

Timings on a shared CPU are noisy: compare the ratios of one invocation, not absolute seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from cifarlab.config.validate import validate_config
from cifarlab.core.device import pick_device, synchronize
from cifarlab.core.yamlfiles import load_yaml
from cifarlab.models import SimpleCNN, build_model
from cifarlab.training.augment import epoch_batches
from cifarlab.training.batching import to_device
from cifarlab.training.features import compute_features
from cifarlab.training.loop import new_running, train_one_epoch, train_run
from cifarlab.training.optim import build_optimizer, build_scheduler
from cifarlab.training.sampling import stratified_subset, subset
from cifarlab.training.settings import RunSettings

ROOT = Path(__file__).resolve().parent.parent
DEVICE = torch.device("cpu")  # set by --device; the CPU by default, the machine these tables are from


def lab_runs() -> dict[str, dict]:
    """The expanded runs of config/config.yaml, without ImageNet weights (speed does not depend on them)."""
    config = load_yaml(ROOT / "config" / "config.yaml")
    config["pretrained"] = False
    return validate_config(config)


def load_data(folder: Path) -> tuple[dict, dict]:
    if not (folder / "train.pt").exists():
        sys.exit(f"error: {folder}/train.pt not found; prepare it first (see this script's docstring)")
    return tuple(
        torch.load(folder / f"{s}.pt", map_location="cpu", weights_only=True) for s in ("train", "test")
    )


def take(data: dict, size: int | None, seed: int = 0) -> dict:
    """A stratified subset of a prepared dict (all of it when size is None)."""
    return subset(data, stratified_subset(data["labels"], size, seed))


# --- epoch: ours vs the notebook ---------------------------------------------------------


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children (DataLoader workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def ours_epoch(train: dict, run: dict, num_batches: int) -> tuple[float, float]:
    """(wall, CPU) seconds for `num_batches` training steps of the simple CNN through
    cifarlab.training.loop."""
    model = build_model(run, len(train["classes"])).to(DEVICE)
    settings = RunSettings.from_dict(run)
    optimizer = build_optimizer(model, settings, run["lr"])
    scheduler = build_scheduler(optimizer, settings, num_batches)
    started, cpu = time.perf_counter(), cpu_seconds()
    stream = itertools.islice(epoch_batches(train, settings, epoch=0, device=DEVICE), num_batches)
    train_one_epoch(model, stream, optimizer, scheduler, device=DEVICE, running=new_running(DEVICE))
    synchronize(DEVICE)
    return time.perf_counter() - started, cpu_seconds() - cpu


def data_only(stream, num_batches: int) -> float:
    """Seconds to draw `num_batches` batches from `stream` without training on them."""
    started = time.perf_counter()
    for _ in itertools.islice(stream, num_batches):
        pass
    return time.perf_counter() - started


def notebook_epoch(loader, num_batches: int) -> tuple[float, float]:
    """(wall, CPU) seconds for `num_batches` steps the way the PyTorch CIFAR-10 tutorial writes its loop."""
    net = SimpleCNN().to(DEVICE)
    criterion = nn.NLLLoss()  # the lab's model ends in log-softmax
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    running_loss = 0.0
    started, cpu = time.perf_counter(), cpu_seconds()
    batches = iter(loader)  # workers start here, every epoch
    for i, (inputs, labels) in enumerate(batches):
        if i == num_batches:
            break
        inputs, labels = inputs.to(DEVICE), labels.to(DEVICE)
        optimizer.zero_grad()
        loss = criterion(net(inputs), labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    wall = time.perf_counter() - started
    del batches  # joins the workers, so that their CPU time is counted
    return wall, cpu_seconds() - cpu


def cmd_epoch(args) -> dict:
    import torchvision
    import torchvision.transforms as T
    from torch.utils.data import DataLoader

    train, _ = load_data(args.data)
    train = to_device(train, DEVICE)  # once, as train_run does: the images then stay on a GPU
    run = lab_runs()["simple_cnn-sgd"]  # simple_cnn, sgd lr 0.001 momentum 0.9, batch 32
    transform = T.Compose([T.ToTensor(), T.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    started = time.perf_counter()
    folder = torchvision.datasets.ImageFolder(str(args.images / "train"), transform=transform)
    scan = time.perf_counter() - started
    if len(folder) != len(train["labels"]):
        sys.exit(f"error: {args.images}/train has {len(folder)} images, train.pt {len(train['labels'])}")
    loaders = {
        f"notebook, num_workers={w}": DataLoader(folder, batch_size=32, shuffle=True, num_workers=w)
        for w in args.workers
    }
    times: dict[str, list[float]] = {"ours": [], **{k: [] for k in loaders}}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    for repeat in range(args.repeats):  # alternate, so that both see the same background load
        for name in times:
            wall, used = (
                ours_epoch(train, run, args.batches)
                if name == "ours"
                else notebook_epoch(loaders[name], args.batches)
            )
            times[name].append(wall)
            cpu[name].append(used)
        print(
            f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True
        )
    # Where the time goes: the data path alone, without the model (the step itself is the same).
    data_seconds = {
        "ours": data_only(
            epoch_batches(train, RunSettings.from_dict(run), epoch=0, device=DEVICE), args.batches
        )
    }
    data_seconds.update({name: data_only(iter(loader), args.batches) for name, loader in loaders.items()})
    full = -(-len(train["labels"]) // 32)  # batches in a full epoch
    median = {k: statistics.median(v) for k, v in times.items()}
    median_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print(
        f"\n{args.batches} batches of 32 (a full epoch is {full}), median of {args.repeats}, "
        f"torch threads {torch.get_num_threads()}; ImageFolder scan {scan:.1f} s (once)"
    )
    print(
        "| data path | wall s | est. full epoch (s) | images/s | ours / this (wall) "
        "| CPU s | ours / this (CPU) | data alone, wall s | ours / this (data alone) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, seconds in median.items():
        print(
            f"| {name} | {seconds:.2f} | {seconds * full / args.batches:.1f} | "
            f"{args.batches * 32 / seconds:.0f} | {median['ours'] / seconds:.2f} | "
            f"{median_cpu[name]:.2f} | {median_cpu['ours'] / median_cpu[name]:.2f} | "
            f"{data_seconds[name]:.2f} | {data_seconds['ours'] / data_seconds[name]:.3f} |"
        )
    return {
        "batches": args.batches,
        "full_epoch_batches": full,
        "times": times,
        "median": median,
        "cpu": cpu,
        "data_only_seconds": data_seconds,
        "imagefolder_scan_seconds": scan,
        "threads": torch.get_num_threads(),
    }


# --- frozen: cached features vs the backbone every epoch ---------------------------------


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds now; CPU time is the fairer measure on a machine shared with other jobs."""
    return time.perf_counter(), time.process_time()


def since(then: tuple[float, float]) -> tuple[float, float]:
    now = clock()
    return now[0] - then[0], now[1] - then[1]


def cmd_frozen(args) -> dict:
    train, test = load_data(args.data)
    train, test = take(train, args.train_subset), take(test, args.test_subset)
    sizes = {"image_size": args.size, "epochs": 10, "train_subset": None, "test_subset": None}
    run = {**lab_runs()["vgg16"], **sizes}

    started = clock()
    backbone = build_model(run, len(train["classes"]))
    build = since(started)  # VGG16's 138 M parameters take seconds to initialise; both paths pay it
    features = {
        split: {
            "features": compute_features(backbone, data, image_size=args.size, device=DEVICE),
            "labels": data["labels"],
        }
        for split, data in (("train", train), ("test", test))
    }
    features_time = since(started)
    result = train_run(run, train, test, device=DEVICE, lr=run["lr"], cached_features=features)
    cached = since(started)
    cached_accuracy = result["history"][-1]["test_accuracy"]

    partial = {**run, "epochs": args.measured_epochs}
    started = clock()
    train_run(partial, train, test, device=DEVICE, lr=run["lr"])
    measured = since(started)
    # One model build, then ten epochs of (train pass + test pass) through the backbone.
    scale = run["epochs"] / args.measured_epochs
    uncached = tuple(b + (m - b) * scale for m, b in zip(measured, build, strict=True))

    print(
        f"\nfrozen vgg16 (random init), {args.size} px, {len(train['labels'])} train / "
        f"{len(test['labels'])} test images, batch {run['batch_size']}, 10 epochs with a test pass each; "
        f"model build {build[0]:.1f} s wall, {build[1]:.1f} s CPU"
    )
    print("| path | wall s, 10 epochs | CPU s, 10 epochs | speed-up (wall) | speed-up (CPU) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(
        f"| backbone every batch ({args.measured_epochs} epoch(s) measured: {measured[0]:.1f} s wall, "
        f"{measured[1]:.1f} s CPU; build + epochs x {scale:g}) | {uncached[0]:.1f} | {uncached[1]:.1f} "
        "| 1.0 | 1.0 |"
    )
    print(
        f"| cached features (of which features {features_time[0]:.1f} s wall) | {cached[0]:.1f} | "
        f"{cached[1]:.1f} | {uncached[0] / cached[0]:.1f} | {uncached[1] / cached[1]:.1f} |"
    )
    return {
        "size": args.size, "train": len(train["labels"]), "test": len(test["labels"]), "build": build,
        "cached": cached, "features": features_time, "cached_test_accuracy": cached_accuracy,
        "uncached_measured": measured, "uncached_measured_epochs": args.measured_epochs,
        "uncached_10_epochs": uncached, "speedup_wall": uncached[0] / cached[0],
        "speedup_cpu": uncached[1] / cached[1],
    }  # fmt: skip


# --- recipe: time to the notebook's accuracy ---------------------------------------------


def cmd_recipe(args) -> dict:
    train, test = load_data(args.data)
    base = lab_runs()[args.run]
    base["lr"] = args.lr if args.lr is not None else base["lr"]
    if base["lr"] == "auto":
        sys.exit(f"error: run {args.run} has lr: auto; give the lr with --lr (e.g. the LR finder's)")
    if args.augment is not None:
        base["augment"] = args.augment
    for setting in args.set:  # e.g. train_subset=10000, batch_size=256
        key, _, value = setting.partition("=")
        base[key] = load_yaml("--set", text=value)
    notebook_seconds = 10 * args.notebook_epoch
    rows = []
    for epochs in args.epochs:
        run = {**base, "epochs": epochs}
        started = clock()
        result = train_run(run, train, test, device=DEVICE, lr=base["lr"], precision=args.precision)
        wall, cpu = since(started)  # with a test pass per epoch: counts against the recipe
        seconds = sum(row["seconds"] for row in result["history"])  # training only, as the notebook's
        accuracy = result["history"][-1]["test_accuracy"]
        rows.append(
            {"epochs": epochs, "train_seconds": seconds, "wall": wall, "cpu": cpu, "test_accuracy": accuracy,
             "history": [round(r["test_accuracy"], 2) for r in result["history"]]}
        )  # fmt: skip
        print(f"recipe {epochs} epochs: {accuracy:.2f} % in {seconds:.1f} s ({cpu:.1f} s CPU)", flush=True)
    print(
        f"\n{args.run} ({base['model']}, batch {base['batch_size']}, {base['schedule']} lr {base['lr']}, "
        f"{base['augment']}, wd {base['weight_decay']}, {args.precision}) vs the notebook: "
        f"{args.target:.2f} % after 10 "
        f"epochs of {args.notebook_epoch:.1f} s = {notebook_seconds:.0f} s"
    )
    print("| recipe epochs | test accuracy (%) | training seconds | reaches target | notebook time / this |")
    print("| ---: | ---: | ---: | --- | ---: |")
    for row in rows:
        print(
            f"| {row['epochs']} | {row['test_accuracy']:.2f} | {row['train_seconds']:.1f} | "
            f"{'yes' if row['test_accuracy'] >= args.target else 'no'} | "
            f"{notebook_seconds / row['train_seconds']:.1f} |"
        )
    return {
        "run": args.run, "settings": base, "target": args.target,
        "notebook_epoch_seconds": args.notebook_epoch, "lr": base["lr"], "precision": args.precision,
        "rows": rows,
    }  # fmt: skip


# --- vit: the lab's settings vs our recipe -----------------------------------------------


def cmd_vit(args) -> dict:
    train, test = load_data(args.data)
    runs = lab_runs()
    sizes = {
        "patch_size": args.patch,
        "dim": args.dim,
        "depth": args.depth,
        "heads": args.heads,
        "mlp_dim": 2 * args.dim,
        "dropout": 0.1,
        "emb_dropout": 0.1,
    }
    common = {
        "epochs": args.epochs,
        "train_subset": args.train_subset,
        "test_subset": args.test_subset,
        "vit": sizes,
    }
    rows = {}
    for name in args.runs:
        run = {**runs[name], **common}
        if name == "vit_recipe":
            run["warmup_epochs"] = max(1, round(args.epochs / 10))  # the config's 2 of 20
        result = train_run(run, train, test, device=DEVICE, lr=run["lr"])
        history = result["history"]
        rows[name] = {
            "test_accuracy": [round(r["test_accuracy"], 2) for r in history],
            "train_accuracy": [round(r["train_accuracy"], 2) for r in history],
            "seconds": sum(r["seconds"] for r in history),
            "settings": {
                k: run[k]
                for k in (
                    "optimizer",
                    "lr",
                    "batch_size",
                    "schedule",
                    "warmup_epochs",
                    "weight_decay",
                    "label_smoothing",
                    "augment",
                )
            },
        }
        print(f"{name}: test accuracy by epoch {rows[name]['test_accuracy']}", flush=True)
    print(
        f"\nViT ({', '.join(f'{k} {v}' for k, v in sizes.items())}), "
        f"{args.train_subset} train / {args.test_subset} test images, {args.epochs} epochs"
    )
    print("| run | settings | final test acc (%) | best (%) | final train acc (%) | seconds |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, row in rows.items():
        s = row["settings"]
        text = f"{s['optimizer']} lr {s['lr']:g}, batch {s['batch_size']}, {s['schedule']}"
        if name == "vit_recipe":
            text += f" (warmup {s['warmup_epochs']}), wd {s['weight_decay']}"
            text += f", ls {s['label_smoothing']}, {s['augment']}"
        print(
            f"| {name} | {text} | {row['test_accuracy'][-1]:.2f} | {max(row['test_accuracy']):.2f} | "
            f"{row['train_accuracy'][-1]:.2f} | {row['seconds']:.0f} |"
        )
    return {"sizes": sizes, **common, "rows": rows}


def cmd_seeds(args) -> dict:
    train, test = load_data(args.data)
    runs = lab_runs()
    if args.run not in runs:
        sys.exit(f"error: no run {args.run!r} in config/config.yaml; runs: {', '.join(sorted(runs))}")
    rows = {}
    for seed in args.seeds:
        run = {**runs[args.run], "seed": seed}
        history = train_run(run, train, test, device=DEVICE, lr=float(run["lr"]))["history"]
        rows[seed] = [round(r["test_accuracy"], 2) for r in history]
        print(f"{args.run} seed {seed}: test accuracy by epoch {rows[seed]}", flush=True)
    finals = [accuracies[-1] for accuracies in rows.values()]
    print("\n| run | seeds | final test accuracy (%) | mean |\n| --- | --- | --- | ---: |")
    print(
        f"| {args.run} | {', '.join(map(str, rows))} | {', '.join(f'{a:.2f}' for a in finals)} | "
        f"{statistics.mean(finals):.2f} |"
    )
    return {"run": args.run, "test_accuracy_by_seed": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--device", default="cpu", help="cpu | cuda | mps | auto (CPU seconds mean little on a GPU)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("/tmp/cifarlab-bench"), help="folder for <command>.json"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name)
        p.add_argument("--data", type=Path, required=True, help="folder with the prepared train.pt, test.pt")
        return p

    p = command("epoch")
    p.add_argument(
        "--images", type=Path, required=True, help="the extracted image folder (train/<class>/*.jpg)"
    )
    p.add_argument("--batches", type=int, default=400, help="batches of 32 per timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[2, 0], help="DataLoader num_workers to try")
    p = command("frozen")
    p.add_argument("--size", type=int, default=32, help="input size (px)")
    p.add_argument("--train-subset", type=int, default=1000)
    p.add_argument("--test-subset", type=int, default=250)
    p.add_argument("--measured-epochs", type=int, default=1, help="uncached epochs actually run")
    p = command("recipe")
    p.add_argument("--target", type=float, required=True, help="the notebook's 10-epoch test accuracy (%%)")
    p.add_argument("--notebook-epoch", type=float, required=True, help="seconds of one notebook epoch")
    p.add_argument("--run", default="simple_cnn_recipe", help="a run of config/config.yaml (e.g. airbench)")
    p.add_argument("--lr", type=float, default=None, help="default: the run's lr (a number)")
    p.add_argument("--set", nargs="*", default=[], help="setting=value overrides, e.g. train_subset=10000")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--epochs", type=int, nargs="+", default=[3, 5])
    p.add_argument("--augment", choices=["none", "crop_flip"], help="default: the config's simple_cnn_recipe")
    p = command("vit")
    p.add_argument("--train-subset", type=int, default=5000)
    p.add_argument("--test-subset", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--patch", type=int, default=4, help="patch size (px)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument(
        "--runs", nargs="+", choices=["vit", "vit_recipe"], default=["vit", "vit_recipe"],
        help="which to train (one per process runs them side by side on two cores)",
    )  # fmt: skip
    p.add_argument("--outfile", default="vit.json", help="file name under --out")
    p = command("seeds")
    p.add_argument("--run", required=True, help="a run of config/config.yaml, e.g. simple_cnn-sgd")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = pick_device(args.device)
    result = {
        "cmd_epoch": cmd_epoch,
        "cmd_frozen": cmd_frozen,
        "cmd_recipe": cmd_recipe,
        "cmd_vit": cmd_vit,
        "cmd_seeds": cmd_seeds,
    }[f"cmd_{args.command}"](args)
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.outfile if args.command == "vit" else f"{args.command}.json"
    (args.out / name).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
