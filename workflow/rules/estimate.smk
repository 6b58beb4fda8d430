# The estimate printed before the work: how long the jobs Snakemake plans should take here.
#
# Snakemake logs its table of planned jobs (a RUN_INFO event) once the DAG is built, in a dry run
# (-n) as in a real one, before the first job starts; a handler on its logger prints the
# estimate right after it, so that both show the same figure. The arithmetic is
# cifarlab.study.estimate's (no torch); the seconds per job are JOB_SECONDS of resources.smk.
import logging

from snakemake.logging import logger
from snakemake_interface_logger_plugins.common import LogEvent


def planned_job(job):
    """A Snakemake job as a cifarlab.study.estimate.Job: cheap rules (download, plots, report) cost
    their start-up only, and the figures count as one kind, plot_*."""
    seconds = JOB_SECONDS.get(job.rule.name)
    return estimate.Job(
        kind="plot_*" if job.rule.name.startswith("plot_") else job.rule.name,
        name=",".join(str(v) for v in job.wildcards),
        seconds=seconds(job.wildcards, MEASURED_COSTS or None) if seconds else 0.0,
        benchmark=str(job.benchmark) if job.benchmark else None,
    )


FACTORS_FILE = estimate.CALIBRATION_FILE
# The costs per model family measured on this machine and device (cifarlab.training.calibrate,
# the first time a time budget is planned here), and where the factors relative to them are
# (else those relative to the specs' figures, under the machine's name), with those factors:
# the file read once, after the plan (common.smk) may have measured (estimate.machine_calibration).
CALIBRATION = estimate.machine_calibration(
    estimate.read_calibration(FACTORS_FILE), machine(), config, cores()
)
MEASURED_COSTS = CALIBRATION.costs
FACTORS_KEY = CALIBRATION.factors_key


def planned_estimate(dag):
    """cifarlab.study.estimate.format_estimate of the DAG's jobs, calibrated by the done ones (or, for
    step kinds with none done, by what earlier studies measured on this machine)."""
    planned = [planned_job(job) for job in dag.needrun_jobs()]
    done = [planned_job(job) for job in dag.jobs if not dag.needrun(job)]
    measured = estimate.calibration(done, estimate.job_start(MEASURED_COSTS))
    factors = {**CALIBRATION.factors, **measured}
    result = estimate.estimate(
        planned, factors, side_by_side(), MEASURED_COSTS, light_parallel=cores()
    )
    return estimate.format_estimate(result)


def remember_calibration(dag):
    """After a successful run every job of the DAG is done: remember what they measured."""
    done = [planned_job(job) for job in dag.jobs]
    estimate.remember_factors(
        FACTORS_FILE,
        FACTORS_KEY,
        estimate.calibration(done, estimate.job_start(MEASURED_COSTS)),
    )


class EstimateAfterPlan(logging.Handler):
    """Logs the estimate once, after Snakemake's first table of planned jobs (to Snakemake's
    own logger: its terminal and .snakemake/log/)."""

    def __init__(self):
        super().__init__()
        self.printed = False

    def emit(self, record):
        if self.printed or getattr(record, "event", None) != LogEvent.RUN_INFO:
            return
        self.printed = True  # first: the estimate's own message comes through here too
        if TIME_PLAN is not None:
            logger.info(time_plan.format_plan(TIME_PLAN, STUDY))
        logger.info(planned_estimate(workflow.dag))


# On Snakemake's logger's parent: Snakemake resets the handlers of its own logger.
if workflow.is_main_process:
    logging.getLogger("snakemake").addHandler(EstimateAfterPlan())


# The plan this run uses becomes the one cluster jobs and `status` read (not a dry run's: it
# has no onstart).
onstart:
    if TIME_PLAN is not None:
        time_plan.use_plan(".", TIME_PLAN)


onsuccess:
    remember_calibration(workflow.dag)
