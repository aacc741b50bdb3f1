"""resattn: look inside Residual Attention Networks (Wang et al., CVPR 2017)."""
from .checkpoints import load_checkpoint, save_checkpoint
from .errors import CheckpointError, ImageError, ResattnError
from .images import load_image
from .model import create_model, list_models
from .trace import trace

__all__ = ["CheckpointError", "ImageError", "ResattnError", "create_model", "list_models", "load_checkpoint",
           "load_image", "save_checkpoint", "trace"]
