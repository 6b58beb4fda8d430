"""cifarlab: the CIFAR-10 course lab as a reproducible, fast, Snakemake-driven study.

One module per concern: config, data, synthetic, models, train, evaluate, lr_finder,
saliency, plotting, report. `scripts/` holds the thin Snakemake entry points.
"""

import os

# OpenMP threads that spin while waiting cost 10x on a busy 2-core machine (measured: simple CNN
# 110 -> 1,420 images/s with 2 threads under load). This must be set before torch is imported,
# and every entry point imports cifarlab first. An explicit setting by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
