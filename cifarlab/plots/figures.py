"""Every figure of the study, in one table: what it reads, what draws it, its caption, where it shows.

FIGURES drives all of a figure's life:
- the plot rules: `workflow/rules/plots.smk` defines one rule per entry (`plot_<name>`, a local
  job), its inputs, its `params` (the figure's options: changing one reruns that figure only), its
  log and its `report()` category, labels and caption for `snakemake --report`;
- the drawing: `scripts/plot.py` looks the rule's entry up and calls its function;
- the page: `workflow/rules/report.smk` gives the report rule every figure the study has, and
  `cifarlab.report.page` shows them in the table's order, with the same caption text.

Adding a figure is one entry here, one function that draws it, and its caption file
(docs/extending.md, "A new figure").

No torch, numpy or matplotlib here: the .smk files import this module. The drawing functions are
named as "module:function" strings and imported only when a figure is drawn.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarlab.core import paths

# Which runs a figure shows: every run, or those of the LR finder or saliency (the config's
# `lr_finder.runs` and `saliency.runs`, and runs with `lr: auto`; cifarlab.config.validate).
RUN_SETS = ("all", "lr_finder", "saliency")
# The page's sections that show per-study figures, in page order (per-run figures are shown in
# each run's folded block at the end).
SECTIONS = ("comparison", "lr_finder", "saliency")


@dataclass(frozen=True)
class Figure:
    """One figure (a PNG) and everything the workflow and the page know about it.

    name: its rule is `plot_<name>`; the page's key of the figure.
    target: the file, under the dataset's figures (`{dataset}`: one file per dataset); a per-run
        figure's path has `{run}` in it (one file and one job per dataset and run), a per-seed
        one also `{seed}` (one per trained model).
    draw: "module:function" that draws it, called as function(**inputs, **params, out_png=file).
    inputs: keyword of the function -> path pattern of cifarlab.core.paths. A per-run figure gets the
        path of its own (dataset, run[, seed]); a per-study figure gets a list: the pattern for
        each of its runs on its dataset, and each seed where the pattern has `{seed}`.
    caption: its caption, an .rst file (project-relative): the `snakemake --report` caption
        (Jinja: `{{ snakemake.wildcards.run }}` is the run) and, for per-study figures, the page's.
    title: a few words: the "figure" label in Snakemake's report and the page's per-run caption.
    category: the category of Snakemake's report.
    runs: which runs it shows, one of RUN_SETS. A per-study figure without such runs is left off
        the page (its rule stays: asking for it says what the study lacks).
    sweep: a setting: the figure compares the runs whose config `sweep` varies it, and gets them
        as the param `groups` (label -> run names; `sweep_groups`).
    params: the figure's options, passed to the function (the rule's params).
    section: the page section of a per-study figure, one of SECTIONS.
    labels: more labels of a per-study figure in Snakemake's report (per-run figures are
        labelled by their run's settings).
    """

    name: str
    target: str
    draw: str
    inputs: Mapping[str, str]
    caption: str
    title: str
    category: str
    runs: str = "all"
    sweep: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    section: str = "comparison"
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not re.fullmatch(re.escape(paths.FIGURES) + r"/.+\.png", self.target):
            problems.append(f"target {self.target!r} is not {paths.FIGURES}/....png")
        if "{seed}" in self.target and "{run}" not in self.target:
            problems.append(f"target {self.target!r} has {{seed}} without {{run}}")
        if self.draw.count(":") != 1:
            problems.append(f"draw {self.draw!r} is not 'module:function'")
        if self.runs not in RUN_SETS:
            problems.append(f"runs {self.runs!r} is not one of {list(RUN_SETS)}")
        if self.section not in SECTIONS:
            problems.append(f"section {self.section!r} is not one of {list(SECTIONS)}")
        if not self.caption.endswith(".rst"):
            problems.append(f"caption {self.caption!r} is not an .rst file")
        keywords = [*self.inputs, *self.params, *(["groups"] * (self.sweep is not None)), "out_png"]
        if len(set(keywords)) != len(keywords):
            problems.append(f"the function's keywords {keywords} (inputs, params, groups, out_png) repeat")
        if problems:
            raise ValueError(f"figure {self.name!r}: " + "; ".join(problems))

    @property
    def rule(self) -> str:
        return f"plot_{self.name}"

    @property
    def per_run(self) -> bool:
        return "{run}" in self.target

    @property
    def per_seed(self) -> bool:
        return "{seed}" in self.target

    @property
    def log(self) -> str:
        """logs/plots/<the target's path under results/figures/>.log"""
        return "logs/plots/" + self.target.removeprefix("results/figures/").removesuffix(".png") + ".log"

    def path(self, **wildcards: Any) -> str:
        """The file of this figure for the wildcards it has (dataset, and run and seed)."""
        return paths.fill(self.target, **wildcards)

    def fields_of(self, path: str | Path) -> dict[str, str]:
        """The wildcards of one of this figure's files (the inverse of `path`): "dataset", and
        "run" and "seed" (a string) where the target has them."""
        try:
            return paths.wildcards_of(self.target, str(path))
        except ValueError:
            raise ValueError(f"{path} is not a file of the figure {self.name!r} ({self.target})") from None

    @property
    def module(self) -> str:
        """The module of the drawing function (not imported)."""
        return self.draw.split(":")[0]

    def function(self) -> Callable[..., None]:
        """The drawing function, imported now (it may need matplotlib and torch)."""
        return getattr(importlib.import_module(self.module), self.draw.split(":")[1])


METRICS = paths.METRICS
HISTORY = paths.HISTORY
COMPARISON = paths.FIGURES + "/report"

# In page order: per-study figures within their section, per-run ones within each run's block.
FIGURES = (
    Figure(
        name="accuracy_vs_params",
        target=f"{COMPARISON}/accuracy_vs_params.png",
        draw="cifarlab.plots.accuracy_scatter:plot_accuracy_scatter",
        inputs={"metrics_paths": METRICS},
        params={"x": "params_total"},
        caption="workflow/report/accuracy_vs_params.rst",
        title="accuracy vs parameters",
        category="Comparison",
    ),
    Figure(
        name="accuracy_vs_time",
        target=f"{COMPARISON}/accuracy_vs_time.png",
        draw="cifarlab.plots.accuracy_scatter:plot_accuracy_scatter",
        inputs={"metrics_paths": METRICS},
        params={"x": "train_seconds"},
        caption="workflow/report/accuracy_vs_time.rst",
        title="accuracy vs training time",
        category="Comparison",
    ),
    Figure(
        name="dropout_sweep",
        target=f"{COMPARISON}/dropout_sweep.png",
        draw="cifarlab.plots.dropout_sweep:plot_dropout_sweep",
        inputs={"metrics_paths": METRICS},
        sweep="dropout",
        caption="workflow/report/dropout_sweep.rst",
        title="dropout sweep",
        category="Comparison",
    ),
    Figure(
        name="optimizers",
        target=f"{COMPARISON}/optimizers.png",
        draw="cifarlab.plots.optimizers:plot_optimizers",
        inputs={"metrics_paths": METRICS, "history_paths": HISTORY},
        sweep="optimizer",
        caption="workflow/report/optimizers.rst",
        title="optimizers",
        category="Comparison",
    ),
    Figure(
        name="learning_curves",
        target=f"{COMPARISON}/learning_curves.png",
        draw="cifarlab.plots.learning_curves:plot_learning_curves",
        inputs={"metrics_paths": METRICS, "history_paths": HISTORY},
        caption="workflow/report/learning_curves.rst",
        title="learning curves, all runs",
        category="Comparison",
    ),
    Figure(
        name="lr_finder_comparison",
        target=f"{COMPARISON}/lr_finder.png",
        draw="cifarlab.plots.lr_finder_comparison:plot_lr_finder_comparison",
        inputs={"result_paths": paths.LR_FINDER},
        runs="lr_finder",
        section="lr_finder",
        caption="workflow/report/lr_finder_comparison.rst",
        title="LR range tests",
        category="Comparison",
    ),
    Figure(
        name="saliency_comparison",
        target=paths.FIGURES + "/saliency/comparison.png",
        draw="cifarlab.plots.saliency_comparison:plot_saliency_comparison",
        inputs={"maps_pts": paths.SALIENCY_MAPS, "result_jsons": paths.SALIENCY_RESULT},
        runs="saliency",
        section="saliency",
        caption="workflow/report/saliency_comparison.rst",
        title="saliency across models",
        category="Saliency",
        labels={"run": "all"},
    ),
    Figure(
        name="curves",
        target=paths.FIGURES + "/curves/{run}/seed{seed}.png",
        draw="cifarlab.plots.curves:plot_curves",
        inputs={"history_csv": HISTORY, "metrics_json": METRICS},
        caption="workflow/report/curves.rst",
        title="learning curves",
        category="Learning curves",
    ),
    Figure(
        name="confusion",
        target=paths.FIGURES + "/confusion/{run}/seed{seed}.png",
        draw="cifarlab.plots.confusion:plot_confusion",
        inputs={"metrics_json": METRICS},
        caption="workflow/report/confusion.rst",
        title="confusion matrix",
        category="Confusion matrices",
    ),
    Figure(
        name="lr_finder",
        target=paths.FIGURES + "/lr_finder/{run}.png",
        draw="cifarlab.plots.lr_finder:plot_lr_finder",
        inputs={"result_json": paths.LR_FINDER},
        runs="lr_finder",
        caption="workflow/report/lr_finder.rst",
        title="LR range test",
        category="LR finder",
    ),
    Figure(
        name="saliency",
        target=paths.FIGURES + "/saliency/{run}.png",
        draw="cifarlab.plots.saliency:plot_saliency",
        inputs={"maps_pt": paths.SALIENCY_MAPS, "result_json": paths.SALIENCY_RESULT},
        runs="saliency",
        caption="workflow/report/saliency.rst",
        title="saliency maps",
        category="Saliency",
    ),
)


def figure_named(name: str) -> Figure:
    for figure in FIGURES:
        if figure.name == name:
            return figure
    raise KeyError(
        f"no figure {name!r} in cifarlab.plots.figures.FIGURES; there are {[f.name for f in FIGURES]}"
    )


def figure_of_rule(rule: str) -> Figure:
    """The entry whose rule is `rule` (scripts/plot.py's dispatch)."""
    for figure in FIGURES:
        if figure.rule == rule:
            return figure
    raise KeyError(f"no figure has the rule {rule!r}; the plot rules are {[f.rule for f in FIGURES]}")


# --- which runs a figure shows ---------------------------------------------------------------


def sweep_groups(runs: Mapping[str, dict], setting: str) -> dict[str, list[str]]:
    """Runs whose config `sweep` varies `setting`, grouped: label -> run names in config order.

    Runs of one entry that differ in another swept setting (an optimizer x lr grid) form
    separate groups, labelled `entry (lr 0.01)`, so that each line varies `setting` only.
    """
    groups: dict[str, list[str]] = {}
    for name, run in runs.items():
        sweep = run.get("sweep") or {}
        if setting not in sweep:
            continue
        others = ", ".join(f"{k} {v}" for k, v in sweep.items() if k != setting)
        groups.setdefault(run["entry"] + (f" ({others})" if others else ""), []).append(name)
    return groups


def _candidates(
    figure: Figure, runs: Mapping[str, dict], run_sets: Mapping[str, Sequence[str]], dataset: str
) -> dict:
    if figure.runs not in run_sets:
        raise KeyError(
            f"figure {figure.name!r} shows the runs {figure.runs!r}; run_sets has {list(run_sets)}"
        )
    return {name: runs[name] for name in run_sets[figure.runs] if dataset in runs[name]["datasets"]}


def figure_runs(
    figure: Figure, runs: Mapping[str, dict], run_sets: Mapping[str, Sequence[str]], dataset: str
) -> list[str]:
    """The runs a figure of `dataset` shows, in the order it reads them.

    runs: the expanded runs (name -> settings, config order: cifarlab.config.validate.expand_runs, each
    with its `datasets` and `seeds`); run_sets: each of RUN_SETS -> run names. A sweep figure
    shows the runs of its sweep groups, group by group.
    """
    candidates = _candidates(figure, runs, run_sets, dataset)
    if figure.sweep is None:
        return list(candidates)
    return [name for names in sweep_groups(candidates, figure.sweep).values() for name in names]


def _files(pattern: str, runs: Mapping[str, dict], names: Sequence[str], dataset: str) -> list[str]:
    """`pattern` for each run of `names` on `dataset`, and each of its seeds where it has {seed}."""
    return paths.fill_each(
        pattern,
        [{"dataset": dataset, "run": n, "seed": seed} for n in names for seed in runs[n]["seeds"]],
    )


def figure_inputs(
    figure: Figure, runs: Mapping[str, dict], names: Sequence[str], dataset: str
) -> dict[str, str | list[str]]:
    """The inputs of the figure of `dataset`: the patterns of a per-run figure (its wildcards fill
    them), or each pattern for every run in `names` (and seed)."""
    if figure.per_run:
        return dict(figure.inputs)
    return {key: _files(pattern, runs, names, dataset) for key, pattern in figure.inputs.items()}


def figure_params(
    figure: Figure, runs: Mapping[str, dict], run_sets: Mapping[str, Sequence[str]], dataset: str
) -> dict[str, Any]:
    """The params of the figure of `dataset`: its options and, for a sweep figure, its `groups`."""
    params = dict(figure.params)
    if figure.sweep is not None:
        params["groups"] = sweep_groups(_candidates(figure, runs, run_sets, dataset), figure.sweep)
    return params


def figure_files(figure: Figure, runs: Mapping[str, dict], names: Sequence[str], dataset: str) -> list[str]:
    """What the page reads of the figure of `dataset` that shows the runs `names`: a per-run
    figure's file of each run (and seed), or a per-study figure's one file."""
    if figure.per_run:
        return _files(figure.target, runs, names, dataset)
    return [figure.path(dataset=dataset)]


def report_labels(
    figure: Figure, run: dict | None = None, wildcards: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Labels (table columns) in Snakemake's report: the dataset (and seed) of the figure's file,
    the run, model, dropout and optimizer of a per-run figure's `run` (its settings); a per-study
    figure's `labels`; and the figure's title."""
    where = {k: str(v) for k, v in (wildcards or {}).items() if k in ("dataset", "seed")}
    if figure.per_run:
        if run is None:
            raise ValueError(f"figure {figure.name!r} is per run: give the run's settings")
        return {
            **where,
            "run": run["name"],
            "model": run["model"],
            "dropout": f"{run['dropout']:g}",
            "optimizer": run["optimizer"],
            "figure": figure.title,
        }
    return {**where, **figure.labels, "figure": figure.title}


def caption_text(path: str | Path) -> str:
    """A caption file's text on one line (its reStructuredText markup left in: `cifarlab.report.page`
    renders ``code`` and **bold**)."""
    return " ".join(Path(path).read_text().split())
