# Shared by all rules: the study's plan (cifarlab.study.plan.Study: its datasets, runs, seeds, jobs
# and each rule's inputs), built once from the validated config, and the adapters from Snakemake's
# wildcards to it. Every path is a pattern of cifarlab.core.paths: a trained model is one
# (dataset, run, seed), the {dataset}, {run} and {seed} wildcards.
import platform
from pathlib import Path

from snakemake.exceptions import WorkflowError

from cifarlab.config.schema import ConfigError
from cifarlab.config.validate import apply_command_line_overrides, in_study_order
from cifarlab.core import paths
from cifarlab.core.code_version import code_digest, code_digest_of_modules
from cifarlab.data.sources import source_fingerprint
from cifarlab.models import model_source, model_spec
from cifarlab.study import time_plan
from cifarlab.study.plan import Study, file_content


def machine():
    """Whose speed the benchmark files measure: this host, or a cluster's nodes."""
    return "cluster" if workflow.non_local_exec else platform.node()


def cores():
    """Light jobs at once (one thread each): --jobs on a cluster, else --cores."""
    if workflow.non_local_exec:
        return workflow.nodes or 1
    try:
        return workflow.cores or 1
    except WorkflowError:  # no --cores given (a dry run may omit it)
        return 1


def side_by_side():
    """Heavy jobs at once: --jobs on a cluster, else --cores over the threads of one job."""
    if workflow.non_local_exec:
        return cores()
    try:
        threads = int(config["threads"])
    except (KeyError, TypeError, ValueError):  # validation names a bad `threads`
        threads = 1
    return max(1, cores() // max(1, threads))


# Validate before any job runs: a bad key stops here with a message that names it. Validation
# also writes the schema's defaults into `config` and caps it by the budget (and a
# `time_budget` by its plan, kept in .snakemake/cifarlab/plans/; a first plan on this machine
# measures the model families there, not on a cluster's nodes): read it plainly.
try:
    # --config values typed as YAML types them (Snakemake leaves those inside {...} text)
    apply_command_line_overrides(config, workflow.config_settings.config)
    # the Snakefile's configfile (beside it: --directory may be another folder)
    in_study_order(config, Path(workflow.basedir) / "config" / "config.yaml")
    STUDY, TIME_PLAN = time_plan.plan_study(
        config,
        machine=machine(),
        parallel=side_by_side(),
        cores=cores(),
        measure=workflow.is_main_process and not workflow.non_local_exec,
        main=workflow.is_main_process,
        in_use=False,  # made the plan in use when the run starts (onstart, estimate.smk)
    )
except ConfigError as error:
    raise WorkflowError(str(error)) from None

# name -> settings (source, md5, labels, image_size, ...: cifarlab.data.catalog), study order
DATASETS = STUDY.datasets
# expanded run name -> settings (with its `datasets` and `seeds`), config order
RUNS = STUDY.runs
DEVICE = config["device"]
# A local folder or archive is known by its content, not its name: when images are added,
# removed or replaced, this changes and `download` (and all that follows) reruns. Per-file
# hashes are cached by size and mtime (benchmarks/README.md: the cost on CIFAR-10).
# Only the main process decides whether `download` (a local rule) reruns: a cluster job that
# parses this file again does not hash the source again.
SOURCE_CONTENT = {
    name: (
        source_fingerprint(d["source"], paths.fill(paths.CONTENT_CACHE, dataset=name))
        if workflow.is_main_process
        else None
    )
    for name, d in DATASETS.items()
}

# Code is an input: a rule's `code` param is code_digest of its script (the script and the
# cifarlab modules it imports, by content), so editing that code reruns the rule, and only it
# and what depends on its outputs.
SCRIPTS = Path(workflow.basedir) / "scripts"


def of(method):
    """An input, param or resource function of Snakemake's wildcards from a Study method of a
    wildcards dict (values as strings)."""
    return lambda wildcards: method(dict(wildcards.items()))


job = of(STUDY.job)
backbone_params = of(STUDY.backbone_params)


def study_params(rule):
    """The params that the study decides for the jobs of `rule` (Study.rule_params, where
    benchmarks/gpu_steps.py takes them too), each method of wildcards as a param function.
    """
    return {
        name: of(value) if callable(value) else value
        for name, value in STUDY.rule_params(rule).items()
    }


def data_file(split):
    """A job's prepared split of its {dataset} (an input function)."""
    return lambda wildcards: paths.fill(
        paths.PREPARED, dataset=wildcards.dataset, split=split
    )


def model_code(wildcards):
    """The code of a run's model (its spec's constructor module, by content): a job's `model_code`
    param, beside its `code`, so that editing one model family reruns that family's runs only.
    """
    run = RUNS[wildcards.run] if "run" in wildcards.keys() else None
    model = run["model"] if run else backbone_params(wildcards)["model"]
    source = model_source(model)  # a user's own model file: its content too
    code = code_digest_of_modules([model_spec(model).module])
    return code if source is None else [code, file_content(str(source))]
