"""Every registry by the name ``cnnbench list`` shows it under."""

from __future__ import annotations

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
