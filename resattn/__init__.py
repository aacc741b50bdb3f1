"""resattn: look inside Residual Attention Networks (Wang et al., CVPR 2017)."""
from .card import ModelCard
from .checkpoints import load_checkpoint, save_checkpoint
from .errors import CheckpointError, ImageError, ResattnError
from .images import load_image
from .model import create_model, list_models
from .trace import trace

# Submodules a user reaches as attributes after a plain `import resattn` (the README's
# resattn.data.load_pack, resattn.analysis.grad_cam, ...). Imported on first use: data pulls
# in torchvision (~2 s here), which tracing alone does not need.
_SUBMODULES = ("analysis", "data", "stats", "viz")


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CheckpointError", "ImageError", "ModelCard", "ResattnError", "create_model", "list_models",
           "load_checkpoint", "load_image", "save_checkpoint", "trace"]
