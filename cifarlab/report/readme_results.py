"""`python -m cifarlab.report.readme_results results/report/summary.md README.md`: the README's measured
results come from a study.

summary.md (cifarlab.report.write) has a "## Results" section: the config hash and files, the seeds and
datasets that made the study, and its results table between two marker comments. This command
copies that section's facts and table into the README between the same two markers, so that the
README's table is never typed by hand. Nothing else of the README changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cifarlab.core.files import write_text
from cifarlab.report.tables import RESULTS_BEGIN, RESULTS_END, RESULTS_HEADING


def results_block(summary: str, source: str = "results/report/summary.md") -> str:
    """The lines to put between the markers: where they come from, the facts, then the table."""
    if RESULTS_HEADING not in summary or RESULTS_BEGIN not in summary or RESULTS_END not in summary:
        raise ValueError(
            f"{source} has no '{RESULTS_HEADING}' section with its table between {RESULTS_BEGIN} and "
            f"{RESULTS_END}: it was written before the report had one; rebuild it (snakemake report)"
        )
    section = summary[summary.index(RESULTS_HEADING) + len(RESULTS_HEADING) :]
    facts = [line for line in section[: section.index(RESULTS_BEGIN)].splitlines() if line.strip()]
    table = section[section.index(RESULTS_BEGIN) + len(RESULTS_BEGIN) : section.index(RESULTS_END)].strip()
    intro = f"Written by `python -m cifarlab.report.readme_results` from `{source}` of the study:"
    return "\n".join([intro, "", *facts, "", table])


def replace_results(readme: str, block: str, name: str = "README.md") -> str:
    """`readme` with the text between its two markers replaced by `block`."""
    begin, end = readme.find(RESULTS_BEGIN), readme.find(RESULTS_END)
    if begin < 0 or end < begin or readme.count(RESULTS_BEGIN) != 1:
        raise ValueError(
            f"{name} needs exactly one pair of markers, {RESULTS_BEGIN} then {RESULTS_END}, "
            "where the measured results go; add them"
        )
    return readme[: begin + len(RESULTS_BEGIN)] + "\n" + block + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cifarlab.report.readme_results",
        description="Rewrite the README's results between its marker comments from a study's summary.md.",
    )
    parser.add_argument("summary", type=Path, help="the study's results/report/summary.md")
    parser.add_argument("readme", type=Path, help="the README to rewrite (README.md)")
    args = parser.parse_args(argv)
    try:
        block = results_block(args.summary.read_text(), str(args.summary))
        text = replace_results(args.readme.read_text(), block, str(args.readme))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    write_text(text, args.readme)
    print(f"{args.readme}: results from {args.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
