"""Everything the app computes, cached and bounded. The only state shared between sessions.

Bounds (also the numbers to change if memory is tight):

- models: `st.cache_resource(max_entries=MODEL_ENTRIES)`, keyed on (checkpoint path, file
  size + mtime, device); 6 = the five zoo models plus one more. Two per checkpoint: the
  model as trained (`load_model`: the tour's step-by-step views, attributions, the
  "randomise" sanity check, seed-consistency maps, dataset statistics) and its inference
  copy (`inference_model`: resattn.model.fuse.optimise_for_inference, BN folded and
  channels_last; every trace, mask intervention and faithfulness curve). A model is shared
  by all sessions; `resattn.trace` serialises hooked passes on it with a per-model lock.
- traces: `st.cache_resource(max_entries=TRACE_ENTRIES, ttl=TRACE_TTL_S)`, keyed on
  (checkpoint path + stamp, device, image sha256, input size): the library's
  `resattn.trace.Trace` itself (every module's input, T, M and H as CPU tensors), shared,
  not copied: ~1.5 MB for Attention-56 at width 0.25 and 128 px, ~20 MB at width 1.0 and
  224 px, so 32 entries stay under ~650 MB worst case (see `image_trace` for why
  cache_resource).
- derived maps (reductions, resized maps, thumbnails, statistics):
  `st.cache_data(max_entries=DERIVED_ENTRIES, ttl=TRACE_TTL_S)`; each is a few KB of numpy,
  the form the figures draw.
- decoded uploads: `st.cache_data(max_entries=UPLOAD_ENTRIES, ttl=TRACE_TTL_S)`, images
  shrunk to at most MAX_SIDE pixels per side first (~3 MB each).
- the checkpoint folder listing: `st.cache_data(ttl=LISTING_TTL_S)`, keyed on the folder's
  file names, sizes and mtimes, so a new or replaced file shows up on the next rerun.

Changing a display option (reduction, colour scale, opacity) only reads these caches: no
new forward pass. Nothing here keeps per-session state. Torch uses TORCH_THREADS threads.
"""
from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch

import resattn
from resattn import stats
from resattn.analysis import reduce as reduce_maps
from resattn.checkpoints import ModelCard, read_card, sibling_path
from resattn.data import image_tensor, resize_transform
from resattn.device import use_torch_threads
from resattn.errors import CheckpointError
from resattn.model import ResidualAttentionNetwork
from resattn.model.fuse import optimise_for_inference
from resattn.trace import ModuleRecord, Trace

MODEL_ENTRIES = 6
TRACE_ENTRIES = 32
TRACE_TTL_S = 3600
DERIVED_ENTRIES = 512
UPLOAD_ENTRIES = 16
LISTING_TTL_S = 30
# One torch thread per computation: concurrent sessions, not threads, use the cores (see
# resattn.device.use_torch_threads and docs/deploy.md).
TORCH_THREADS = use_torch_threads()
MAX_SIDE = 1024  # uploads are shrunk to this before anything else; the networks see <= 224 px
TENSORS = ("input", "trunk", "mask", "output")


# --------------------------------------------------------------------------- checkpoints

@dataclass(frozen=True)
class Entry:
    """One checkpoint in the folder: usable (card set) or not (error says why)."""
    name: str
    path: str  # stem, without suffix
    stamp: tuple  # (size, mtime_ns) of the weights and the card: part of every cache key
    card: ModelCard | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.card is not None


def checkpoint_folder() -> Path:
    """`checkpoints/` beside app.py, or $RESATTN_CHECKPOINTS."""
    env = os.environ.get("RESATTN_CHECKPOINTS")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / "checkpoints"


def _file_stamp(path: Path) -> tuple:
    try:
        st_ = path.stat()
        return (st_.st_size, st_.st_mtime_ns)
    except OSError:
        return (None, None)


def _folder_signature(folder: Path) -> tuple:
    if not folder.is_dir():
        return ()
    return tuple(sorted((p.name,) + _file_stamp(p) for p in folder.iterdir()
                        if p.suffix in (".safetensors", ".json")))


def list_entries(folder: Path) -> list[Entry]:
    """Every checkpoint in `folder` (a .safetensors file, or a .json card without one), with
    the reason when it cannot be used. Cached for LISTING_TTL_S, and re-read at once when a
    file in the folder changes."""
    return _list_entries(str(folder), _folder_signature(folder))


@st.cache_data(ttl=LISTING_TTL_S, max_entries=8, show_spinner=False)
def _list_entries(folder: str, signature: tuple) -> list[Entry]:
    root = Path(folder)
    if not root.is_dir():
        return []
    stems = sorted({p.with_suffix("") for p in root.glob("*.safetensors")} |
                   {p.with_suffix("") for p in root.glob("*.json")})
    entries = []
    for stem in stems:
        weights, card_path = sibling_path(stem, ".safetensors"), sibling_path(stem, ".json")
        stamp = _file_stamp(weights) + _file_stamp(card_path)
        if not weights.is_file():
            try:
                card = read_card(card_path)
            except CheckpointError:
                continue  # a .json that is no model card (e.g. a results file): not a checkpoint
            entries.append(Entry(stem.name, str(stem), stamp, error=f"{card_path.name} has no weights file "
                                 f"{weights.name} beside it: copy the weights there or remove the card."))
            continue
        try:
            card = read_card(stem)
            _check_header(weights)
        except CheckpointError as exc:
            entries.append(Entry(stem.name, str(stem), stamp, error=str(exc)))
            continue
        entries.append(Entry(stem.name, str(stem), stamp, card=card))
    return entries


def _check_header(weights: Path) -> None:
    """Open the safetensors header (cheap: no tensor is read) so that a truncated or
    foreign file is flagged in the picker rather than when it is chosen."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            keys = list(f.keys())
    except Exception as exc:
        raise CheckpointError(f"{weights.name} is not a readable safetensors file ({exc}); it may be "
                              "truncated: copy it again or retrain it.") from None
    if not keys:
        raise CheckpointError(f"{weights.name} holds no tensors: copy it again or retrain it.")


@st.cache_resource(max_entries=MODEL_ENTRIES, show_spinner="Loading the checkpoint…")
def load_model(path: str, stamp: tuple, device: str):
    """(model in eval mode on `device`, card, outline). Raises CheckpointError; failures
    are not cached, so a fixed file works on the next rerun."""
    model, card = resattn.load_checkpoint(path, device=device)
    return model, card, stats.network_outline(model)


@st.cache_resource(max_entries=MODEL_ENTRIES, show_spinner="Preparing the checkpoint for inference…")
def inference_model(path: str, stamp: tuple, device: str):
    """The model the app traces and intervenes on: `load_model`'s with every BatchNorm
    folded and channels_last (optimise_for_inference), which computes the same function
    (tests/test_fast_path.py bounds the difference, module by module). Its soft mask
    branches keep their names and outputs, so mask replacements act on it unchanged. Not
    for what needs the layers as trained: the tour's steps (they show the BN-ReLU-conv stem
    and mask head), the "randomise" check (it keeps each BatchNorm, which folding removed),
    attributions (a ReLU gate within rounding of its threshold may switch and change the
    gradient: see ui/analysis_cache.py), the seed-consistency maps (ranked against the
    CLI's) and the dataset statistics (their disk cache is shared with the CLI)."""
    model = load_model(path, stamp, device)[0]
    return optimise_for_inference(model) if isinstance(model, ResidualAttentionNetwork) else model


# --------------------------------------------------------------------------- images

def image_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@st.cache_data(max_entries=UPLOAD_ENTRIES, ttl=TRACE_TTL_S, show_spinner="Reading the image…")
def decode_upload(sha: str, _data: bytes):
    """An uploaded file's bytes as an RGB PIL image at most MAX_SIDE pixels per side, keyed
    on the bytes' sha256. Raises resattn.ImageError for anything that is not a readable
    image (or is too large)."""
    image = resattn.load_image(io.BytesIO(_data))
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    return image


@st.cache_data(max_entries=2 * UPLOAD_ENTRIES, ttl=TRACE_TTL_S, show_spinner=False)
def preview(sha: str, _image, side: int = 360) -> np.ndarray:
    """A small copy of the chosen image for the sidebar (keyed on its sha256)."""
    small = _image.copy()
    small.thumbnail((side, side))
    return np.asarray(small)


# --------------------------------------------------------------------------- traces

@dataclass(frozen=True)
class ImageTrace:
    """One image through one checkpoint's inference model: the library's `resattn.trace.Trace`
    (CPU tensors, batch of one) with what the pages show beside it. Nothing is copied to
    numpy here; figures convert what they draw (the plotly builders take tensors).

    Shared by every session (st.cache_resource): read it, never write into its tensors."""
    checkpoint: str
    classes: list[str]
    trace: Trace  # logits 1 x classes; module records 1 x C x h x w
    image: np.ndarray  # uint8 S x S x 3: the image as the network saw it (resized square)
    seconds: float = 0.0

    @property
    def names(self) -> list[str]:
        return self.trace.names

    @property
    def modules(self) -> list[ModuleRecord]:
        """The records of the one image: tensors C x h x w, views into the trace (no copy)."""
        return [_first_image(r) for r in self.trace.modules]

    def module(self, name: str) -> ModuleRecord:
        return _first_image(self.trace[name])

    @property
    def probs(self) -> np.ndarray:
        """Softmax of the logits (a few floats, for the pages' predictions)."""
        return self.trace.logits[0].float().softmax(0).numpy()

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        probs = self.probs
        order = np.argsort(-probs)[:k]
        return [(self.classes[i], float(probs[i])) for i in order]

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat name -> array mapping for the .npz export (converted when the file is made)."""
        out = {"logits": self.trace.logits[0].numpy(), "probs": self.probs, "image": self.image}
        for m in self.modules:
            for which in TENSORS:
                value = getattr(m, which)
                if value is not None:
                    out[f"{m.name}/{which}"] = value.numpy()
        return out


def _first_image(record: ModuleRecord) -> ModuleRecord:
    def first(t):
        return None if t is None else t[0]
    return ModuleRecord(record.name, record.stage, first(record.input), first(record.trunk), first(record.mask),
                        first(record.output))


def trace_key(entry: Entry, device: str, sha: str, size: int) -> tuple:
    """What a trace depends on; the cache key of everything computed from it."""
    return (entry.path, entry.stamp, device, sha, int(size))


def network_view(image, size: int) -> np.ndarray:
    """The image resized to size x size, as uint8 S x S x 3, the way a card resizes it
    (ModelCard.pixels) before normalising: for showing several networks' inputs at one size."""
    return resize_transform(size)(image_tensor(image)).permute(1, 2, 0).numpy().copy()


def model_and_input(key: tuple, image, *, eager: bool = False):
    """The model of a trace key (the inference model unless `eager`) and the image
    preprocessed as its card says, on the model's device and in its memory format."""
    path, stamp, device, _sha, _size = key  # the key's size is card.input_size (AppState.key)
    model, card, _ = load_model(path, stamp, device)
    x = card.preprocess(image).to(device)
    if not eager:
        model = inference_model(path, stamp, device)
        x = x.contiguous(memory_format=torch.channels_last)  # the inference model's format (faster convolutions)
    return model, card, x


# Traces are cached with st.cache_resource, not st.cache_data: cache_data pickles the value
# when it stores it and hands every call a fresh unpickled copy (its docs: "to cache data and
# return copies"), i.e. every rerun of every session would copy the whole trace (every
# module's X, T, M, H: 1.5-20 MB). cache_resource hands out the one shared object, so a trace
# costs its memory once, bounded by max_entries and the ttl like before; the price is that it
# must not be mutated, which nothing does (the tensors come out of torch.inference_mode).
@st.cache_resource(max_entries=TRACE_ENTRIES, ttl=TRACE_TTL_S, show_spinner="Running the image through the network…")
def image_trace(key: tuple, _image) -> ImageTrace:
    """One forward pass with hooks (resattn.trace) of the inference model for `key` =
    trace_key(...); `_image` (the PIL image whose sha256 is in the key) is not hashed."""
    path = key[0]
    model, card, x = model_and_input(key, _image)
    start = time.perf_counter()
    tr = resattn.trace(model, x).to("cpu")
    seconds = time.perf_counter() - start
    view = card.pixels(_image).permute(1, 2, 0).numpy().copy()  # what the network saw, before normalising
    return ImageTrace(Path(path).name, list(card.classes), tr, view, seconds)


@st.cache_resource(max_entries=TRACE_ENTRIES, ttl=TRACE_TTL_S, show_spinner="Reading the mask logits…")
def mask_logits(key: tuple, _image) -> dict[str, torch.Tensor]:
    """The soft mask logits (before the activation) per module, C x h x w on the CPU (How it
    works); shared like the traces."""
    model, _, x = model_and_input(key, _image)
    return {name: t[0].cpu() for name, t in stats.mask_logits(model, x).items()}


# --------------------------------------------------------------------------- derived maps
# Small numpy maps for the figures (a few KB each): st.cache_data, whose copies are cheap.

@st.cache_data(max_entries=DERIVED_ENTRIES, ttl=TRACE_TTL_S, show_spinner=False)
def ranked_channels(key: tuple, _image, module: str) -> list[int]:
    """A module's channels by decreasing mask energy (mean of M² over space); by the trunk's
    energy for a model without masks. One order for every tensor of the module, so that
    "top-k" and the channel grid pick the same channels of X, T, M and H."""
    mod = image_trace(key, _image).module(module)
    basis = mod.mask if mod.mask is not None else mod.trunk
    return reduce_maps.channel_energy(basis).argsort(descending=True).tolist()


@st.cache_data(max_entries=DERIVED_ENTRIES, ttl=TRACE_TTL_S, show_spinner=False)
def reduced(key: tuple, _image, module: str, which: str, mode: str = "mean", channel: int = 0, k: int = 8,
            size: int | None = None) -> np.ndarray | None:
    """One module's tensor (`which` in TENSORS) reduced over channels (resattn.analysis.reduce)
    and, with `size`, resized to size x size (bilinear). "topk" averages the k channels with
    the most *mask* energy (see `ranked_channels`), the same channels for every tensor. None
    when the tensor is absent (the mask of a model without attention)."""
    t = getattr(image_trace(key, _image).module(module), which)
    if t is None:
        return None
    if mode == "topk":
        top = ranked_channels(key, _image, module)[:max(1, int(k))]
        out = reduce_maps.reduce_channels(t[top], "mean")
    else:
        out = reduce_maps.reduce_channels(t, mode, channel=channel, k=k)
    if size is not None:
        out = reduce_maps.to_image_size(out, size)
    return out.numpy().copy()


@st.cache_data(max_entries=DERIVED_ENTRIES, ttl=TRACE_TTL_S, show_spinner=False)
def channel_selection(key: tuple, _image, module: str, which: str, count: int, order: str,
                      max_side: int = 32) -> tuple[np.ndarray, list[int]] | None:
    """Up to `count` channels of a tensor for the channel grid: those with the most mask
    energy (order="energy", see `ranked_channels`) or the first ones (order="index").
    Maps larger than max_side are shrunk (anti-aliased) to keep the figure light."""
    t = getattr(image_trace(key, _image).module(module), which)
    if t is None:
        return None
    if order == "energy":
        indices = ranked_channels(key, _image, module)[:count]
    else:
        indices = list(range(min(count, t.shape[0])))
    chosen = t[indices]
    if max(chosen.shape[-2:]) > max_side:
        chosen = reduce_maps.to_image_size(chosen[:, None], (max_side, max_side))[:, 0]
    return chosen.numpy().copy(), indices


@st.cache_data(max_entries=DERIVED_ENTRIES, ttl=TRACE_TTL_S, show_spinner=False)
def histogram(key: tuple, _image, module: str | None, which: str, bins: int = 60,
              value_range: tuple[float, float] | None = None):
    """(fractions, edges) of a tensor's values (module None: all modules together)."""
    tr = image_trace(key, _image)
    mods = tr.modules if module is None else [tr.module(module)]
    values = [getattr(m, which) for m in mods if getattr(m, which) is not None]
    if not values:
        return None
    return stats.value_histogram(torch.cat([v.flatten() for v in values]), bins, value_range)


@st.cache_data(max_entries=DERIVED_ENTRIES, ttl=TRACE_TTL_S, show_spinner=False)
def stage_statistics(key: tuple, _image) -> dict[int, dict[str, float]]:
    tr = image_trace(key, _image)
    return stats.stage_mask_statistics((m.stage, m.mask) for m in tr.modules)


@st.cache_data(max_entries=DERIVED_ENTRIES, ttl=TRACE_TTL_S, show_spinner=False)
def magnitudes(key: tuple, _image) -> list[dict]:
    return stats.magnitude_profile(image_trace(key, _image).modules)


def clear_all() -> None:
    """Empty every cache (the sidebar's "clear caches" button)."""
    st.cache_data.clear()
    st.cache_resource.clear()


@st.cache_data(max_entries=DERIVED_ENTRIES, ttl=TRACE_TTL_S, show_spinner=False)
def activation_demo(key: tuple, _image, module: str) -> dict | None:
    """resattn.stats.activation_summary of one module's mask logits (None without a mask)."""
    logits = mask_logits(key, _image).get(module)
    return None if logits is None else stats.activation_summary(logits)
