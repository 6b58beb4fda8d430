"""Snakemake entry point of every plot_* rule: one figure, drawn by the function of its entry in
cifarlab.figures.FIGURES from the rule's inputs and params (the figure's options)."""

from cifarlab.figures import figure_of_rule
from cifarlab.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    figure = figure_of_rule(snakemake.rule)  # noqa: F821
    # A per-run figure reads one file per input, a per-study figure a list (one per run).
    inputs = {
        name: str(paths) if figure.per_run else list(paths)
        for name, paths in snakemake.input.items()  # noqa: F821
    }
    figure.function()(**inputs, **dict(snakemake.params.items()), out_png=snakemake.output[0])  # noqa: F821
