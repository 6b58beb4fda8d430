# cifarlab: the CIFAR-10 course lab as a reproducible Snakemake workflow.
#
#   snakemake --cores 4 report                               # the whole study
#   snakemake --cores 4 report --configfile config/demo.yaml  # offline, synthetic data, minutes
#   snakemake --cores 4 results/figures/cifar10/curves/vit/seed0.png  # one figure, what it needs
#
# The intended DAG is drawn in README.md ("Architecture"); rules live in workflow/rules/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


import re


# A run's name is any that the config's check lets through (cifarlab.core.paths.RUN_NAME: no path
# separator, so wildcards do not overlap; a pattern, so planning is linear in the runs). Dataset
# names are few and known in advance: matching only them.
wildcard_constraints:
    run=paths.RUN_NAME,
    dataset="|".join(
        re.escape(name) for name in sorted(DATASETS, key=len, reverse=True)
    ),
    seed=r"\d+",


include: "workflow/rules/resources.smk"
include: "workflow/rules/estimate.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/lr_finder.smk"
include: "workflow/rules/saliency.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/report.smk"


# Cheap jobs stay on the submitting machine under a cluster profile (plot rules: `localrule: True`).
localrules:
    all,
    download,
    saliency_sample,
    report,


rule all:
    default_target: True
    input:
        rules.report.output,
