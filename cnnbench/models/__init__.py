"""CNN architectures, registered by name: ``create_model("resnet", in_channels=1, ...)``."""

from cnnbench.models import resnet, seeds, tv  # noqa: F401  (they register themselves)
from cnnbench.models.base import MODELS, arch_params, check_model, create_model, with_tta

__all__ = ["MODELS", "arch_params", "check_model", "create_model", "with_tta"]
