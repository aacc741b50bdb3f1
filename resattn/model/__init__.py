from .attention import RESIDUAL_MODES, AttentionModule, AttentionResidual, attention_modules
from .mask import ATTENTION_TYPES, MaskActivation, SoftMaskBranch
from .networks import DEFAULT_INPUT_SIZE, ResidualAttentionNetwork, create_model, list_models
from .units import ResidualUnit

__all__ = [
    "ATTENTION_TYPES", "RESIDUAL_MODES", "DEFAULT_INPUT_SIZE", "AttentionModule", "AttentionResidual",
    "MaskActivation", "ResidualAttentionNetwork", "ResidualUnit", "SoftMaskBranch",
    "attention_modules", "create_model", "list_models",
]
