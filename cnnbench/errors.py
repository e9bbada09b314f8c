"""The errors cnnbench raises, one small hierarchy the CLI turns into short messages."""

from __future__ import annotations

import errno
import os
import re
import sys
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
#: How long a worker keeps retrying a storage or tracking server it cannot reach before it gives up.
PATIENCE_SECONDS = float(os.environ.get("CNNBENCH_PATIENCE_SECONDS", "600"))
_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<auth>[^@/\s]+)@", re.I)


class CnnbenchError(Exception):
    """Base of every error cnnbench raises on purpose.

    ``exit_code`` is what the CLI exits with: 2 for bad input, 1 for a failure at run time.
    ``source`` says where the bad value came from (a flag, ``file:line``), ``hint`` how to fix it.
    """

    exit_code = 1

    def __init__(self, message: str, *, source: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.source = source
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.source:
            text = f"{self.source}: {text}"
        if self.hint:
            text = f"{text}\n  fix: {self.hint}"
        return text


class ConfigError(CnnbenchError):
    """A setting, flag or sweep file is invalid; nothing has been run."""

    exit_code = 2


class UnknownNameError(ConfigError):
    """A name is not in its registry."""


class ShapeError(ConfigError):
    """A model cannot be built for the data shape it was asked for."""


class DataError(CnnbenchError):
    """A dataset cannot be found, downloaded or read."""

    exit_code = 2


class DivergedError(CnnbenchError):
    """Training produced a non-finite loss."""


class CheckpointError(CnnbenchError):
    """A checkpoint or export cannot be read safely."""


class StudyError(CnnbenchError):
    """A study cannot be created, resumed or read as asked."""

    exit_code = 2


class UnreachableStorage(StudyError):
    """The study's storage server could not be reached when the command started."""


class Unavailable(CnnbenchError):
    """A storage or tracking server stayed unreachable for longer than the worker waits."""


#: How the libraries that write without Python's file objects say it: SQLite, safetensors (and the OS through them).
_FULL = ("database or disk is full", "No space left on device", "Disk quota exceeded")


def chain(err: BaseException | None) -> Iterator[BaseException]:
    """Yield ``err``, then what caused it (or was being handled when it was raised), and so on, each once."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        yield err
        seen.add(id(err))
        err = err.__cause__ or err.__context__


def disk_full(err: BaseException | None) -> BaseException | None:
    """Return the error in ``err``'s :func:`chain` that is a write refused for want of space (a full disk or quota;
    SQLite's "database or disk is full"), else ``None``."""
    return next((e for e in chain(err) if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT))
                 or any(words in str(e) for words in _FULL)), None)


def no_space(full: BaseException) -> str:
    """What to tell of :func:`disk_full`'s error: one line."""
    return f"no space left on the disk: {(str(full).splitlines() or [type(full).__name__])[0][:200]}"


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM); handled like Ctrl-C, exiting 143."""

    exit_code = 143


def install_signal_handlers() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread, so runs are closed before exiting."""
    import signal

    def handler(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


def listed(items, most: int = 6, last: str = "and") -> str:
    """``items`` as a sentence lists them: ``2, 8 and 21``; past ``most``, the first ``most`` and how many more."""
    said = [str(item) for item in items]
    if len(said) > most:
        return ", ".join(said[:most]) + f" {last} {len(said) - most} more"
    return f"{', '.join(said[:-1])} {last} {said[-1]}" if len(said) > 1 else "".join(said)


def redact(text: str) -> str:
    """Return ``text`` with the user:password part of any URL replaced by ``***``."""
    return _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}***@", str(text))


def outlast(call: Callable[[], T], *, what: str, transient: Callable[[BaseException], bool],
            patience: float | None = None) -> T:
    """Return ``call()``, calling it again while it fails with an error ``transient`` accepts, for up to
    ``patience`` seconds (default :data:`PATIENCE_SECONDS`).

    Says on stderr when it starts waiting for ``what`` and when it got through; raises :class:`Unavailable`
    when the time is up. Other errors are raised at once.
    """
    import tenacity

    patience = PATIENCE_SECONDS if patience is None else patience
    waited: list[str] = []

    def say(state: tenacity.RetryCallState) -> None:
        if not waited:
            error = redact(str(state.outcome.exception())).splitlines()[0][:200] if state.outcome else ""
            print(f"cnnbench[{os.getpid()}]: {what} is unreachable ({error}); retrying for up to {patience:.0f} s",
                  file=sys.stderr, flush=True)
        waited.append(what)

    def waits(err: BaseException) -> bool:  # a full disk stays full: said at once, not waited on as unreachable
        return transient(err) and disk_full(err) is None

    retrying = tenacity.Retrying(retry=tenacity.retry_if_exception(waits), reraise=True, before_sleep=say,
                                 stop=tenacity.stop_after_delay(patience),
                                 wait=tenacity.wait_exponential(multiplier=0.5, max=10) + tenacity.wait_random(0, 1))
    try:
        result = retrying(call)
    except Exception as err:
        if not waits(err):
            raise
        raise Unavailable(f"{what} was unreachable for {patience:.0f} s: {redact(str(err)).splitlines()[0][:200]}",
                          hint="bring it back and run the same command again to resume") from None
    if waited:
        print(f"cnnbench[{os.getpid()}]: {what} is reachable again", file=sys.stderr, flush=True)
    return result
