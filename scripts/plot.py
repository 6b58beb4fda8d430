"""Snakemake entry point of every plot_* rule: one figure from results, drawn by its module."""

from cifarlab.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    rule = snakemake.rule  # noqa: F821
    inputs, output = snakemake.input, snakemake.output[0]  # noqa: F821
    if rule == "plot_curves":
        from cifarlab.evaluate import plot_curves

        plot_curves(inputs.history, inputs.metrics, output)
    elif rule == "plot_confusion":
        from cifarlab.evaluate import plot_confusion

        plot_confusion(inputs.metrics, output)
    elif rule == "plot_lr_finder":
        from cifarlab.lr_finder import plot_lr_finder

        plot_lr_finder(inputs.result, output)
    elif rule == "plot_saliency":
        from cifarlab.saliency import plot_saliency

        plot_saliency(inputs.maps, inputs.result, output)
    elif rule == "plot_saliency_comparison":
        from cifarlab.saliency import plot_saliency_comparison

        plot_saliency_comparison(list(inputs.maps), list(inputs.results), output)
    else:
        raise ValueError(f"scripts/plot.py has no figure for rule {rule!r}; add it here")
