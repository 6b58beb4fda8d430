"""cifarlab: the CIFAR-10 course lab as a reproducible, fast, Snakemake-driven study.

One module per concern: config, data, synthetic, models, train, evaluate, lr_finder,
saliency, plotting, report. `scripts/` holds the thin Snakemake entry points.
"""

__version__ = "0.1.0"
