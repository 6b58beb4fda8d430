# Every figure is its own target, drawn from results by a cheap local job, so that a change of
# plotting style reruns plotting only. One rule per entry of cifarlab.plots.figures.FIGURES (its
# target, inputs, log, report() category, labels and caption), each figure one file per dataset
# (and per run, or seed); the entry's options are the rule's `params`, so changing one reruns
# that figure (and the page) only. Styles live in cifarlab/plots/style.py. Adding a figure:
# docs/extending.md.

from cifarlab.plots.figures import (
    FIGURES,
    figure_inputs,
    figure_params,
    report_labels,
)

# The runs each kind of figure may show (cifarlab.plots.figures.RUN_SETS).
RUN_SETS = {
    "all": list(RUNS),
    "lr_finder": STUDY.lr_finder_runs,
    "saliency": STUDY.saliency_runs,
}


def figure_labels(figure):
    """The figure's labels in Snakemake's report; a per-run figure's from its run's settings."""
    if figure.per_run:
        return lambda wildcards: report_labels(
            figure, RUNS[wildcards.run], dict(wildcards.items())
        )
    return lambda wildcards: report_labels(figure, None, dict(wildcards.items()))


def plot_inputs(figure):
    """The figure's files to read: its own run's (a per-run figure), or its dataset's runs'."""
    if figure.per_run:
        return lambda wildcards: {
            key: paths.fill(pattern, **dict(wildcards.items()))
            for key, pattern in figure.inputs.items()
        }
    return lambda wildcards: figure_inputs(
        figure,
        RUNS,
        STUDY.figure_runs[figure.name][wildcards.dataset],
        wildcards.dataset,
    )


def plot_params(figure):
    """The figure's options (its entry's `params`) and, for a sweep figure, its dataset's groups."""
    params = dict(figure.params)
    if figure.sweep is not None:
        params["groups"] = lambda wildcards: figure_params(
            figure, RUNS, RUN_SETS, wildcards.dataset
        )["groups"]
    return params


for figure in FIGURES:

    rule:
        name:
            figure.rule
        input:
            unpack(plot_inputs(figure)),
        output:
            report(
                figure.target,
                category=figure.category,
                caption=f"../../{figure.caption}",
                labels=figure_labels(figure),
            ),
        log:
            figure.log,
        localrule: True
        conda:
            "../../environment.yaml"
        params:
            **plot_params(figure),
            # the plot script and the module that draws this figure, by content
            code=[
                code_digest(SCRIPTS / "plot.py"),
                code_digest_of_modules([figure.module]),
            ],
        script:
            "../../scripts/plot.py"
