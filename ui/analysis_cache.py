"""What the analysis pages (attribution, interventions, faithfulness, dataset) compute,
cached and bounded, plus the settings those pages carry in the URL and their exports.

Caches (in the style of ui/cache.py; every key starts with the trace key
(checkpoint path + stamp, device, image sha256, input size), so a changed checkpoint file
or image never reuses a result):

- attribution maps: `st.cache_data(max_entries=ANALYSIS_ENTRIES)`, one entry per (trace
  key, method, target, method options): an H x W float32 map (64 KB at 128 px).
- interventions: one entry per (trace key, module, mode, value / other image / seed,
  reduction): probabilities and one reduced map per module before and after (a few KB).
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

Page settings: the pages' own settings (methods, k, steps, ...) are read from the URL the
first time a session needs them, kept in session state (with a shadow copy, as in
ui/state.py, so that visiting another page does not drop them) and written back to the
URL by `sync_settings`, so a copied link reopens the same view. Settings shared with the
other pages ("module", "reduce", "channel", "k") stay in ui/state.py.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import streamlit as st
import torch

from resattn import analysis
from resattn.analysis import dataset as datasets
from resattn.analysis.faithfulness import FaithfulnessCurve
from resattn.checkpoints import IMAGENET_MEAN, IMAGENET_STD
from resattn.data import IMAGE_SUFFIXES, ImageSet, find_pack, preprocess
from resattn.errors import ResattnError

from . import cache, export

ANALYSIS_ENTRIES = 128
DATASET_ENTRIES = 2
MAP_SIZE = 16  # the side of the dataset page's mean mask maps (the library's default)

# --------------------------------------------------------------------------- page settings

# name -> (type, default); list settings travel as comma-separated text, booleans as 1 / 0.
ANALYSIS_SETTINGS: dict[str, tuple[type, Any]] = {
    "target": (str, "pred"),  # "pred" or a class index
    "methods": (list, ["abs_ig", "ig", "gradcam", "occlusion"]),
    "areduce": (str, "mean"),  # the report's reductions (analysis.ANALYSIS_REDUCTIONS)
    "camlayer": (str, ""),  # Grad-CAM layer; "" = resattn.analysis.default_gradcam_layer
    "igsteps": (int, 32),
    "topk": (int, 20),  # top-k % for IoU and the pointing game
    "normalise": (bool, False),
    "iv": (str, "zero"),  # intervention mode
    "ivalue": (float, 0.5),
    "other": (str, "sample:astronaut"),
    "seed": (int, 0),
    "later": (str, ""),
    "steps": (int, 32),
    "baseline": (str, "blur"),
    "nulls": (int, 10),  # random orders of each kind on the faithfulness page
    "source": (str, "pack"),
    "folder": (str, ""),
    "limit": (int, 100),
    "select": (str, "all"),
    "groupby": (str, "label"),
}
_SHADOW_KEY = "_resattn_analysis_settings"
_USED_KEY = "_resattn_analysis_used"


def _parse(kind: type, raw: str | None, default):
    if raw is None:
        return default
    try:
        if kind is list:
            return [part for part in raw.split(",") if part]
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return kind(raw)
    except (TypeError, ValueError):
        return default


def _text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def use_settings(*names: str) -> None:
    """Before a page draws its widgets: give each setting a value (session state, else the
    shadow copy, else the URL, else the default) and make it plain session state, so it
    survives runs of pages that do not draw its widget."""
    ss = st.session_state
    shadow = ss.setdefault(_SHADOW_KEY, {})
    for name in names:
        kind, default = ANALYSIS_SETTINGS[name]
        if name not in ss:
            ss[name] = shadow[name] if name in shadow else _parse(kind, st.query_params.get(name), default)
        ss[name] = ss[name]
        shadow[name] = ss[name]
    ss[_USED_KEY] = list(names)


def sync_settings() -> None:
    """After the widgets: write this page's settings into the URL (only those that changed)."""
    ss = st.session_state
    shadow = ss.setdefault(_SHADOW_KEY, {})
    for name in ss.get(_USED_KEY, []):
        if name not in ss:
            continue
        shadow[name] = ss[name]
        text = _text(ss[name])
        if st.query_params.get(name) != text:
            st.query_params[name] = text


def page_settings() -> dict:
    """This page's settings as JSON-able values (for the settings export)."""
    ss = st.session_state
    return {name: ss.get(name) for name in ss.get(_USED_KEY, [])}


def clamp_setting(name: str, low, high) -> None:
    """Keep a numeric setting inside its widget's range (a value from a link may not be)."""
    value = st.session_state.get(name, ANALYSIS_SETTINGS[name][1])
    st.session_state[name] = type(low)(min(max(value, low), high))


def keep_options(name: str, options: list, default: list | None = None) -> None:
    """Keep only known options in a list setting (for a multiselect)."""
    value = [v for v in st.session_state.get(name) or [] if v in options]
    st.session_state[name] = value if value or default is None else [d for d in default if d in options]


# --------------------------------------------------------------------------- model and input

def model_input(key: tuple, image) -> tuple[torch.nn.Module, dict, torch.Tensor]:
    """(model, card, the normalised 1 x 3 x S x S input on the model's device) of a trace key."""
    path, stamp, device, _sha, size = key
    model, card, _ = cache.load_model(path, stamp, device)
    x = preprocess(image, size, card.get("mean", IMAGENET_MEAN), card.get("std", IMAGENET_STD)).to(device)
    return model, card, x


def gradcam_layers(key: tuple, image) -> tuple[list[str], str]:
    """(the layers Grad-CAM may use, its default): the attention modules, then the final units."""
    model, _, _ = model_input(key, image)
    default = analysis.default_gradcam_layer(model)
    names = [name for name, _ in model.attention_modules()]
    if hasattr(model, "final_units"):
        names.append("final_units")
    return (names if default in names else [default] + names), default


# --------------------------------------------------------------------------- shared controls

def class_picker(slot, trace: cache.TraceData, label: str, help: str) -> int:
    """The "target" selectbox in `slot` (the predicted class or any class, with its
    probability); returns the chosen class index."""
    from . import state

    classes, probs = trace.classes, trace.probs
    predicted = int(np.argmax(probs))
    options = ["pred"] + [str(i) for i in range(len(classes))]
    state.ensure_choice("target", options, "pred")
    slot.selectbox(label, options, key="target", help=help,
                   format_func=lambda t: (f"predicted: {classes[predicted]} ({probs[predicted]:.0%})"
                                          if t == "pred" else f"{classes[int(t)]} ({probs[int(t)]:.1%})"))
    return predicted if st.session_state["target"] == "pred" else int(st.session_state["target"])


def attribution_controls(slots, key: tuple, image) -> tuple[list[str], str, int]:
    """Methods multiselect, Grad-CAM layer and IG steps in three slots; returns
    (methods, Grad-CAM layer, IG steps)."""
    from . import state

    keep_options("methods", list(analysis.METHODS))
    slots[0].multiselect("Attribution methods", list(analysis.METHODS), key="methods",
                         format_func=analysis.METHOD_LABELS.get)
    methods = list(st.session_state["methods"])
    layers, default_layer = gradcam_layers(key, image)
    state.ensure_choice("camlayer", layers, default_layer)
    slots[1].selectbox("Grad-CAM layer", layers, key="camlayer", disabled="gradcam" not in methods,
                       help=f"Default {default_layer}: the last attention module, the deepest layer at a mask's "
                            "resolution.")
    clamp_setting("igsteps", 2, 128)
    slots[2].number_input("IG steps", min_value=2, max_value=128, step=2, key="igsteps",
                          disabled="ig" not in methods,
                          help="Points on the straight path from the baseline (the mean colour) to the image.")
    return methods, st.session_state["camlayer"], int(st.session_state["igsteps"])


# --------------------------------------------------------------------------- attributions

@dataclass
class AttributionMap:
    method: str
    map: np.ndarray  # H x W float32, the method's own units
    target: int
    params: dict
    seconds: float  # wall time when it was computed

    @property
    def label(self) -> str:
        return analysis.METHOD_LABELS[self.method]


def attribution(key: tuple, image, method: str, target: int, *, layer: str | None = None,
                ig_steps: int = 32) -> AttributionMap:
    """One attribution of the class `target` (cached). Only the chosen method's options go
    into the cache key, so changing IG's steps never recomputes Grad-CAM. |IG| is the
    absolute value of the cached signed IG map (one IG computation for both)."""
    if method == "abs_ig":
        signed = attribution(key, image, "ig", target, ig_steps=ig_steps)
        return AttributionMap("abs_ig", np.abs(signed.map), signed.target, dict(signed.params), signed.seconds)
    options = {"ig": (("n_steps", int(ig_steps)),), "gradcam": (("layer", layer),), "occlusion": ()}
    if method not in options:
        raise ResattnError(
            f"Unknown attribution method {method!r}: choose one of {', '.join(analysis.METHODS)}.")
    return _attribution(key, image, method, int(target), options[method])


@st.cache_data(max_entries=ANALYSIS_ENTRIES, ttl=cache.TRACE_TTL_S, show_spinner=False)
def _attribution(key: tuple, _image, method: str, target: int, options: tuple) -> AttributionMap:
    model, _, x = model_input(key, _image)
    start = time.perf_counter()
    result = analysis.attribute(model, x, method, target, **dict(options))
    seconds = time.perf_counter() - start
    return AttributionMap(method, result.map.numpy().copy(), result.target, dict(result.params), seconds)


# --------------------------------------------------------------------------- interventions

@dataclass
class InterventionData:
    module: str
    mode: str
    classes: list[str]
    probs_before: np.ndarray
    probs_after: np.ndarray
    rows: list[dict]  # InterventionResult.top5_table with "name" added
    mask_change: dict[str, float]  # module -> mean |M after - M before|
    maps_before: dict[str, np.ndarray]  # module -> reduced mask h x w
    maps_after: dict[str, np.ndarray]
    identity: dict[str, float] = field(default_factory=dict)  # at the intervened module: max |H - T|, max |H|, ...


@st.cache_data(max_entries=ANALYSIS_ENTRIES, ttl=cache.TRACE_TTL_S, show_spinner=False)
def intervention(key: tuple, _image, module: str, mode: str, value: float = 0.5, seed: int = 0,
                 other_key: tuple | None = None, _other_image=None, reduce: str = "mean", channel: int = 0,
                 k: int = 8) -> InterventionData:
    """resattn.analysis.intervene on the current image; "from_image" takes the mask of
    `module` from the cached trace of the other image (`other_key`)."""
    model, card, x = model_input(key, _image)
    mask = None
    if mode == "from_image":
        other = cache.trace_arrays(other_key, _other_image).module(module).mask
        mask = None if other is None else torch.from_numpy(other)
    result = analysis.intervene(model, x, module, mode, value=float(value), mask=mask, seed=int(seed))
    before, after = result.before.to("cpu"), result.after.to("cpu")
    classes = list(card["classes"])
    rows = [{"name": classes[r["class"]], **r} for r in result.top5_table(0)]

    def reduced(trace) -> dict[str, np.ndarray]:
        out = {}
        for record in trace.modules:
            if record.mask is not None:
                ch = min(int(channel), record.mask.shape[1] - 1)
                out[record.name] = analysis.reduce_channels(record.mask[0], reduce, channel=ch, k=k).numpy().copy()
        return out

    record = after[module]
    identity = {
        "max_abs_H_minus_T": float((record.output - record.trunk).abs().max()),
        "max_abs_H": float(record.output.abs().max()),
        "max_abs_T": float(record.trunk.abs().max()),
        "max_abs_H_minus_2T": float((record.output - 2 * record.trunk).abs().max()),
    }
    return InterventionData(module, mode, classes, result.probabilities_before[0].numpy().copy(),
                            result.probabilities_after[0].numpy().copy(), rows, result.mask_change(),
                            reduced(before), reduced(after), identity)


@st.cache_data(max_entries=ANALYSIS_ENTRIES, ttl=cache.TRACE_TTL_S, show_spinner=False)
def mask_swap_changes(key: tuple, _image, module: str, target: int, other_keys: tuple, _others: tuple) -> list[float]:
    """The reference for one image's intervention: the change of the class `target`'s
    probability when `module`'s mask is replaced by the mask of each other image (one per
    entry of `other_keys`, whose images are `_others`)."""
    model, _, x = model_input(key, _image)
    changes = []
    for other_key, other_image in zip(other_keys, _others):
        other = cache.trace_arrays(other_key, other_image).module(module).mask
        result = analysis.intervene(model, x, module, "from_image", mask=torch.from_numpy(other))
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
    model, _, x = model_input(key, _image)
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
    curves = analysis.faithfulness(model, x, {name: torch.from_numpy(values)}, target, steps=steps,
                                   baseline=baseline, include_random=False)
    return curves[name]


# --------------------------------------------------------------------------- report reductions

@dataclass
class ReportMask:
    map: np.ndarray  # h x w float32 at the module's resolution
    variance_kept: float  # share of the mask's spatial variance this reduction keeps


@st.cache_data(max_entries=ANALYSIS_ENTRIES, ttl=cache.TRACE_TTL_S, show_spinner=False)
def _report_mask(key: tuple, _image, module: str, reduction: str, target: int) -> ReportMask:
    model, _, x = model_input(key, _image)
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
    card = entry.card or {}
    settings = {"size": int(size), "map_size": MAP_SIZE, "mean": tuple(card.get("mean", IMAGENET_MEAN)),
                "std": tuple(card.get("std", IMAGENET_STD))}
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
    """resattn.analysis.dataset.mask_statistics (written to its disk cache)."""
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
