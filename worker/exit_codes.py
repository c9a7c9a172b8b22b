"""The process's exit codes (contract section 6), in one place."""

from __future__ import annotations

from collections import Counter
from enum import IntEnum

from worker.jobs import Status
from worker.supervisor import Disposition


class ExitCode(IntEnum):
    OK = 0
    JOB_FAILED = 1  # a job did not succeed (or, for the client, the job failed)
    USAGE = 2  # bad settings, models file or job id


# Dispositions that make `--drain` and `--once` exit non-zero.
_FAILING = frozenset(
    {
        Disposition.FAILED,
        Disposition.POISON,
        Disposition.MISSING,
        Disposition.LOST,
        Disposition.CRASHED,
        Disposition.HANDED_BACK,
    }
)


def for_run(dispositions: Counter[Disposition]) -> ExitCode:
    """0 when every message's job ended `completed`/`cancelled` (or nothing came)."""
    failing = any(dispositions[disposition] for disposition in _FAILING)
    return ExitCode.JOB_FAILED if failing else ExitCode.OK


def for_status(status: Status) -> ExitCode:
    """A job's status as an exit code: 0 `completed`/`cancelled`, 1 otherwise."""
    succeeded = status in (Status.COMPLETED, Status.CANCELLED)
    return ExitCode.OK if succeeded else ExitCode.JOB_FAILED
