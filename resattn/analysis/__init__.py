"""What a trace means: masks against attributions, mask interventions, faithfulness curves
and dataset-level mask statistics. Pure functions returning tensors, arrays and
dataclasses; figures are drawn elsewhere.

    reduce         reduce_channels(M, "mean"|"max"|"channel"|"topk"|"pca"), to_image_size, mask_map;
                   the report's reductions: channel_weights(M, "mean"|"class_weighted"|"top_channels"),
                   weighted_map, variance_kept
    attribution    integrated_gradients, grad_cam, occlusion, attribute_all -> Attribution(.map H x W)
    agreement      spearman, topk_iou, pointing_game, agreement -> Agreement (ties broken at random)
    nulls          shuffle and smooth (phase-randomised) nulls of the agreement
    significance   bootstrap intervals, null bands, paired tests, Holm, verdict sentences
    interventions  intervene(model, images, module, mode) -> InterventionResult (.summary() ->
                   InterventionSummary, small enough to cache); replaced_mask;
                   randomise_mask_branches, cascade_steps (sanity checks)
    faithfulness   faithfulness(model, image, maps, target) -> {name: FaithfulnessCurve}
    image_sets     load_images(pack | ImageFolder tree | folder | file) -> ImageSet, spread or stratified
    dataset        mask_statistics(model, card, images) -> MaskStatistics (cached)
    study          the dataset study of `python -m resattn.report` (per image, then tables)
"""
from .agreement import Agreement, agreement, pointing_game, spearman, top_region, topk_iou
from .attribution import (
    METHOD_LABELS,
    METHODS,
    REPORT_METHOD_LABELS,
    REPORT_METHODS,
    Attribution,
    attribute,
    attribute_all,
    default_gradcam_layer,
    grad_cam,
    integrated_gradients,
    mask_gradients,
    occlusion,
)
from .faithfulness import FaithfulnessCurve, faithfulness, random_map, smooth_random_map
from .image_sets import load_images
from .interventions import (
    INTERVENTION_LABELS,
    INTERVENTIONS,
    InterventionResult,
    InterventionSummary,
    cascade_steps,
    intervene,
    randomise_mask_branches,
    replaced_mask,
)
from .reduce import (
    ANALYSIS_REDUCTIONS,
    REDUCE_MODES,
    channel_weights,
    mask_map,
    reduce_channels,
    to_image_size,
    variance_kept,
    weighted_map,
)

_DATASET_NAMES = ("MaskStatistics", "mask_statistics", "shard_indices")


def __getattr__(name: str):
    # The dataset module is also a CLI (`python -m resattn.analysis.dataset`); importing it
    # lazily keeps runpy from finding it already imported when run that way.
    if name in _DATASET_NAMES:
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ANALYSIS_REDUCTIONS", "REPORT_METHODS", "REPORT_METHOD_LABELS", "mask_gradients", "cascade_steps",
    "channel_weights", "randomise_mask_branches", "smooth_random_map",
    "variance_kept", "weighted_map",
    "Agreement", "Attribution", "FaithfulnessCurve", "INTERVENTIONS", "INTERVENTION_LABELS", "InterventionResult",
    "InterventionSummary",
    "METHODS", "METHOD_LABELS", "MaskStatistics", "REDUCE_MODES", "agreement", "attribute", "attribute_all",
    "default_gradcam_layer", "faithfulness", "grad_cam", "integrated_gradients", "intervene", "load_images",
    "mask_map", "mask_statistics", "occlusion", "pointing_game", "random_map", "reduce_channels", "replaced_mask",
    "shard_indices", "spearman", "to_image_size", "top_region", "topk_iou",
]
