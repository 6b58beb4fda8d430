"""The workflow's steps without Snakemake, for machines that cannot install it (benchmarks/gpu.sh).

    python benchmarks/gpu_steps.py data  --work W [--configfile F ...] [--config K=V ...]
    python benchmarks/gpu_steps.py study --work W --runs R [R ...] --out O [--configfile ...] [--config ...]
    python benchmarks/gpu_steps.py wheels | install --wheels DIR --target DIR   # benchmarks/gpu.sh
    python benchmarks/gpu_steps.py summary --out OUT     # benchmarks/gpu.sh's summary.txt and summary.json

The study is planned as Snakemake plans it (cifarlab.study.plan.Study.from_config on
config/config.yaml, the --configfile overlays and the --config overrides), and each job calls the
same function its Snakemake script calls, with the same inputs and params: `data` runs download
and prepare of every dataset of the study; `study` runs, for every seed of the named runs,
features (where a frozen head trains on cached features), train and evaluate, then writes
O/study.json and prints a table: each run's accuracy over seeds (mean, sd, 95 % interval) and a
Welch test of each run against the first. A diverged run is recorded as diverged, not an error.
Files go under W (results/, resources/, logs/ as in the workflow), not into the checkout.

Not covered (they need Snakemake's DAG, or lr: auto): the LR finder, saliency, plots, the report;
evaluate writes no model.pt2 (torch.export costs seconds of CPU per model and measures no GPU).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("gpu_steps")


def plan(args: argparse.Namespace):
    """The Study of config/config.yaml + --configfile + --config, its files relative to --work."""
    from cifarlab.study.plan import Study
    from cifarlab.study.status import load_config

    config = load_config(args.configfile, args.config, ROOT)
    # a relative data_source names a file from the checkout, as for a Snakemake call from there
    source = config.get("data_source")
    if isinstance(source, str) and source != "synthetic" and "://" not in source:
        config["data_source"] = str((ROOT / source).resolve()) if not Path(source).is_absolute() else source
    study = Study.from_config(config, ROOT)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    os.chdir(args.work)
    return study


def cmd_data(args: argparse.Namespace) -> dict:
    """download + prepare of every dataset of the study (scripts/download.py, scripts/prepare.py)."""
    from cifarlab.core import paths
    from cifarlab.data.fetch import download
    from cifarlab.data.prepare import prepare

    study = plan(args)
    prepared = {}
    for name, dataset in study.datasets.items():
        train = Path(paths.fill(paths.TRAIN_DATA, dataset=name))
        test = Path(paths.fill(paths.TEST_DATA, dataset=name))
        if not (train.exists() and test.exists()):
            archive = study.archive_file(name)
            download(
                dataset["source"],
                archive,
                study.source_record(name),
                md5=dataset["md5"],
                synthetic=dataset["synthetic"],
                image_size=dataset["image_size"],
            )
            prepare(
                archive,
                train,
                test,
                paths.fill(paths.SAMPLES, dataset=name),
                image_size=dataset["image_size"],
                source=dataset["source"],
                workers=study.config["threads"],
                labels=dataset["labels"],
            )
        prepared[name] = str(train.parent.resolve())
        print(f"{name}: {prepared[name]}", flush=True)
    return {"prepared": prepared}


def run_job(study, job: dict) -> dict:
    """features (if its head trains on cached features), train and evaluate of one job, with the
    params their rules have (cifarlab.study.plan.Study.job_params, as workflow/rules/train.smk's
    params and scripts/*.py read them); its metrics."""
    from cifarlab.config.validate import uses_cached_features
    from cifarlab.core import paths
    from cifarlab.study.plan import features_wildcards
    from cifarlab.training import evaluate, features, loop

    threads = study.config["threads"]  # a rule's `threads:` (Snakemake gives no more than --cores)
    settings, inputs = study.job(job), study.train_inputs(job)
    if uses_cached_features(settings) and not Path(inputs["cached_test"]).exists():
        params = study.job_params("features", features_wildcards(settings))
        features.main(
            train_path=inputs["train"],
            test_path=inputs["test"],
            out_train=inputs["cached_train"],
            out_test=inputs["cached_test"],
            backbone=params["backbone"],
            device=params["device"],
            threads=threads,
            precision=params["precision"],
        )
    model, history = paths.fill(paths.MODEL, **job), paths.fill(paths.HISTORY, **job)
    params = study.job_params("train", job)
    loop.main(
        train_path=inputs["train"],
        test_path=inputs["test"],
        model_path=model,
        history_path=history,
        run=params["run"],
        device=params["device"],
        checkpoint=params["checkpoint"],
        lr_suggestion=params["lr_suggestion"],
        cached_train=inputs.get("cached_train"),
        cached_test=inputs.get("cached_test"),
        threads=threads,
        precision=params["precision"],
    )
    metrics_path = paths.fill(paths.METRICS, **job)
    params = study.job_params("evaluate", job)
    evaluate.main(
        model_path=model,
        history_path=history,
        test_path=inputs["test"],
        metrics_path=metrics_path,
        dataset=job["dataset"],
        seed=int(job["seed"]),
        device=params["device"],
        cached_test=inputs.get("cached_test"),
        threads=threads,
        precision=params["precision"],
        tta=params["evaluation"]["tta"],
        time_budget=params["evaluation"].get("time_budget"),
    )
    return json.loads(Path(metrics_path).read_text())


def compare(rows: list[dict], runs: list[str]) -> list[dict]:
    """Per run: its seeds' test accuracies summarised, and a Welch test against the first run."""
    from cifarlab.analysis.stats import summarise, welch_p

    accuracy = {
        run: [r["test_accuracy"] for r in rows if r["run"] == run and r["status"] == "ok"] for run in runs
    }
    table = []
    for run in runs:
        values = accuracy[run]
        summary = summarise(values) if values else None
        p = welch_p(values, accuracy[runs[0]]) if run != runs[0] and len(values) > 1 else None
        table.append(
            {
                "run": run,
                "seeds": len(values),
                "diverged": sum(r["run"] == run and r["status"] == "diverged" for r in rows),
                "mean": summary.mean if summary else None,
                "sd": summary.sd if summary else None,
                "interval": [summary.low, summary.high] if summary and summary.low is not None else None,
                f"welch_p_vs_{runs[0]}": p,
            }
        )
    return table


def cmd_study(args: argparse.Namespace) -> dict:
    """Every seed of `--runs` through features, train and evaluate; the comparison table."""
    study = plan(args)
    unknown = [r for r in args.runs if r not in study.runs]
    if unknown:
        raise SystemExit(f"--runs {unknown}: not runs of this config; its runs: {', '.join(study.runs)}")
    rows = []
    for job in (j for j in study.jobs if j["run"] in args.runs):
        job = {k: str(v) for k, v in job.items()}
        metrics = run_job(study, job)
        rows.append(
            {
                **job,
                "status": metrics.get("status", "ok"),
                **{k: metrics.get(k) for k in ("test_accuracy", "tta_test_accuracy", "train_seconds")},
                **{k: metrics.get(k) for k in ("epochs", "device", "precision", "train_images")},
            }
        )
        print(f"{job['run']} seed {job['seed']}: {json.dumps(rows[-1])}", flush=True)
        if args.out:  # after each job: a stage stopped by its timeout keeps the jobs it finished
            partial = {"args": vars(args), "rows": rows, "table": compare(rows, args.runs), "partial": True}
            (Path(args.out) / "study.json").write_text(json.dumps(partial, indent=1))
    table = compare(rows, args.runs)
    print("| run | seeds | diverged | mean % | sd | 95 % interval | Welch p vs first |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for t in table:
        cells = [t["run"], t["seeds"], t["diverged"], _num(t["mean"]), _num(t["sd"])]
        cells += ["-" if not t["interval"] else f"{t['interval'][0]:.2f}-{t['interval'][1]:.2f}"]
        cells += [_num(t[f"welch_p_vs_{args.runs[0]}"], 3)]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    return {"rows": rows, "table": table}


# --- the packages the GPU machine lacks (standard library only) -----------------------------------

# Import name -> the distributions it needs beyond what the GPU machine holds (torch, torchvision,
# numpy, scipy, matplotlib, pyyaml, pillow, jinja2, tensorboard, safetensors), one pinned version
# each (pip --no-deps installs exactly these): keep in step with pyproject.toml.
NEEDS = {
    "jsonschema": [
        "jsonschema==4.26.0",
        "attrs==26.1.0",
        "referencing==0.37.0",
        "rpds-py==2026.9.1",
        "jsonschema-specifications==2025.9.1",
    ],  # fmt: skip
    "vit_pytorch": ["vit-pytorch==1.26.14", "einops==0.8.2"],
    "torch_optimizer": ["torch-optimizer==0.3.0", "pytorch-ranger==0.1.1"],
    "tqdm": ["tqdm==4.70.1"],
}


def cmd_wheels(args: argparse.Namespace) -> None:
    """Print every pinned requirement of NEEDS, one a line (benchmarks/gpu.sh --pack downloads them)."""
    print("\n".join(r for group in NEEDS.values() for r in group))


def cmd_install(args: argparse.Namespace) -> None:
    """Install, from the wheels in --wheels, the groups of NEEDS whose module does not import,
    into --target (the machine's Python is not changed); then check that every module imports."""
    import importlib.util
    import subprocess

    files = []
    for module, requirements in NEEDS.items():
        if importlib.util.find_spec(module) is not None:
            continue
        for requirement in requirements:
            name = requirement.partition("==")[0].replace("-", "_")
            found = sorted(Path(args.wheels).glob(f"{name}-*.whl"))
            if not found:
                raise SystemExit(
                    f"no wheel of {requirement} in {args.wheels}: run benchmarks/gpu.sh --pack here"
                )
            files.append(str(found[-1]))
    print(
        f"installing {len(files)} wheels: {' '.join(Path(f).name for f in files) or 'none needed'}",
        flush=True,
    )
    if files:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        subprocess.run([*pip, "--no-cache-dir", "--target", args.target, *files], check=True)
    # a fresh interpreter: it sees --target as the stages will (PYTHONPATH)
    check = "import " + ", ".join(NEEDS)
    subprocess.run([sys.executable, "-c", check], check=True)
    print(f"imports: {', '.join(NEEDS)}")


# --- the summary of benchmarks/gpu.sh (standard library only: it runs whatever failed) -----------

ANCHOR = "airbench94: 94.01 % in 3.83 s of training on an A100 (official data, torch.compile)"


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _epoch_seconds(history: Path) -> list[float]:
    """Seconds of each epoch of a history.csv (its `seconds` column), [] if unreadable."""
    try:
        with open(history) as f:
            return [float(row["seconds"]) for row in csv.DictReader(f)]
    except (OSError, KeyError, ValueError):
        return []


def fast_lines(out: Path) -> tuple[list[str], dict | None]:
    """The fast run's lines: per seed plain and TTA accuracy, training seconds with and without
    the first epoch (which holds the warm-up: kernel choice, allocator), and the anchor."""
    run = _json(out / "fast" / "run.json")
    if run is None:
        return ["fast run: no fast/run.json (see its stage)"], None
    lines = [
        f"fast run (airbench, {run['epochs']} epochs, {len(run['rows'])} seeds, {run['precision']}, "
        f"train_subset {run.get('train_subset')}): train s = benchmarks/fast.py's train_seconds (the "
        "loop's timing, the sum of its epochs; TTA is evaluation, not in it); 'less epoch 1' leaves "
        "out the first epoch, which holds the warm-up (kernel choice, allocator)",
        "| seed | status | plain % | TTA % | TTA - plain | train s | less epoch 1 s | images/s |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in run["rows"]:
        epochs = _epoch_seconds(out / "fast" / f"airbench-seed{row['seed']}" / "history.csv")
        plain, tta = row.get("test_accuracy"), row.get("tta_test_accuracy")
        gain = tta - plain if plain is not None and tta is not None else None
        later = sum(epochs[1:]) if len(epochs) > 1 else None
        row["seconds_less_epoch_1"] = later
        cells = [row["seed"], row.get("status", "ok"), _num(plain), _num(tta), _num(gain)]
        cells += [_num(row["train_seconds"]), _num(later), _num(row.get("images_per_second"), 0)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append(
        f"mean: TTA {_num(run.get('tta_mean'))} %, plain {_num(run.get('plain_mean'))} %, "
        f"{_num(run.get('train_seconds_mean'))} s of training; {run.get('diverged', 0)} diverged. "
        f"Anchor {ANCHOR}."
    )
    return lines, run


def study_lines(title: str, result: dict | None) -> list[str]:
    """A `study` command's per-job lines and its comparison table."""
    if result is None:
        return [f"{title}: no result (see its stage)"]
    lines = [
        f"{title}:" + (" (partial: its stage stopped before the last job)" if result.get("partial") else "")
    ]
    for r in result["rows"]:
        lines.append(
            f"  {r['run']} seed {r['seed']}: {r['status']}, {_num(r.get('test_accuracy'))} % "
            f"(TTA {_num(r.get('tta_test_accuracy'))}), {r.get('epochs')} epochs on {r.get('train_images')} "
            f"images, {_num(r.get('train_seconds'))} s of training, {r.get('device')}, {r.get('precision')}"
        )
    if len({r["seed"] for r in result["rows"]}) > 1:
        for t in result["table"]:
            p = next((v for k, v in t.items() if k.startswith("welch_p")), None)
            lines.append(
                f"  {t['run']}: {t['seeds']} seeds, mean {_num(t['mean'])} % sd {_num(t['sd'])}, "
                f"Welch p vs the first {_num(p, 3)}"
            )
    return lines


def precision_lines(precision: dict | None) -> list[str]:
    """benchmarks/fast.py precision's images/s per model, fp32 and bf16, and their ratio."""
    if precision is None:
        return ["precision: no precision/precision.json (see its stage)"]
    lines = ["precision: one training step, fp32 vs bf16 autocast + channels_last (images/s)"]
    for r in precision["rows"]:
        fp32, bf16 = r["fp32_images_per_second"], r["bf16_images_per_second"]
        lines.append(f"  {r['model']}: fp32 {fp32:.0f}, bf16 {bf16:.0f}, ratio {r['bf16_over_fp32']:.2f}")
    return lines


def cmd_summary(args: argparse.Namespace) -> dict:
    """OUT/summary.txt and OUT/summary.json from the stages' table (OUT/stages.tsv) and results."""
    out = Path(args.out)
    stages = []
    if (out / "stages.tsv").exists():
        for line in (out / "stages.tsv").read_text().splitlines():
            name, status, rc, seconds, limit = line.split("\t")
            stages.append({"stage": name, "status": status, "rc": int(rc), "seconds": int(seconds),
                           "timeout": int(limit)})  # fmt: skip
    header = (out / "machine.txt").read_text().strip() if (out / "machine.txt").exists() else "machine: ?"
    lines = [
        header,
        "",
        "| stage | status | exit | seconds | timeout s |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {s['stage']} | {s['status']} | {s['rc']} | {s['seconds']} | {s['timeout']} |" for s in stages
    ]
    fast, fast_run = fast_lines(out)
    lines += ["", *fast, ""]
    precision = _json(out / "precision" / "precision.json")
    lines += precision_lines(precision)
    lab = {d.name: _json(d / "study.json") for d in sorted((out / "lab").glob("*")) if d.is_dir()}
    for name, result in lab.items():
        lines += study_lines(f"lab run {name}", result)
    study = _json(out / "study" / "study.json")
    lines += study_lines("short study (through the steps' entry points, no Snakemake)", study)
    all_ran = bool(stages) and all(s["status"] == "ok" for s in stages)
    lines += ["", f"all stages ran: {all_ran}"]
    text = "\n".join(lines) + "\n"
    (out / "summary.txt").write_text(text)
    summary = {"machine": header, "stages": stages, "all_stages_ran": all_ran, "fast": fast_run,
               "precision": precision, "lab": lab, "study": study, "anchor": ANCHOR}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(text)
    return {}


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("wheels", help="the pinned wheels benchmarks/gpu.sh --pack downloads")
    install = sub.add_parser("install", help="the missing packages from a folder of wheels")
    install.add_argument("--wheels", required=True)
    install.add_argument("--target", required=True, help="a folder on PYTHONPATH")
    summary = sub.add_parser("summary", help="OUT/summary.txt and summary.json of benchmarks/gpu.sh")
    summary.add_argument("--out", required=True)
    for name in ("data", "study"):
        p = sub.add_parser(name)
        p.add_argument("--work", required=True, help="folder for results/, resources/, logs/")
        p.add_argument("--configfile", nargs="*", default=[], help="overlays on config/config.yaml")
        p.add_argument("--config", nargs="*", default=[], help="KEY=VALUE overrides, as for snakemake")
        p.add_argument("--out", default=None, help="folder for <command>.json")
    sub.choices["study"].add_argument("--runs", nargs="+", required=True, help="expanded run names")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    if args.command in ("summary", "wheels", "install"):  # no cifarlab imported: they run anywhere
        {"summary": cmd_summary, "wheels": cmd_wheels, "install": cmd_install}[args.command](args)
        return 0
    out = Path(args.out).resolve() if args.out else None  # before plan() changes the folder
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        args.out = str(out)
    result = {"data": cmd_data, "study": cmd_study}[args.command](args)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.command}.json").write_text(json.dumps({"args": vars(args), **result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
