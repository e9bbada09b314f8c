"""The errors cnnbench raises, one small hierarchy the CLI turns into short messages."""

from __future__ import annotations


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


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM); handled like Ctrl-C, exiting 143."""

    exit_code = 143


def install_signal_handlers() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread, so runs are closed before exiting."""
    import signal

    def handler(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
