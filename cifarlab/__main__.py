"""`python -m cifarlab status|verify`: the study's state from its files (cifarlab.study.status); whether a
trained model reproduces (cifarlab.analysis.verify)."""

import sys

from cifarlab.study.status import main as status


def verify(argv: list[str]) -> int:
    """Imported when asked for: it loads torch, which `status` never needs."""
    from cifarlab.analysis.verify import main

    return main(argv)


COMMANDS = {"status": status, "verify": verify}

if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    sys.exit(
        "usage: python -m cifarlab status [--configfile FILE ...] [--config K=V ...]\n"
        "       python -m cifarlab verify <dataset>/<run>/seed<k> [--epochs N]"
    )
sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
