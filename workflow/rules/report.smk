# report: the comparison page a reader opens first, plus its table as Markdown and CSV: one
# section per dataset (its runs over their seeds) and a view across datasets.

import os

from cifarlab.core.hashing import settings_hash
from cifarlab.data.catalog import describe
from cifarlab.study.plan import config_identity

REPORT = config["report"]


DATASET_NAMES = list(DATASETS)
# by name: scripts/report.py reads them (cifarlab.study.plan.Study.report_inputs)
REPORT_INPUTS = STUDY.report_inputs()


rule report:
    input:
        **REPORT_INPUTS,
    output:
        html=report(
            paths.REPORT_PAGE,
            category="Comparison",
            caption="../report/index.rst",
            labels={"figure": "the comparison page"},
        ),
        summary=paths.REPORT_SUMMARY,
        metrics=paths.REPORT_METRICS,
    log:
        "logs/report.log",
    conda:
        "../../environment.yaml"
    params:
        code=code_digest(SCRIPTS / "report.py"),
        # the study's datasets in order (name, labels, image_size, reference); a local source by
        # its content (the script reads its path from the config: a new path reruns nothing)
        datasets=[
            {
                **describe(DATASETS[d]),
                "source": STUDY.source_url(d) or SOURCE_CONTENT[d],
            }
            for d in DATASET_NAMES
        ],
        # the config files that made the study, as given (summary.md's results section names them)
        configfiles=[os.path.relpath(path) for path in workflow.configfiles],
        compare_to=REPORT["compare_to"],
        # The study's identity on the page; the whole config, so any change shows.
        config_hash=settings_hash(config_identity(config)),
        # the files no rule makes (captions, the lab's reference, a compared table), by content
        files={
            key: file_content(value)
            for key, value in REPORT_INPUTS.items()
            if key.startswith("caption_") or key in ("compare_to", "reference")
        },
    script:
        "../../scripts/report.py"
