"""Colour for every figure: the scales, value ranges, shared colour axes, series colours and
the figure style (normal or presenter), in one place.

Style: `with figure_style(PRESENTER_STYLE): ...` makes every figure built inside the block
use colour-blind-safe colours and at least projector-sized type (the app's presenter mode,
set once per run in app.py). The style lives in a context variable, so it applies to one
Streamlit session's run and never to another's. Builders ask `current_style()` (through
`scale`, `series_color` and `type_size`); pages never choose colours themselves.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

FONT_SIZE = 15
PROJECTOR_FONT_SIZE = 20
FONT_FAMILY = "Source Sans Pro, Helvetica, Arial, sans-serif"
MASK_SCALE = "Viridis"  # soft masks: sequential
FEATURE_SCALE = "RdBu_r"  # features T, H, inputs: signed, centred on 0
# One colour per model family, the same on every chart of the app.
MODEL_COLORS = {
    "mixed · ARL": "#1f77b4", "channel · ARL": "#ff7f0e", "spatial · ARL": "#2ca02c",
    "mixed · NAL": "#d62728", "no attention": "#7f7f7f",
}
# Other named series: the map kinds of the faithfulness chart, the two runs of an
# intervention, groups of images, the three activations.
SERIES_COLORS = {
    "mask": "#7b3294", "abs_ig": "#66a61e", "ig": "#1b9e77", "gradcam": "#d95f02", "occlusion": "#e7298a",
    "random": "#7f7f7f", "random_smooth": "#bcbd22",
    "before": "#9aa5b1", "after": "#d62728",
    "all": "#3b528b", "correct": "#3b528b", "wrong": "#d62728",
    "mixed": "#1f77b4", "channel": "#ff7f0e", "spatial": "#2ca02c",
}
_CYCLE = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")


@dataclass(frozen=True)
class FigureStyle:
    """How figures look: replacements for colour scales (by plotly name), colours of named
    series (model labels; other series names), colours for series without a name of their
    own (in order), and the smallest type size any figure may use."""
    scales: Mapping[str, str] = field(default_factory=dict)
    model_colors: Mapping[str, str] = field(default_factory=lambda: dict(MODEL_COLORS))
    series_colors: Mapping[str, str] = field(default_factory=lambda: dict(SERIES_COLORS))
    cycle: tuple[str, ...] = _CYCLE
    min_font_size: int = 0

    def scale(self, colorscale):
        return self.scales.get(colorscale, colorscale) if isinstance(colorscale, str) else colorscale


DEFAULT_STYLE = FigureStyle()
# Presenter mode: masks in viridis, signed features in cividis (blue - grey - yellow, grey
# at 0: readable with every common colour-vision deficiency and in greyscale); every series
# from the Okabe-Ito palette, chosen so that no two colours of one chart are confused under
# deuteranopia or protanopia (tests/test_viz_presenter.py measures it); type at least the
# projector size.
PRESENTER_STYLE = FigureStyle(
    scales={MASK_SCALE: "Viridis", FEATURE_SCALE: "Cividis"},
    model_colors={"mixed · ARL": "#0072B2", "channel · ARL": "#E69F00", "spatial · ARL": "#56B4E9",
                  "mixed · NAL": "#CC79A7", "no attention": "#000000"},
    series_colors={"mask": "#CC79A7", "abs_ig": "#0072B2", "ig": "#56B4E9", "gradcam": "#E69F00",
                   "occlusion": "#D55E00", "random": "#000000", "random_smooth": "#009E73",
                   "before": "#999999", "after": "#0072B2",
                   "all": "#0072B2", "correct": "#0072B2", "wrong": "#E69F00",
                   "mixed": "#0072B2", "channel": "#E69F00", "spatial": "#56B4E9"},
    cycle=("#D55E00", "#009E73", "#F0E442"),
    min_font_size=PROJECTOR_FONT_SIZE,
)
_STYLE: ContextVar[FigureStyle] = ContextVar("resattn_figure_style", default=DEFAULT_STYLE)


@contextmanager
def figure_style(style: FigureStyle):
    """Build the figures inside the block with `style` (this thread / context only)."""
    token = _STYLE.set(style)
    try:
        yield style
    finally:
        _STYLE.reset(token)


def current_style() -> FigureStyle:
    return _STYLE.get()


def type_size(size: int) -> int:
    """A builder's type size under the current style (presenter mode raises small type)."""
    return max(int(size), current_style().min_font_size)


def scale(colorscale):
    """A colour scale as the current style draws it."""
    return current_style().scale(colorscale)


def series_color(name: str, index: int = 0) -> str:
    """The colour of a named series (a model label, a map kind, ...) under the current style;
    a series without a colour of its own takes the `index`-th colour of the style's cycle."""
    style = current_style()
    return style.model_colors.get(name) or style.series_colors.get(name) or style.cycle[index % len(style.cycle)]


# --------------------------------------------------------------------------- ranges and axes

def value_range(*arrays, symmetric: bool = False) -> tuple[float, float]:
    """(min, max) over the finite values of all arrays; symmetric gives (-m, m) with
    m = max |value|. A constant range is widened by 1 % of the value (at least 1e-3) either
    side so that a colour bar can still be drawn around it."""
    values = [np.asarray(a, dtype=np.float64) for a in arrays if a is not None]  # numpy or torch (CPU)
    finite = [v[np.isfinite(v)] for v in values if v.size]
    finite = [f for f in finite if f.size]
    if not finite:
        return (0.0, 1.0)
    lo = float(min(f.min() for f in finite))
    hi = float(max(f.max() for f in finite))
    if symmetric:
        m = max(abs(lo), abs(hi))
        lo, hi = -m, m
    if hi <= lo:
        pad = max(abs(lo) * 0.01, 1e-3)
        lo, hi = lo - pad, hi + pad
    return lo, hi


def signed_scale(signed: bool) -> tuple[str, float | None]:
    """(colour scale, zmid): a signed map is diverging about 0, any other sequential."""
    return (FEATURE_SCALE, 0.0) if signed else (MASK_SCALE, None)


def centred(zmid: float | None, lo: float, hi: float) -> float | None:
    """zmid when the range straddles it, else None: centring a range that lies on one side
    would make plotly stretch it, and the colour bar would no longer show lo..hi."""
    return zmid if zmid is not None and lo < zmid < hi else None


@dataclass
class ColorAxis:
    """A shared colour scale. `row` puts its colour bar beside that row of the grid (for one
    scale per row); otherwise the bar spans the whole grid. `slot` places several per-row
    bars of one row side by side (0 nearest the grid)."""
    zmin: float
    zmax: float
    title: str
    colorscale: str = MASK_SCALE
    zmid: float | None = None
    row: int | None = None
    slot: int = 0


def data_axis(*arrays, title: str, signed: bool | None = None, row: int | None = None,
              slot: int = 0) -> ColorAxis:
    """A colour axis over the data range of `arrays`: diverging and symmetric about 0 when
    `signed` (default: when any value is below 0), else sequential over min..max."""
    lo, hi = value_range(*arrays)
    if signed is None:
        signed = lo < 0
    if signed:
        lo, hi = value_range(*arrays, symmetric=True)
    colours, mid = signed_scale(signed)
    return ColorAxis(lo, hi, title, colours, zmid=mid, row=row, slot=slot)


# --------------------------------------------------------------------------- colour maps in pixels

def mpl_cmap(colorscale):
    """A matplotlib colormap from a plotly colorscale (a name or [(pos, colour), ...]),
    after the current style's replacement."""
    import matplotlib
    import plotly.graph_objects as go
    from matplotlib.colors import LinearSegmentedColormap, to_rgb

    if colorscale is None:
        colorscale = MASK_SCALE
    colorscale = scale(colorscale)
    if isinstance(colorscale, str):
        name = colorscale
        for candidate in (name, name.lower(), name.capitalize()):
            if candidate in matplotlib.colormaps:
                return matplotlib.colormaps[candidate]
        colorscale = go.Heatmap(colorscale=name).colorscale
    stops = []
    for pos, colour in colorscale:
        colour = str(colour).strip()
        m = re.match(r"rgba?\(([^)]*)\)", colour)
        if m:
            parts = [float(p) for p in m.group(1).split(",")[:3]]
            rgb = tuple(p / 255.0 for p in parts)
        else:
            rgb = to_rgb(colour)
        stops.append((float(pos), rgb))
    return LinearSegmentedColormap.from_list("plotly", stops)


def blend(image: np.ndarray, map_: np.ndarray, *, zmin: float | None = None, zmax: float | None = None,
          colorscale=MASK_SCALE, opacity: float = 0.6) -> np.ndarray:
    """The map coloured with `colorscale` over the image (same H x W), as uint8 RGB: what an
    overlay looks like, baked into pixels (for thumbnails). The colours span zmin..zmax,
    by default the map's own data range."""
    if zmin is None or zmax is None:
        zmin, zmax = value_range(map_)
    cmap = mpl_cmap(colorscale)
    span = (zmax - zmin) or 1.0
    coloured = cmap(np.clip((np.asarray(map_, dtype=np.float64) - zmin) / span, 0, 1))[..., :3] * 255.0
    out = (1 - opacity) * np.asarray(image, dtype=np.float64) + opacity * coloured
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def blend_maps(images, maps, *, signed: bool = False, opacity: float = 0.6) -> tuple[list, tuple[float, float]]:
    """Maps (each at its image's size) blended over `images` (one H x W x 3 image for all
    maps, or one per map) on one shared colour scale, diverging about 0 when `signed`:
    (the blended uint8 pictures, (lo, hi) of the scale)."""
    maps = list(maps)
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images] * len(maps)
    lo, hi = value_range(*maps, symmetric=signed)
    colours, _ = signed_scale(signed)
    return [blend(image, z, zmin=lo, zmax=hi, colorscale=colours, opacity=opacity)
            for image, z in zip(images, maps)], (lo, hi)
