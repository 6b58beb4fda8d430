"""Snakemake entry point of every plot_* rule: one figure from results, drawn by its module."""

from cifarlab.logs import log_to

with log_to(snakemake.log[0]):
    rule = snakemake.rule
    inputs, output = snakemake.input, snakemake.output[0]
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
    elif rule in ("plot_accuracy_vs_params", "plot_accuracy_vs_time"):
        from cifarlab.report import plot_accuracy_scatter

        plot_accuracy_scatter(list(inputs.metrics), snakemake.params.x, output)
    elif rule == "plot_dropout_sweep":
        from cifarlab.report import plot_dropout_sweep

        plot_dropout_sweep(list(inputs.metrics), snakemake.params.groups, output)
    elif rule == "plot_optimizers":
        from cifarlab.report import plot_optimizers

        plot_optimizers(list(inputs.metrics), list(inputs.histories), snakemake.params.groups, output)
    elif rule == "plot_learning_curves":
        from cifarlab.report import plot_learning_curves

        plot_learning_curves(list(inputs.metrics), list(inputs.histories), output)
    elif rule == "plot_lr_finder_comparison":
        from cifarlab.report import plot_lr_finder_comparison

        plot_lr_finder_comparison(list(inputs.results), output)
    else:
        raise ValueError(f"scripts/plot.py has no figure for rule {rule!r}; add it here")
