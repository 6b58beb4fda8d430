"""`python -m cifarlab status`: the study's state from its files (cifarlab.study.status)."""

import sys

from cifarlab.study.status import main

COMMANDS = {"status": main}

if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
    sys.exit(f"usage: python -m cifarlab {{{','.join(COMMANDS)}}} [--configfile FILE ...] [--config K=V ...]")
sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
