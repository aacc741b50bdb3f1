"""What a trace means: masks against attributions, mask interventions, faithfulness curves
and dataset-level mask statistics. Pure functions returning tensors, arrays and
dataclasses; figures are drawn elsewhere.

    reduce         reduce_channels(M, "mean"|"max"|"channel"|"topk"|"pca"), to_image_size, mask_map
    attribution    integrated_gradients, grad_cam, occlusion, attribute_all -> Attribution(.map H x W)
    agreement      spearman, topk_iou, pointing_game, agreement -> Agreement
    interventions  intervene(model, images, module, mode) -> InterventionResult; replaced_mask
    faithfulness   faithfulness(model, image, maps, target) -> {name: FaithfulnessCurve}
    dataset        mask_statistics(model, card, images) -> MaskStatistics (cached), load_images
"""
from .agreement import Agreement, agreement, pointing_game, spearman, top_region, topk_iou
from .attribution import (METHOD_LABELS, METHODS, Attribution, attribute, attribute_all, default_gradcam_layer,
                          grad_cam, integrated_gradients, occlusion)
from .faithfulness import FaithfulnessCurve, faithfulness, random_map
from .interventions import INTERVENTION_LABELS, INTERVENTIONS, InterventionResult, intervene, replaced_mask
from .reduce import REDUCE_MODES, mask_map, reduce_channels, to_image_size

_DATASET_NAMES = ("MaskStatistics", "load_images", "mask_statistics", "shard_indices")


def __getattr__(name: str):
    # The dataset module is also a CLI (`python -m resattn.analysis.dataset`); importing it
    # lazily keeps runpy from finding it already imported when run that way.
    if name in _DATASET_NAMES:
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Agreement", "Attribution", "FaithfulnessCurve", "INTERVENTIONS", "INTERVENTION_LABELS", "InterventionResult",
    "METHODS", "METHOD_LABELS", "MaskStatistics", "REDUCE_MODES", "agreement", "attribute", "attribute_all",
    "default_gradcam_layer", "faithfulness", "grad_cam", "integrated_gradients", "intervene", "load_images",
    "mask_map", "mask_statistics", "occlusion", "pointing_game", "random_map", "reduce_channels", "replaced_mask",
    "shard_indices", "spearman", "to_image_size", "top_region", "topk_iou",
]
