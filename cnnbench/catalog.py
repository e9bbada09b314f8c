"""Every registry by the name ``cnnbench list`` shows it under, and their summaries without importing torch."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cnnbench.paths import cached_json
from cnnbench.registry import Registry


def registries() -> dict[str, Registry]:
    """Return the registries, keyed by their plural name."""
    from cnnbench import config, data, models, optim

    return {
        "architectures": models.MODELS,
        "optimizers": optim.OPTIMIZERS,
        "schedulers": optim.SCHEDULERS,
        "choice_sets": optim.CHOICE_SETS,
        "datasets": data.DATASETS,
        "augmentations": data.AUGMENTS,
        "presets": config.PRESETS,
    }


def summaries() -> dict[str, list[tuple[str, str]]]:
    """Return ``(name, one-line summary)`` rows for every registry, keyed by its plural name.

    Filling the registries imports torch, which takes seconds; the rows only change with
    cnnbench's own source, so they are kept in the cache folder under a fingerprint of it.
    """
    def fill() -> dict[str, list[tuple[str, str]]]:
        return {name: reg.summaries() for name, reg in registries().items()}

    return cached_json(f"catalog/{_fingerprint()}.json", fill,
                       lambda cached: {k: [(n, s) for n, s in v] for k, v in cached.items()})


def _fingerprint() -> str:
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        st = f.stat()
        h.update(f"{f.relative_to(root)}:{st.st_mtime_ns}:{st.st_size};".encode())
    return h.hexdigest()[:16]
