"""Logging for Snakemake jobs: everything a step prints goes to its rule's `log:` file, and its
progress lines (`cifarlab.core.progress`) to the terminal as well."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

from cifarlab.core.files import DamagedFileError
from cifarlab.core.progress import log as progress_log


def _quiet_excepthook(kind: type[BaseException], error: BaseException, tb: object) -> None:
    """sys.excepthook for an error `log_to` has already logged and printed (exit status stays 1)."""


@contextlib.contextmanager
def log_to(path: str | Path, expected: tuple[type[BaseException], ...] = ()) -> Iterator[logging.Logger]:
    """Send logging, stdout and stderr of the block to `path`; a failure's traceback lands there too.

    The `cifarlab.core.progress` lines also go to the real stderr, which a Snakemake `script:` job
    inherits from Snakemake: its terminal locally, the job's log file under SLURM.
    The exception is re-raised, so Snakemake marks the job failed and removes its outputs.
    `expected`: error classes whose message says all (bad data, no network): for them the log and
    the terminal get that one line, no traceback, and the step exits with status 1.
    """
    expected = (*expected, DamagedFileError)  # its message names the file and the fix: says all
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        old_out, old_err = sys.stdout, sys.stderr
        terminal = logging.StreamHandler(old_err)
        terminal.setFormatter(logging.Formatter("%(message)s"))
        progress_log.addHandler(terminal)
        sys.stdout = sys.stderr = stream
        try:
            yield logging.getLogger("cifarlab")
        except expected as error:
            logging.getLogger("cifarlab").error("%s", error)
            print(f"{type(error).__name__}: {error}  (log: {path})", file=old_err)
            raise SystemExit(1) from None
        except BaseException as error:
            traceback.print_exc(file=stream)
            # Also tell the terminal why, in one line, so the user need not open the log first.
            print(f"{type(error).__name__}: {error}  (full log: {path})", file=old_err)
            # The traceback is in the log: a Snakemake `script:` process (its __main__ holds the
            # `snakemake` object) that ends on this error prints nothing more, where Python's own
            # traceback would repeat the message in the terminal. Callers still get the exception.
            if getattr(sys.modules.get("__main__"), "snakemake", None) is not None:
                sys.excepthook = _quiet_excepthook
            raise
        finally:
            sys.stdout, sys.stderr = old_out, old_err
            root.removeHandler(handler)
            progress_log.removeHandler(terminal)
