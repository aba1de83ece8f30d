"""Errors classified where they enter, each with its result `reason` and process exit code.

Exit codes are the contract with the operator's Job (podFailurePolicy): 2 fails the Job at once
(retrying cannot help), 3 marks an artifact that failed verification, 1 is retried.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, Final

EXIT_OK: Final = 0
EXIT_TRANSIENT: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_VERIFICATION_FAILED: Final = 3
# Stopped by SIGTERM (eviction, drain, deletion) before it finished: 128 + 15, as a shell reports
# it. Neither 2 nor 3, so the Job re-runs the pod (and an eviction's DisruptionTarget is not counted).
EXIT_TERMINATED: Final = 143


class TrainerError(Exception):
    """Base of the classified errors; the message is shown to the user as is."""

    reason: ClassVar[str] = "Internal"
    exit_code: ClassVar[int] = EXIT_TRANSIENT


class BadInput(TrainerError):
    """Invalid spec or config, or data that cannot be used: permanent."""

    reason = "BadInput"
    exit_code = EXIT_BAD_INPUT


class Transient(TrainerError):
    """A dependency failed in a way a retry may fix (network, storage)."""

    reason = "Transient"
    exit_code = EXIT_TRANSIENT


class Terminated(BaseException):
    """SIGTERM arrived before the command finished: no result, the Job runs it again (issue #19:
    a trial used to exit 0 without its score, and the best was picked from the others).

    A BaseException, like KeyboardInterrupt: the `except Exception` that classify a command's own
    failures (a model that fails to predict is VerificationFailed) must never swallow it."""

    reason: ClassVar[str] = "Terminated"
    exit_code: ClassVar[int] = EXIT_TERMINATED


class VerificationFailed(TrainerError):
    """The artifact does not match its digest, holds untrusted types, or does not predict."""

    reason = "VerificationFailed"
    exit_code = EXIT_VERIFICATION_FAILED


@contextmanager
def writing_output(uri: str, what: str) -> Iterator[None]:
    """Classify the errors of writing `what` to the output location `uri`: a bad URI or a
    refusal is bad input, a fault that may pass (or a local I/O error) is transient."""
    from mlops_contract import storage

    try:
        yield
    except storage.InvalidUri as e:
        raise BadInput(f"output.uri: {e}") from e
    except storage.FetchError as e:
        raise (Transient(str(e)) if e.transient else BadInput(str(e))) from e
    except OSError as e:
        raise Transient(f"cannot write {what} to {uri}: {e}") from e
