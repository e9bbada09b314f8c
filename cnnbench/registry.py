"""One small registry class for every family of named things: models, optimizers, schedulers..."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from cnnbench.errors import ConfigError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A strict mapping from names to builders.

    Registering a name twice is an error; looking up an unknown name raises
    :class:`UnknownNameError` listing the valid names and the closest one. A registry may also
    hold namespaces (``tv:resnet18``): a prefix whose names are resolved by a function.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._namespaces: dict[str, tuple[Callable[[str], T], Callable[[], list[str]] | None, str]] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Return a decorator that registers its argument under ``name`` (default: its ``__name__``)."""

        def decorator(obj: T) -> T:
            self.add(name or obj.__name__, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name``."""
        if name in self._entries:
            raise ConfigError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = obj

    def add_namespace(
        self, prefix: str, resolve: Callable[[str], T], names: Callable[[], list[str]] | None, summary: str
    ) -> None:
        """Register a namespace: ``prefix:NAME`` is looked up with ``resolve(NAME)``, for any of ``names()``, or
        for any NAME where ``names`` is ``None`` (``resolve`` then raises its own error for one it cannot take)."""
        if prefix in self._namespaces:
            raise ConfigError(f"{self.kind} namespace {prefix!r} is registered twice")
        self._namespaces[prefix] = (resolve, names, summary)

    def get(self, name: str) -> T:
        """Return the entry registered under ``name``."""
        if name in self._entries:
            return self._entries[name]
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self._namespaces:
            resolve, names, _ = self._namespaces[prefix]
            if names is None or rest in names():
                return resolve(rest)
            raise self._unknown(name, [f"{prefix}:{n}" for n in names()])
        raise self._unknown(name, self.names())

    def _unknown(self, name: str, valid: list[str]) -> UnknownNameError:
        return unknown_name(self.kind, name, valid)

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except UnknownNameError:
            return False
        return True

    def names(self) -> list[str]:
        """Return the registered names (namespaces shown as ``prefix:*``), sorted."""
        return sorted(self._entries) + [f"{p}:*" for p in sorted(self._namespaces)]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def summaries(self) -> list[tuple[str, str]]:
        """Return ``(name, one-line description)`` for every entry and namespace."""
        rows = [(name, _first_line(obj)) for name, obj in sorted(self._entries.items())]
        rows += [(f"{p}:*", s) for p, (_, _, s) in sorted(self._namespaces.items())]
        return rows


def _first_line(obj: object) -> str:
    doc = getattr(obj, "summary", None) or getattr(obj, "__doc__", None) or ""
    # A docstring's ``code`` marks read as noise in a terminal; one backtick still marks the name.
    return doc.strip().splitlines()[0].replace("``", "`") if doc.strip() else ""


def unknown_name(kind: str, name: str, valid: list[str]) -> UnknownNameError:
    """Return the error for ``name``, not among the ``valid`` names of a ``kind``: the valid names, and the closest."""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else None
    # A namespace's names (torchvision's 80-odd classifiers) would fill the terminal: the nearest few of them.
    shown = ", ".join(valid) if len(valid) <= 12 else (
        f"{len(valid)} names, the nearest {', '.join(difflib.get_close_matches(name, valid, n=8, cutoff=0))}")
    return UnknownNameError(f"unknown {kind} {name!r}; valid: {shown}", hint=hint)
