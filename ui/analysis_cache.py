"""What the analysis pages (attribution, interventions, faithfulness, dataset) compute,
cached and bounded, and their exports.

Forward passes run on the checkpoint's inference model (ui/cache.py `inference_model`: BN
folded, channels_last), the one the traces come from: mask interventions and faithfulness
curves. The model as trained runs what needs its layers or its exact gradients: the
"randomise" intervention, attributions and the report's reductions (see the note at
`attribution`) and the dataset statistics.

Caches (in the style of ui/cache.py; every key starts with the trace key
(checkpoint path + stamp, device, image sha256, input size), so a changed checkpoint file
or image never reuses a result):

- attribution maps: `st.cache_data(max_entries=ANALYSIS_ENTRIES)`, one entry per (trace
  key, method, target, method options): the library's `resattn.analysis.Attribution`, an
  H x W float32 tensor (64 KB at 128 px). cache_data (a pickled copy per read) suits it:
  small, and a page may change the copy it gets without touching the cache.
- interventions: one entry per (trace key, module, mode, value / other image / seed,
  reduction): the library's `InterventionSummary` (probabilities and one reduced map per
  module before and after, a few KB; not the two full traces of an InterventionResult).
- faithfulness curves: one entry per (trace key, map, target, steps, baseline), so that
  switching a method on or off never recomputes the others; random orders one entry per
  seed.
- report masks: the report's reductions (mean, class-weighted, top channels) of one
  module's mask for one class, at the module's resolution (`report_mask`).
- dataset reports: the CSV files `python -m resattn.report` wrote for a checkpoint, found
  in $RESATTN_REPORTS/<checkpoint> or docs/reports/<checkpoint> (`report_rows`), read
  again when a file changes.
- dataset images: `st.cache_resource(max_entries=DATASET_ENTRIES)` (shared, not copied:
  500 images at 128 px are 25 MB), keyed on the source, limit, size, classes and the
  files' sizes and mtimes. Mask statistics are cached on disk by the library
  (resattn.analysis.dataset, $RESATTN_CACHE or ~/.cache/resattn); `cached_statistics`
  finds an existing file without computing anything.

The pages' own settings and shared controls live in ui/analysis_settings.py (imported here
under their old names, which the pages use).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import streamlit as st
import torch

from resattn import analysis
from resattn.analysis import dataset as datasets
from resattn.analysis.faithfulness import FaithfulnessCurve
from resattn.data import IMAGE_SUFFIXES, ImageSet, find_pack
from resattn.errors import ResattnError

from . import cache, export
from .analysis_settings import (  # noqa: F401 (the pages reach them as analysis_cache.<name>)
    ANALYSIS_SETTINGS,
    attribution_controls,
    clamp_setting,
    class_picker,
    gradcam_layers,
    keep_options,
    page_settings,
    sync_settings,
    use_settings,
)

ANALYSIS_ENTRIES = 128
DATASET_ENTRIES = 2
MAP_SIZE = 16  # the side of the dataset page's mean mask maps (the library's default)

# --------------------------------------------------------------------------- attributions

# Why attributions and the report's reductions use the model as trained, not the inference
# model: a gradient passes a ReLU or not, and folding moves each gate's threshold by float
# rounding, so an activation within rounding of its threshold can switch. The forward values
# stay equal (1e-6 relative), but one switched gate changes the input gradient around it:
# Integrated Gradients of the folded model differed from the eager one's by up to 8.6e-4 of
# the map's maximum on a tiny model (the eager float32 map was 1.4e-6 from float64) and by
# 4e-4 on the shipped mixed ARL network. The agreement numbers rank these maps, and a rank
# amplifies such a difference (Spearman moved by 1e-5), so they would no longer be the
# numbers `python -m resattn.report` computes on the same image.

def attribution(key: tuple, image, method: str, target: int, *, layer: str | None = None,
                ig_steps: int = 32) -> analysis.Attribution:
    """One attribution of the class `target` (cached). Only the chosen method's options go
    into the cache key, so changing IG's steps never recomputes Grad-CAM. |IG| is the
    absolute value of the cached signed IG map (one IG computation for both)."""
    if method == "abs_ig":
        signed = attribution(key, image, "ig", target, ig_steps=ig_steps)
        return replace(signed, method="abs_ig", map=signed.map.abs(), params=dict(signed.params))
    options = {"ig": (("n_steps", int(ig_steps)),), "gradcam": (("layer", layer),), "occlusion": ()}
    if method not in options:
        raise ResattnError(
            f"Unknown attribution method {method!r}: choose one of {', '.join(analysis.METHODS)}.")
    return _attribution(key, image, method, int(target), options[method])


@st.cache_data(max_entries=ANALYSIS_ENTRIES, ttl=cache.TRACE_TTL_S, show_spinner=False)
def _attribution(key: tuple, _image, method: str, target: int, options: tuple) -> analysis.Attribution:
    model, _, x = cache.model_and_input(key, _image, eager=True)  # the model as trained: see the note above
    return analysis.attribute(model, x, method, target, **dict(options))


# --------------------------------------------------------------------------- interventions

@st.cache_data(max_entries=ANALYSIS_ENTRIES, ttl=cache.TRACE_TTL_S, show_spinner=False)
def intervention(key: tuple, _image, module: str, mode: str, value: float = 0.5, seed: int = 0,
                 other_key: tuple | None = None, _other_image=None, reduce: str = "mean", channel: int = 0,
                 k: int = 8) -> analysis.InterventionSummary:
    """resattn.analysis.intervene on the current image, summarised for the page; "from_image"
    takes the mask of `module` from the cached trace of the other image (`other_key`).

    The mask replacements act on the inference model, whose soft mask branches give the same
    M as the model as trained and whose trace the other pages show. "randomise" runs on the
    model as trained, before and after: it rescales the mask branch's trained filters and
    keeps its BatchNorm layers (Adebayo et al.), which folding merged into those filters."""
    model, card, x = cache.model_and_input(key, _image, eager=mode == "randomise")
    mask = None
    if mode == "from_image":
        mask = cache.image_trace(other_key, _other_image).module(module).mask
    result = analysis.intervene(model, x, module, mode, value=float(value), mask=mask, seed=int(seed))
    return result.summary(classes=list(card.classes), reduce=reduce, channel=int(channel), k=int(k))


@st.cache_data(max_entries=ANALYSIS_ENTRIES, ttl=cache.TRACE_TTL_S, show_spinner=False)
def mask_swap_changes(key: tuple, _image, module: str, target: int, other_keys: tuple, _others: tuple) -> list[float]:
    """The reference for one image's intervention: the change of the class `target`'s
    probability when `module`'s mask is replaced by the mask of each other image (one per
    entry of `other_keys`, whose images are `_others`)."""
    model, _, x = cache.model_and_input(key, _image)
    changes = []
    for other_key, other_image in zip(other_keys, _others):
        other = cache.image_trace(other_key, other_image).module(module).mask
        result = analysis.intervene(model, x, module, "from_image", mask=other)
        changes.append(float(result.probabilities_after[0, int(target)] - result.probabilities_before[0, int(target)]))
    return changes


# --------------------------------------------------------------------------- faithfulness

def faithfulness_curve(key: tuple, image, spec: tuple, target: int, *, steps: int = 32,
                       baseline: str = "blur") -> FaithfulnessCurve:
    """The deletion and insertion curves of one map (cached per map). spec:
    ("mask", module, reduction) with a reduction of analysis.ANALYSIS_REDUCTIONS (for the
    class `target`) | ("attribution", method, options...) as for `attribution` |
    ("random", seed) pixel noise | ("random_smooth", module, seed): a random order as smooth
    as the module's mean mask on this image."""
    return _faithfulness_curve(key, image, tuple(spec), int(target), int(steps), str(baseline))


@st.cache_data(max_entries=ANALYSIS_ENTRIES, ttl=cache.TRACE_TTL_S, show_spinner=False)
def _faithfulness_curve(key: tuple, _image, spec: tuple, target: int, steps: int, baseline: str) -> FaithfulnessCurve:
    model, _, x = cache.model_and_input(key, _image)
    kind = spec[0]
    if kind == "random":
        curves = analysis.faithfulness(model, x, {}, target, steps=steps, baseline=baseline, include_random=True,
                                       seed=int(spec[1]))
        return curves["random"]
    if kind == "random_smooth":
        _, module, seed = spec
        like = torch.from_numpy(report_mask(key, _image, module, "mean", target).map)
        values = analysis.smooth_random_map(like, int(seed)).numpy()
        name = f"random_smooth:{module}"
    elif kind == "mask":
        _, module, reduction = spec
        values = report_mask(key, _image, module, reduction, target).map
        name = f"mask:{module}"
    elif kind == "attribution":
        _, method, options = spec[0], spec[1], dict(spec[2:])
        values = attribution(key, _image, method, target, layer=options.get("layer"),
                             ig_steps=options.get("ig_steps", 32)).map
        name = method
    else:
        raise ValueError(f"unknown map spec {spec!r}")
    curves = analysis.faithfulness(model, x, {name: torch.as_tensor(values)}, target, steps=steps,
                                   baseline=baseline, include_random=False)
    return curves[name]


# --------------------------------------------------------------------------- report reductions

@dataclass
class ReportMask:
    map: np.ndarray  # h x w float32 at the module's resolution
    variance_kept: float  # share of the mask's spatial variance this reduction keeps


@st.cache_data(max_entries=ANALYSIS_ENTRIES, ttl=cache.TRACE_TTL_S, show_spinner=False)
def _report_mask(key: tuple, _image, module: str, reduction: str, target: int) -> ReportMask:
    model, _, x = cache.model_and_input(key, _image, eager=True)  # as the report does (note at attributions)
    mask, gradient = analysis.mask_gradients(model, x, int(target))[module]
    weights = analysis.channel_weights(mask, reduction, gradient=gradient)
    return ReportMask(analysis.weighted_map(mask, weights).numpy().astype(np.float32),
                      float(analysis.variance_kept(mask, weights)))


def report_mask(key: tuple, image, module: str, reduction: str, target: int) -> ReportMask:
    """The report's reduction `reduction` of `module`'s mask (the class-weighted one for
    the class `target`; the others do not depend on it), cached."""
    if reduction not in analysis.ANALYSIS_REDUCTIONS:
        raise ResattnError(f"Unknown reduction {reduction!r}: choose one of "
                           f"{', '.join(analysis.ANALYSIS_REDUCTIONS)}.")
    return _report_mask(key, image, module, reduction, int(target) if reduction == "class_weighted" else -1)


# --------------------------------------------------------------------------- dataset reports

def reports_folder() -> Path:
    """Where the pages look for `python -m resattn.report` outputs: $RESATTN_REPORTS, else
    docs/reports beside app.py (one sub-folder per checkpoint name)."""
    import os

    env = os.environ.get("RESATTN_REPORTS")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "docs" / "reports"


def report_rows(checkpoint: str, name: str) -> list[dict] | None:
    """The rows of one report file (e.g. "agreement.csv") of a checkpoint, or None when
    there is no such report."""
    path = reports_folder() / checkpoint / name
    if not path.is_file():
        return None
    return _report_rows(str(path), _stamp(path))


@st.cache_data(max_entries=32, show_spinner=False)
def _report_rows(path: str, stamp: tuple) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def report_note(checkpoint: str) -> str:
    """What the pages say when a checkpoint has no dataset report."""
    return (f"No dataset report for **{checkpoint}** in {reports_folder() / checkpoint}. The tests over many images "
            f"(nulls, corrected p-values, intervals) come from `python -m resattn.report --checkpoint "
            f"checkpoints/{checkpoint} --images pack --limit 500 --no-figures --out {reports_folder() / checkpoint}`.")


# --------------------------------------------------------------------------- dataset

def _stamp(path: Path) -> tuple:
    try:
        info = path.stat()
        return (info.st_size, info.st_mtime_ns)
    except OSError:
        return (None, None)


def source_signature(source: str) -> tuple:
    """What a dataset source's content depends on: the pack file's stamp, or the image
    files of a folder (relative name, size, mtime)."""
    if source == "pack":
        try:
            pack = find_pack()
        except ResattnError:
            return ()
        return (str(pack),) + _stamp(pack)
    root = Path(source).expanduser()
    if root.is_file():
        return (str(root),) + _stamp(root)
    if not root.is_dir():
        return ()
    return tuple(sorted((str(p.relative_to(root)),) + _stamp(p) for p in root.rglob("*")
                        if p.suffix.lower() in IMAGE_SUFFIXES))


def dataset_images(source: str, limit: int | None, size: int, classes: list[str]) -> tuple[ImageSet, str]:
    """(images, their hash) of a source ("pack" or a folder path), limited to `limit`
    images spread over the set, at size x size. Raises ResattnError with what to do."""
    source = source if source == "pack" else str(Path(source).expanduser())
    return _dataset_images(source, limit, int(size), tuple(classes), source_signature(source))


@st.cache_resource(max_entries=DATASET_ENTRIES, ttl=cache.TRACE_TTL_S, show_spinner=False)
def _dataset_images(source: str, limit: int | None, size: int, classes: tuple, signature: tuple):
    images = datasets.load_images(source, classes=list(classes), size=size, limit=limit)
    return images, datasets.images_hash(images)


@st.cache_data(max_entries=16, show_spinner=False)
def _checkpoint_hash(path: str, stamp: tuple) -> str:
    return datasets.checkpoint_hash(path)


def statistics_path(entry: cache.Entry, images_sha: str, size: int) -> Path:
    """Where resattn.analysis.dataset.mask_statistics caches these statistics: the same key
    (checkpoint bytes, images, settings); tests check that the two agree."""
    card = entry.card
    settings = {"size": int(size), "map_size": MAP_SIZE, "mean": card.mean, "std": card.std}
    key = datasets.statistics_key(_checkpoint_hash(entry.path, entry.stamp), images_sha, settings)
    return datasets.cache_dir() / f"mask-stats-{key}.npz"


def cached_statistics(entry: cache.Entry, images_sha: str, size: int) -> datasets.MaskStatistics | None:
    """The statistics if they were computed before (on disk), else None; computes nothing."""
    path = statistics_path(entry, images_sha, size)
    return _load_statistics(str(path), _stamp(path)) if path.is_file() else None


@st.cache_data(max_entries=8, ttl=cache.TRACE_TTL_S, show_spinner=False)
def _load_statistics(path: str, stamp: tuple) -> datasets.MaskStatistics:
    return datasets.MaskStatistics.load(path)


def compute_statistics(entry: cache.Entry, device: str, images: ImageSet, size: int,
                       progress: Callable[[float], None] | None = None) -> datasets.MaskStatistics:
    """resattn.analysis.dataset.mask_statistics (written to its disk cache) of the model as
    trained: that cache is keyed on the checkpoint's bytes and shared with the CLI."""
    model, card, _ = cache.load_model(entry.path, entry.stamp, device)
    return datasets.mask_statistics(model, card, images, checkpoint=entry.path, size=int(size), map_size=MAP_SIZE,
                                    progress=progress, show_progress=False)


# --------------------------------------------------------------------------- exports

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "table"


def downloads(figures: dict, name: str, *, tables: dict[str, pd.DataFrame] | None = None, arrays=None,
              settings_json: str | None = None, key: str) -> None:
    """ui.export's downloads (PNG/SVG per figure, .npz, settings JSON) plus every table as
    CSV and JSON, in one expander."""
    with st.expander("Export: figures (PNG/SVG), numbers (CSV/JSON), tensors (.npz), settings (JSON)"):
        for i, (title, fig) in enumerate(figures.items()):
            st.markdown(f"**{title}**")
            export.figure_downloads(fig, f"{name}_{title}", key=f"{key}_{i}")
        for j, (title, table) in enumerate((tables or {}).items()):
            st.markdown(f"**{title}**")
            slug = _slug(f"{name}_{title}")
            left, right = st.columns(2)
            left.download_button("CSV", lambda t=table: t.to_csv(index=False), file_name=f"{slug}.csv",
                                 mime="text/csv", key=f"{key}_t{j}_csv", on_click="ignore",
                                 icon=":material/table:", width="stretch")
            right.download_button("JSON", lambda t=table: t.to_json(orient="records", indent=2),
                                  file_name=f"{slug}.json", mime="application/json", key=f"{key}_t{j}_json",
                                  on_click="ignore", icon=":material/data_object:", width="stretch")
        export.data_downloads(name, arrays=arrays, settings_json=settings_json, key=key)
