"""Snakemake entry point of every plot_* rule: one figure, drawn by the function of its entry in
cifarlab.plots.figures.FIGURES from the rule's inputs and params (the figure's options)."""

from cifarlab.core.logs import log_to
from cifarlab.plots.figures import figure_of_rule

with log_to(snakemake.log[0]):
    figure = figure_of_rule(snakemake.rule)
    # A per-run figure reads one file per input, a per-study figure a list (one per run).
    inputs = {name: str(paths) if figure.per_run else list(paths) for name, paths in snakemake.input.items()}
    # The figure's options (and a sweep's groups); other params of the rule are not the function's.
    options = [*figure.params, *(["groups"] if figure.sweep else [])]
    params = {name: snakemake.params[name] for name in options}
    figure.function()(**inputs, **params, out_png=snakemake.output[0])
