# Every figure is its own target, drawn from results by a cheap local job, so that a change of
# plotting style reruns plotting only. One rule per entry of cifarlab.figures.FIGURES (its
# target, inputs, log, report() category, labels and caption); the entry's options are the
# rule's `params`, so changing one reruns that figure (and the page) only. Styles live in
# cifarlab/plotting.py. Adding a figure: docs/extending.md.

from cifarlab.figures import (
    FIGURES,
    figure_inputs,
    figure_params,
    figure_runs,
    report_labels,
)

# The runs each kind of figure may show (cifarlab.figures.RUN_SETS).
RUN_SETS = {"all": list(RUNS), "lr_finder": LR_FINDER_RUNS, "saliency": SALIENCY_RUNS}
# figure name -> the runs it shows (a sweep figure: the runs of that sweep)
FIGURE_RUNS = {figure.name: figure_runs(figure, RUNS, RUN_SETS) for figure in FIGURES}


def figure_labels(figure):
    """The figure's labels in Snakemake's report; a per-run figure's from its run's settings."""
    if figure.per_run:
        return lambda wildcards: report_labels(figure, RUNS[wildcards.run])
    return report_labels(figure)


for figure in FIGURES:

    rule:
        name:
            figure.rule
        input:
            **figure_inputs(figure, FIGURE_RUNS[figure.name]),
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
            **figure_params(figure, RUNS, RUN_SETS),
            # the plot script and the module that draws this figure, by content
            code=[
                code_digest(SCRIPTS / "plot.py"),
                code_digest_of_modules([figure.module]),
            ],
        script:
            "../../scripts/plot.py"
