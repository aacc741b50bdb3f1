"""Figure builders: data in (numpy arrays, numbers, names), figure out. No Streamlit, no models.

Every builder returns a plotly figure with a visible colour bar for every colour scale and
raw values on hover. `to_matplotlib` redraws any figure made here with matplotlib, and
`figure_bytes` turns it into PNG or SVG bytes, so exports work offline (plotly's own static
export needs kaleido and a Chrome, which this project does not ship).

Fonts: `FONT_SIZE` for normal pages; the compare page passes `PROJECTOR_FONT_SIZE` so a
room can read it off a projector.

Style: `with figure_style(PRESENTER_STYLE): ...` makes every figure built inside the block
use colour-blind-safe colours (the app's presenter mode). The style lives in
a context variable, so it applies to one Streamlit session's run and never to another's.
"""
from __future__ import annotations

import base64
import io
import math
import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

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
_FALLBACK_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")


@dataclass(frozen=True)
class FigureStyle:
    """How figures look: replacements for colour scales (by plotly name) and for the model
    colours (by label). Type size stays with each builder, whose layout is computed from it."""
    scales: Mapping[str, str] = field(default_factory=dict)
    model_colors: Mapping[str, str] = field(default_factory=dict)
    fallback_colors: tuple[str, ...] = ()

    def scale(self, colorscale):
        return self.scales.get(colorscale, colorscale) if isinstance(colorscale, str) else colorscale


DEFAULT_STYLE = FigureStyle()
# Presenter mode: masks in viridis, signed features in cividis (blue - grey -
# yellow, grey at 0: readable with every common colour-vision deficiency and in greyscale);
# model lines in the Okabe-Ito palette without a red-green pair.
PRESENTER_STYLE = FigureStyle(
    scales={MASK_SCALE: "Viridis", FEATURE_SCALE: "Cividis"},
    model_colors={"mixed · ARL": "#0072B2", "channel · ARL": "#E69F00", "spatial · ARL": "#56B4E9",
                  "mixed · NAL": "#CC79A7", "no attention": "#999999"},
    fallback_colors=("#000000", "#F0E442", "#D55E00", "#009E73"),
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


# --------------------------------------------------------------------------- helpers

def value_range(*arrays, symmetric: bool = False) -> tuple[float, float]:
    """(min, max) over the finite values of all arrays; symmetric gives (-m, m) with
    m = max |value|. A constant range is widened by 1 % of the value (at least 1e-3) either
    side so that a colour bar can still be drawn around it."""
    finite = [np.asarray(a, dtype=np.float64)[np.isfinite(a)] for a in arrays if a is not None and np.size(a)]
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


def model_color(label: str, index: int = 0) -> str:
    style = current_style()
    fallback = style.fallback_colors or _FALLBACK_COLORS
    return style.model_colors.get(label) or MODEL_COLORS.get(label, fallback[index % len(fallback)])


def image_uri(image: np.ndarray) -> str:
    """A uint8 H x W x 3 array as a PNG data URI (compact in a figure's JSON)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _decode_uri(source) -> np.ndarray:
    from PIL import Image

    if isinstance(source, Image.Image):
        return np.asarray(source.convert("RGB"))
    match = re.match(r"data:image/[a-z]+;base64,(.*)", str(source), re.S)
    if not match:
        raise ValueError("only data URIs and PIL images can be redrawn")
    with Image.open(io.BytesIO(base64.b64decode(match.group(1)))) as img:
        return np.asarray(img.convert("RGB"))


def _mpl_cmap(colorscale):
    """A matplotlib colormap from a plotly colorscale (a name or [(pos, colour), ...])."""
    import matplotlib
    from matplotlib.colors import LinearSegmentedColormap, to_rgb

    if colorscale is None:
        colorscale = MASK_SCALE
    colorscale = current_style().scale(colorscale)
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


def blend(image: np.ndarray, map_: np.ndarray, *, zmin: float, zmax: float, colorscale=MASK_SCALE,
          opacity: float = 0.6) -> np.ndarray:
    """The map coloured with `colorscale` over the image (same H x W), as uint8 RGB: what an
    overlay looks like, baked into pixels (for thumbnails)."""
    cmap = _mpl_cmap(colorscale)
    span = (zmax - zmin) or 1.0
    coloured = cmap(np.clip((np.asarray(map_, dtype=np.float64) - zmin) / span, 0, 1))[..., :3] * 255.0
    out = (1 - opacity) * np.asarray(image, dtype=np.float64) + opacity * coloured
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _domain(a: float, b: float) -> list[float]:
    """An axis domain clipped to [0, 1] (sums of fractions can overshoot by 1e-16)."""
    return [min(1.0, max(0.0, float(a))), min(1.0, max(0.0, float(b)))]


def _font(size: int) -> dict:
    return {"size": size, "family": FONT_FAMILY}


def _image_axes(anchor: str, domain_x, domain_y, *, title: str | None = None, size: int = FONT_SIZE) -> tuple[dict, dict]:
    """An x/y axis pair that shows an array like an image: square pixels, row 0 on top, no ticks."""
    x = {"domain": _domain(*domain_x), "anchor": "y" + anchor, "showticklabels": False, "showgrid": False,
         "zeroline": False, "ticks": "", "constrain": "domain"}
    y = {"domain": _domain(*domain_y), "anchor": "x" + anchor, "showticklabels": False, "showgrid": False,
         "zeroline": False, "ticks": "", "autorange": "reversed", "scaleanchor": "x" + anchor,
         "constrain": "domain"}
    if title:
        y["title"] = {"text": title, "font": _font(size)}
    return x, y


def _colorbar(title: str, x: float, y: float = 0.5, length: float = 0.9, size: int = FONT_SIZE) -> dict:
    return {"title": {"text": title, "side": "right", "font": _font(size - 2)}, "x": x, "xanchor": "left",
            "y": y, "yanchor": "middle", "len": length, "thickness": 14, "tickfont": _font(size - 3),
            "outlinewidth": 0}


def _heatmap(z: np.ndarray, *, axis: str = "", zmin=None, zmax=None, colorscale=None, coloraxis=None,
             zmid=None, colorbar=None, value_name: str = "value", opacity: float | None = None,
             customdata=None, hovertemplate=None) -> dict:
    trace = {"type": "heatmap", "z": np.asarray(z, dtype=np.float32), "xaxis": "x" + axis, "yaxis": "y" + axis,
             "hovertemplate": hovertemplate or f"x %{{x}}, y %{{y}}<br>{value_name} = %{{z:.4g}}<extra></extra>"}
    if coloraxis:
        trace["coloraxis"] = coloraxis
    else:
        trace.update({"zmin": zmin, "zmax": zmax, "colorscale": current_style().scale(colorscale or MASK_SCALE)})
        # A diverging scale is centred on zmid only when the range straddles it; otherwise
        # plotly would stretch the range and the colour bar would no longer show zmin..zmax.
        if zmid is not None and zmin is not None and zmax is not None and zmin < zmid < zmax:
            trace["zmid"] = zmid
        if colorbar is None:
            trace["showscale"] = False
        else:
            trace["colorbar"] = colorbar
    if opacity is not None:
        trace["opacity"] = opacity
    if customdata is not None:
        trace["customdata"] = customdata
    return trace


def _layout(height: int, size: int, *, title: str | None = None, margin=None, **extra) -> dict:
    layout = {"height": int(height), "font": _font(size), "margin": margin or {"l": 10, "r": 10, "t": 50, "b": 10},
              "plot_bgcolor": "white", "paper_bgcolor": "white", "hoverlabel": {"font": _font(size - 1)}}
    if title:
        layout["title"] = {"text": title, "font": _font(size + 2), "x": 0.01, "xanchor": "left"}
    layout.update(extra)
    return layout


def _title_annotation(text: str, x: float, y: float, size: int, *, yanchor="bottom", xanchor="center") -> dict:
    return {"text": text, "x": x, "y": y, "xref": "paper", "yref": "paper", "showarrow": False,
            "xanchor": xanchor, "yanchor": yanchor, "font": _font(size)}


# --------------------------------------------------------------------------- maps

@dataclass
class Panel:
    """One map in a row of maps: values h x w, the colour range and how to label it."""
    title: str
    z: np.ndarray
    zmin: float
    zmax: float
    colorscale: str = MASK_SCALE
    colorbar_title: str = ""
    value_name: str = "value"
    zmid: float | None = None


def panels_figure(panels: Sequence[Panel], *, height: int = 380, font_size: int = FONT_SIZE,
                  title: str | None = None) -> go.Figure:
    """Maps side by side, each with its own horizontal colour bar underneath (its range may
    be shared with others: the caller decides through zmin/zmax)."""
    n = max(1, len(panels))
    gap = 0.03
    width = (1.0 - gap * (n - 1)) / n
    bar_px = 62  # colour bar with its tick labels and title, below the maps
    top_px = 70 if title else 40
    bottom = bar_px / height
    data, layout = [], _layout(height, font_size, title=title, margin={"l": 10, "r": 10, "t": top_px, "b": 10})
    annotations = []
    for i, panel in enumerate(panels):
        axis = "" if i == 0 else str(i + 1)
        x0 = i * (width + gap)
        xa, ya = _image_axes(axis, (x0, x0 + width), (bottom, 1.0), size=font_size)
        layout["xaxis" + axis], layout["yaxis" + axis] = xa, ya
        bar = {"orientation": "h", "x": x0 + width / 2, "xanchor": "center", "y": 0.0, "yanchor": "bottom",
               "len": width * 0.9, "thickness": 12, "tickfont": _font(font_size - 3), "outlinewidth": 0,
               "nticks": 5}
        data.append(_heatmap(panel.z, axis=axis, zmin=panel.zmin, zmax=panel.zmax, colorscale=panel.colorscale,
                             zmid=panel.zmid, value_name=panel.value_name, colorbar=bar))
        annotations.append(_title_annotation(panel.title, x0 + width / 2, 1.0, font_size))
    layout["annotations"] = annotations
    return go.Figure(data=data, layout=layout)


def overlay_figure(image: np.ndarray, z: np.ndarray, *, opacity: float, zmin: float, zmax: float,
                   colorscale: str = MASK_SCALE, title: str | None = None, colorbar_title: str = "M",
                   value_name: str = "M", height: int = 440, font_size: int = FONT_SIZE) -> go.Figure:
    """A map (already at the image's resolution) over the image, with an opacity; hover
    shows the map's raw value at each pixel."""
    image = np.asarray(image, dtype=np.uint8)
    if image.shape[:2] != np.shape(z):
        raise ValueError(f"the map {np.shape(z)} must have the image's size {image.shape[:2]}")
    xa, ya = _image_axes("", (0.0, 0.86), (0.0, 1.0))
    data = [
        {"type": "image", "source": image_uri(image), "xaxis": "x", "yaxis": "y", "hoverinfo": "skip"},
        _heatmap(z, zmin=zmin, zmax=zmax, colorscale=colorscale, value_name=value_name, opacity=opacity,
                 colorbar=_colorbar(colorbar_title, 0.87, size=font_size)),
    ]
    layout = _layout(height, font_size, title=title, xaxis=xa, yaxis=ya,
                     margin={"l": 10, "r": 10, "t": 50 if title else 10, "b": 10})
    return go.Figure(data=data, layout=layout)


def mosaic(maps: np.ndarray, cols: int, gap: int = 1, row_gap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tile k maps (k x h x w) into one array, `gap` NaN pixels between columns and `row_gap`
    (default `gap`) between rows, the first row starting after one row gap (room for a label);
    also returns an array of the same shape giving each pixel's tile index (-1 in gaps)."""
    maps = np.asarray(maps, dtype=np.float32)
    k, h, w = maps.shape
    cols = max(1, min(cols, k))
    rows = math.ceil(k / cols)
    rg = gap if row_gap is None else row_gap
    out = np.full((rows * (h + rg), cols * (w + gap) - gap), np.nan, dtype=np.float32)
    index = np.full(out.shape, -1, dtype=np.int32)
    for i in range(k):
        r, c = divmod(i, cols)
        y0, x0 = rg + r * (h + rg), c * (w + gap)
        out[y0:y0 + h, x0:x0 + w] = maps[i]
        index[y0:y0 + h, x0:x0 + w] = i
    return out, index


def channel_grid_figure(maps: np.ndarray, labels: Sequence[str], *, zmin: float, zmax: float,
                        colorscale: str = MASK_SCALE, cols: int = 8, title: str | None = None,
                        colorbar_title: str = "", value_name: str = "value", font_size: int = FONT_SIZE,
                        tile_px: int = 110) -> go.Figure:
    """Individual channels (k x h x w) as a grid of tiles with one shared colour scale. Drawn
    as a single mosaic heatmap (one trace, fast to send); hover names the channel."""
    maps = np.asarray(maps, dtype=np.float32)
    k, h, w = maps.shape
    gap = max(1, round(max(h, w) / 16))
    row_gap = max(2, round(h * 0.3))  # room for each tile's label above it
    tiled, index = mosaic(maps, cols, gap, row_gap)
    cols = max(1, min(cols, k))
    rows = math.ceil(k / cols)
    names = np.array(list(labels) + [""], dtype=object)
    custom = names[index]
    heat = _heatmap(tiled, zmin=zmin, zmax=zmax, colorscale=colorscale, customdata=custom,
                    colorbar=_colorbar(colorbar_title, 1.005, size=font_size),
                    hovertemplate=f"%{{customdata}}<br>{value_name} = %{{z:.4g}}<extra></extra>")
    xa, ya = _image_axes("", (0.0, 1.0), (0.0, 1.0))
    annotations = []
    for i, label in enumerate(labels):
        r, c = divmod(i, cols)
        annotations.append({"text": label, "x": c * (w + gap) + (w - 1) / 2, "y": row_gap + r * (h + row_gap) - 0.5,
                            "xref": "x", "yref": "y", "showarrow": False, "yanchor": "bottom",
                            "font": _font(font_size - 3)})
    height = int(rows * tile_px * (1 + row_gap / h) + (60 if title else 20))
    layout = _layout(height, font_size, title=title, xaxis=xa, yaxis=ya, annotations=annotations,
                     margin={"l": 10, "r": 90, "t": 60 if title else 10, "b": 10})
    return go.Figure(data=[heat], layout=layout)


# --------------------------------------------------------------------------- charts

def histogram_figure(counts: np.ndarray, edges: np.ndarray, *, title: str | None = None, x_title: str = "value",
                     color: str = "#3b528b", height: int = 320, font_size: int = FONT_SIZE,
                     log_y: bool = False) -> go.Figure:
    """A histogram from precomputed (fractions, edges): small to send whatever the tensor size."""
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    bar = {"type": "bar", "x": centres, "y": counts, "width": np.diff(edges), "marker": {"color": color},
           "customdata": np.stack([edges[:-1], edges[1:]], axis=1),
           "hovertemplate": "%{customdata[0]:.3g} to %{customdata[1]:.3g}: %{y:.2%}<extra></extra>"}
    layout = _layout(height, font_size, title=title, bargap=0.02,
                     xaxis={"title": {"text": x_title}, "showgrid": False},
                     yaxis={"title": {"text": "fraction of values"}, "tickformat": ".2~%" if not log_y else None,
                            "type": "log" if log_y else "linear", "gridcolor": "#e5e5e5"},
                     margin={"l": 70, "r": 10, "t": 50 if title else 10, "b": 60})
    return go.Figure(data=[bar], layout=layout)


def histograms_figure(hists: Mapping[str, tuple[np.ndarray, np.ndarray]], *, x_titles: Mapping[str, str] | None = None,
                      colors: Mapping[str, str] | None = None, height: int = 320, font_size: int = FONT_SIZE,
                      title: str | None = None) -> go.Figure:
    """Several histograms side by side, each on its own x range."""
    n = max(1, len(hists))
    gap = 0.07
    width = (1 - gap * (n - 1)) / n
    data, layout, annotations = [], _layout(height, font_size, title=title, bargap=0.02, showlegend=False,
                                            margin={"l": 70, "r": 10, "t": 80 if title else 45, "b": 60}), []
    for i, (name, (counts, edges)) in enumerate(hists.items()):
        axis = "" if i == 0 else str(i + 1)
        x0 = i * (width + gap)
        edges = np.asarray(edges, dtype=np.float64)
        data.append({"type": "bar", "x": (edges[:-1] + edges[1:]) / 2, "y": np.asarray(counts, dtype=np.float64),
                     "width": np.diff(edges), "xaxis": "x" + axis, "yaxis": "y" + axis, "name": name,
                     "marker": {"color": (colors or {}).get(name, model_color(name, i))},
                     "hovertemplate": "%{x:.3g}: %{y:.2%}<extra>" + name + "</extra>"})
        layout["xaxis" + axis] = {"domain": _domain(x0, x0 + width), "anchor": "y" + axis, "showgrid": False,
                                  "title": {"text": (x_titles or {}).get(name, "value")}}
        layout["yaxis" + axis] = {"anchor": "x" + axis, "tickformat": ".2~%", "gridcolor": "#e5e5e5",
                                  "title": {"text": "fraction of values" if i == 0 else ""}}
        annotations.append(_title_annotation(name, x0 + width / 2, 1.02, font_size))
    layout["annotations"] = annotations
    return go.Figure(data=data, layout=layout)


def predictions_figure(labels: Sequence[str], probs: Sequence[float], *, k: int = 5, height: int | None = None,
                       font_size: int = FONT_SIZE, title: str | None = None) -> go.Figure:
    """Top-k classes as horizontal bars, the most likely on top, probabilities written out."""
    probs = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs)[:k]
    names = [str(labels[i]) for i in order][::-1]
    values = probs[order][::-1]
    bar = {"type": "bar", "orientation": "h", "x": values, "y": names, "marker": {"color": "#3b528b"},
           "text": [f"{v:.1%}" for v in values], "textposition": "outside", "cliponaxis": False,
           "textfont": _font(font_size),
           "hovertemplate": "%{y}: %{x:.2%}<extra></extra>"}
    layout = _layout(height or 70 + 44 * len(names), font_size, title=title,
                     xaxis={"range": [0, 1.18], "tickformat": ".0%", "gridcolor": "#e5e5e5",
                            "title": {"text": "probability"}},
                     yaxis={"automargin": True, "tickfont": _font(font_size)},
                     margin={"l": 10, "r": 20, "t": 50 if title else 10, "b": 50})
    return go.Figure(data=[bar], layout=layout)


# --------------------------------------------------------------------------- network diagram

def network_figure(outline: Mapping, thumbnails: Mapping[str, np.ndarray], *, selected: str | None = None,
                   captions: Mapping[str, str] | None = None, width_px: int = 1050,
                   font_size: int = FONT_SIZE) -> go.Figure:
    """The network left to right: stem, per stage its residual units (small boxes) and its
    attention modules (big blocks showing each module's mask thumbnail over the image), the
    final units and the classifier. Each module block carries an invisible marker whose
    customdata is the module name, so a click (plotly selection) tells which module it was.

    outline: as from `resattn.stats.network_outline`; thumbnails: module name -> uint8 RGB.
    The height is chosen for a page `width_px` wide (the drawing keeps its proportions)."""
    shapes, annotations, images = [], [], []
    xs, ys, names, hover = [], [], [], []
    x = 0.0
    unit_w, unit_h, block, gap = 0.35, 0.9, 2.4, 0.25
    mid = 0.0

    def box(x0, width, height, fill, line="#555", label=None, dash=None):
        shapes.append({"type": "rect", "x0": x0, "x1": x0 + width, "y0": mid - height / 2, "y1": mid + height / 2,
                       "xref": "x", "yref": "y", "fillcolor": fill, "line": {"color": line, "width": 1.5,
                                                                              "dash": dash or "solid"},
                       "layer": "below"})
        if label:
            annotations.append({"text": label, "x": x0 + width / 2, "y": mid - height / 2 - 0.08, "xref": "x",
                                "yref": "y", "showarrow": False, "yanchor": "top", "font": _font(font_size - 3)})

    def arrow(x0, x1):
        annotations.append({"x": x1, "y": mid, "ax": x0, "ay": mid, "xref": "x", "yref": "y", "axref": "x",
                            "ayref": "y", "showarrow": True, "arrowhead": 2, "arrowsize": 1, "arrowwidth": 1.5,
                            "arrowcolor": "#888", "text": ""})

    box(x, 0.8, 1.2, "#eeeeee", label="stem")
    x += 0.8
    stage_spans = []
    for stage in outline.get("stages", []):
        start = x + gap
        for _ in range(int(stage.get("units", 0))):
            arrow(x, x + gap)
            x += gap
            box(x, unit_w, unit_h, "#dfe7f2")
            x += unit_w
        for module in stage.get("modules", []):
            name = module["name"]
            arrow(x, x + gap)
            x += gap
            is_selected = name == selected
            box(x, block, block, "#fff7e0" if is_selected else "#ffffff",
                line="#d9480f" if is_selected else "#333", dash=None)
            if name in thumbnails:
                images.append({"source": image_uri(thumbnails[name]), "xref": "x", "yref": "y",
                               "x": x + 0.1, "y": mid + block / 2 - 0.1, "sizex": block - 0.2,
                               "sizey": block - 0.2, "xanchor": "left", "yanchor": "top",
                               "sizing": "stretch", "layer": "above"})
            else:
                annotations.append({"text": "no mask<br>(baseline)", "x": x + block / 2, "y": mid, "xref": "x",
                                    "yref": "y", "showarrow": False, "font": _font(font_size - 2)})
            annotations.append({"text": f"<b>{name}</b>", "x": x + block / 2, "y": mid + block / 2 + 0.05,
                                "xref": "x", "yref": "y", "showarrow": False, "yanchor": "bottom",
                                "font": _font(font_size - 1)})
            if captions and name in captions:
                annotations.append({"text": captions[name], "x": x + block / 2, "y": mid - block / 2 - 0.05,
                                    "xref": "x", "yref": "y", "showarrow": False, "yanchor": "top",
                                    "font": _font(font_size - 3)})
            xs.append(x + block / 2)
            ys.append(mid)
            names.append(name)
            hover.append(f"{name}: click to open in the explorer")
            x += block
        stage_spans.append((stage["index"], start, x))
    for _ in range(int(outline.get("final_units", 0))):
        arrow(x, x + gap)
        x += gap
        box(x, unit_w, unit_h, "#dfe7f2")
        x += unit_w
    arrow(x, x + gap)
    x += gap
    box(x, 1.0, 1.2, "#eeeeee", label="pool · FC")
    x += 1.0
    top = mid + block / 2 + 0.75
    for index, x0, x1 in stage_spans:
        annotations.append({"text": f"stage {index}", "x": (x0 + x1) / 2, "y": top, "xref": "x", "yref": "y",
                            "showarrow": False, "font": _font(font_size), "yanchor": "bottom"})
        shapes.append({"type": "line", "x0": x0, "x1": x1, "y0": top - 0.05, "y1": top - 0.05, "xref": "x",
                       "yref": "y", "line": {"color": "#999", "width": 2}})
    # Invisible square markers as large as the blocks (at a page `width_px` wide): the click targets.
    block_px = block * width_px / (x + 0.4)
    clicks = {"type": "scatter", "mode": "markers", "x": xs, "y": ys, "customdata": names,
              "marker": {"size": max(30, int(block_px * 0.9)), "symbol": "square", "color": "rgba(0,0,0,0)",
                         "opacity": 1},
              "hovertext": hover, "hoverinfo": "text", "showlegend": False, "name": "modules",
              "selected": {"marker": {"opacity": 1}}, "unselected": {"marker": {"opacity": 1}}}
    span_x = [-0.2, x + 0.2]
    span_y = [mid - block / 2 - 1.0, top + 0.5]
    height = int(min(480, max(200, width_px * (span_y[1] - span_y[0]) / (span_x[1] - span_x[0]))) + 10)
    layout = _layout(height, font_size, shapes=shapes, annotations=annotations, images=images,
                     xaxis={"range": span_x, "visible": False, "fixedrange": True},
                     yaxis={"range": span_y, "visible": False, "fixedrange": True, "scaleanchor": "x"},
                     margin={"l": 5, "r": 5, "t": 5, "b": 5}, dragmode=False, clickmode="event+select")
    return go.Figure(data=[clicks], layout=layout)


# --------------------------------------------------------------------------- compare

@dataclass
class CompareColumn:
    """One model in the compare grid: a header and one map (at image size) per module. A
    module whose map does not exist (the baseline has no mask) maps to None; a module the
    model does not have is left out. `coloraxis` names the colour axis of every cell, or
    maps module name -> colour axis (one scale per row)."""
    title: str
    subtitle: str
    maps: Mapping[str, np.ndarray | None]
    coloraxis: str | Mapping[str, str] = "coloraxis"

    def axis_for(self, module: str) -> str:
        return self.coloraxis if isinstance(self.coloraxis, str) else self.coloraxis[module]


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


def compare_figure(columns: Sequence[CompareColumn], modules: Sequence[str], coloraxes: Mapping[str, ColorAxis],
                   *, image: np.ndarray | None = None, opacity: float = 0.65, font_size: int = PROJECTOR_FONT_SIZE,
                   width_px: int = 1100, value_name: str = "M", empty_text: str = "no mask",
                   absent_text: str = "no such<br>module") -> go.Figure:
    """Rows = modules, columns = models. Each cell shows the map over the image (when given)
    with the colour scale of its colour axis. Colour axes shared by the whole grid get a
    horizontal colour bar under it; per-row axes (ColorAxis.row) a vertical bar beside the row.

    The figure stretches to the page's width; its height is chosen so that cells are square
    when the page is `width_px` wide (wider pages leave space around the cells, never clip)."""
    n_cols, n_rows = max(1, len(columns)), max(1, len(modules))
    full_bars = [name for name, axis in coloraxes.items() if axis.row is None]
    row_bars = len(full_bars) < len(coloraxes)
    slots = 1 + max((axis.slot for axis in coloraxes.values() if axis.row is not None), default=0)
    slot_px = 100  # one vertical colour bar with its ticks and title
    left, right = 40 / width_px, ((10 + slots * slot_px) / width_px if row_bars else 0.0)
    hgap = 8 / width_px
    cell_w = (1 - left - right - hgap * (n_cols - 1)) / n_cols
    cell_px = cell_w * width_px
    header_px = 3 * font_size * 1.25 + 12
    bars_px = (2.6 * font_size + 30) if full_bars else 0
    vgap_px = 10
    height = int(header_px + n_rows * cell_px + (n_rows - 1) * vgap_px + bars_px + 10)
    cell_h, vgap = cell_px / height, vgap_px / height
    top = 1 - header_px / height
    data, layout_extra, annotations = [], {}, []
    uri = image_uri(image) if image is not None else None
    for c, column in enumerate(columns):
        x0 = left + c * (cell_w + hgap)
        annotations.append(_title_annotation(f"<b>{column.title}</b><br>{column.subtitle}", x0 + cell_w / 2,
                                             top + 4 / height, font_size))
        for r, module in enumerate(modules):
            i = r * n_cols + c
            axis = "" if i == 0 else str(i + 1)
            y1 = top - r * (cell_h + vgap)
            xa, ya = _image_axes(axis, (x0, x0 + cell_w), (y1 - cell_h, y1))
            layout_extra["xaxis" + axis], layout_extra["yaxis" + axis] = xa, ya
            z = column.maps.get(module)
            if uri is not None:
                data.append({"type": "image", "source": uri, "xaxis": "x" + axis, "yaxis": "y" + axis,
                             "hoverinfo": "skip"})
            if z is not None:
                data.append(_heatmap(z, axis=axis, coloraxis=column.axis_for(module), value_name=value_name,
                                     opacity=opacity if uri is not None else None,
                                     hovertemplate=f"{column.title}, {module}<br>{value_name} = %{{z:.4g}}<extra></extra>"))
            else:
                annotations.append({"text": empty_text if module in column.maps else absent_text,
                                    "x": x0 + cell_w / 2, "y": y1 - cell_h / 2, "xref": "paper",
                                    "yref": "paper", "showarrow": False, "font": _font(font_size),
                                    "bgcolor": "rgba(255,255,255,0.85)"})
                if uri is None:
                    data.append({"type": "heatmap", "z": [[np.nan]], "xaxis": "x" + axis, "yaxis": "y" + axis,
                                 "showscale": False, "hoverinfo": "skip"})
            if c == 0:
                annotations.append({"text": module, "x": left - 6 / width_px, "y": y1 - cell_h / 2, "xref": "paper",
                                    "yref": "paper", "showarrow": False, "textangle": -90, "xanchor": "right",
                                    "yanchor": "middle", "font": _font(font_size)})
    grid_right = left + n_cols * cell_w + hgap * (n_cols - 1)
    for name, axis in coloraxes.items():
        if axis.row is None:
            j, n_full = full_bars.index(name), len(full_bars)
            span = (grid_right - left) / n_full
            bar = {"orientation": "h", "x": left + span * (j + 0.5), "xanchor": "center", "y": 0.0,
                   "yanchor": "bottom", "len": span * 0.8, "thickness": 16, "tickfont": _font(font_size - 2),
                   "outlinewidth": 0, "title": {"text": axis.title, "side": "top", "font": _font(font_size)}}
        else:
            y1 = top - axis.row * (cell_h + vgap)
            bar = _colorbar(axis.title, grid_right + (10 + axis.slot * slot_px) / width_px, y=y1 - cell_h / 2,
                            length=cell_h * 0.95, size=font_size)
        spec = {"cmin": axis.zmin, "cmax": axis.zmax, "colorscale": current_style().scale(axis.colorscale),
                "colorbar": bar}
        if axis.zmid is not None and axis.zmin < axis.zmid < axis.zmax:
            spec["cmid"] = axis.zmid
        layout_extra[name] = spec
    layout = _layout(height, font_size, annotations=annotations, margin={"l": 4, "r": 4, "t": 4, "b": 4},
                     **layout_extra)
    layout["meta"] = {"suggested_width": width_px}
    return go.Figure(data=data, layout=layout)


def stats_figure(rows: Sequence[Mapping], stats: Sequence[str], labels: Mapping[str, str], *, cols: int = 3,
                 font_size: int = PROJECTOR_FONT_SIZE, panel_px: int = 300,
                 colors: Mapping[str, str] | None = None) -> go.Figure:
    """Grouped bars: one panel per statistic, stages on the x axis, one bar colour per model.

    rows: dicts with "model", "stage" and one value per statistic."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    stages = sorted({int(r["stage"]) for r in rows})
    n = max(1, len(stats))
    cols = min(cols, n)
    n_rows = math.ceil(n / cols)
    hgap = 0.08
    legend_px = 20 + (font_size + 16) * math.ceil(len(models) / 3)
    title_px = font_size + 14
    height = int(n_rows * (panel_px + title_px) + legend_px + 40)
    plot_h = height - legend_px - 40  # the paper area (margins t = legend, b = 40)
    pw = (1 - hgap * (cols - 1)) / cols
    plot_top = 1.0
    vgap = (title_px + 40) / plot_h if n_rows > 1 else 0.0
    ph = (1.0 - title_px / plot_h - vgap * (n_rows - 1)) / n_rows
    data, layout_extra, annotations = [], {}, []
    for i, stat in enumerate(stats):
        r, c = divmod(i, cols)
        axis = "" if i == 0 else str(i + 1)
        x0 = c * (pw + hgap)
        y1 = plot_top - title_px / plot_h - r * (ph + vgap)
        layout_extra["xaxis" + axis] = {"domain": _domain(x0, x0 + pw), "anchor": "y" + axis, "type": "category",
                                        "tickfont": _font(font_size - 2)}
        layout_extra["yaxis" + axis] = {"domain": _domain(y1 - ph, y1), "anchor": "x" + axis, "gridcolor": "#e5e5e5",
                                        "tickfont": _font(font_size - 3), "zeroline": True, "zerolinecolor": "#999"}
        annotations.append(_title_annotation(labels.get(stat, stat), x0 + pw / 2, y1 + 6 / plot_h, font_size - 1))
        for m, model in enumerate(models):
            values = {int(rr["stage"]): rr.get(stat) for rr in rows if rr["model"] == model}
            data.append({"type": "bar", "name": model, "legendgroup": model, "showlegend": i == 0,
                         "x": [f"stage {s}" for s in stages],
                         "y": [values.get(s, None) for s in stages], "xaxis": "x" + axis, "yaxis": "y" + axis,
                         "marker": {"color": (colors or {}).get(model, model_color(model, m))},
                         "hovertemplate": f"{model}, %{{x}}<br>{labels.get(stat, stat)} = %{{y:.3f}}<extra></extra>"})
    layout = _layout(height, font_size, annotations=annotations, barmode="group",
                     legend={"orientation": "h", "x": 0, "y": 1, "yanchor": "bottom", "font": _font(font_size),
                             "yref": "paper"},
                     margin={"l": 60, "r": 10, "t": legend_px, "b": 40}, **layout_extra)
    return go.Figure(data=data, layout=layout)


def gain_figure(profiles: Mapping[str, Sequence[Mapping]], *, font_size: int = FONT_SIZE, height: int = 400,
                colors: Mapping[str, str] | None = None) -> go.Figure:
    """Left: each module's combination gain mean|H| / mean|T| per model (1 = unchanged);
    right: the running product of those gains along the depth of the network."""
    data = []
    for i, (model, rows) in enumerate(profiles.items()):
        colour = (colors or {}).get(model, model_color(model, i))
        names = [r["name"] for r in rows]
        gains = [r["gain"] for r in rows]
        running = list(np.cumprod(gains)) if gains else []
        data.append({"type": "bar", "name": model, "legendgroup": model, "x": names, "y": gains, "xaxis": "x",
                     "yaxis": "y", "marker": {"color": colour},
                     "hovertemplate": f"{model}, %{{x}}<br>mean|H| / mean|T| = %{{y:.3f}}<extra></extra>"})
        data.append({"type": "scatter", "mode": "lines+markers", "name": model, "legendgroup": model,
                     "showlegend": False, "x": names, "y": running, "xaxis": "x2", "yaxis": "y2",
                     "line": {"color": colour, "width": 3}, "marker": {"size": 10},
                     "hovertemplate": f"{model}, after %{{x}}<br>product of gains = %{{y:.3f}}<extra></extra>"})
    layout = _layout(height, font_size, barmode="group",
                     xaxis={"domain": [0, 0.45], "anchor": "y", "type": "category"},
                     yaxis={"anchor": "x", "title": {"text": "mean|H| / mean|T|"}, "gridcolor": "#e5e5e5",
                            "rangemode": "tozero"},
                     xaxis2={"domain": [0.55, 1], "anchor": "y2", "type": "category"},
                     yaxis2={"anchor": "x2", "title": {"text": "product so far"}, "gridcolor": "#e5e5e5",
                             "rangemode": "tozero"},
                     shapes=[{"type": "line", "xref": "x domain", "yref": "y", "x0": 0, "x1": 1, "y0": 1, "y1": 1,
                              "line": {"color": "#333", "dash": "dash", "width": 1.5}},
                             {"type": "line", "xref": "x2 domain", "yref": "y2", "x0": 0, "x1": 1, "y0": 1, "y1": 1,
                              "line": {"color": "#333", "dash": "dash", "width": 1.5}}],
                     annotations=[_title_annotation("gain of each module's combination", 0.225, 1.0, font_size),
                                  _title_annotation("compounded over the modules", 0.775, 1.0, font_size)],
                     legend={"orientation": "h", "y": -0.15, "x": 0},
                     margin={"l": 70, "r": 10, "t": 45, "b": 40})
    return go.Figure(data=data, layout=layout)


# --------------------------------------------------------------------------- matplotlib export

def _plain(text) -> str:
    if text is None:
        return ""
    text = str(text).replace("<br>", "\n")
    return re.sub(r"<[^>]+>", "", text)


def _pt(px) -> float:
    return float(px or FONT_SIZE) * 0.75


def _axis_key(ref: str, kind: str) -> str:
    suffix = ref[1:] if ref and len(ref) > 1 else ""
    return f"{kind}axis{suffix}"


def to_matplotlib(fig: go.Figure):
    """Redraw a figure made by this module with matplotlib (heatmaps, images, bars, lines,
    shapes, layout images, annotations, colour bars), for PNG/SVG export."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    layout = fig.layout
    meta = layout.meta if isinstance(layout.meta, dict) else {}
    width_px = layout.width or meta.get("suggested_width") or 1100
    height_px = layout.height or 450
    dpi = 100
    out = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    out.patch.set_facecolor("white")
    margin = layout.margin
    ml, mr, mt, mb = (margin.l or 0) / width_px, (margin.r or 0) / width_px, (margin.t or 0) / height_px, (margin.b or 0) / height_px
    plot_w, plot_h = 1 - ml - mr, 1 - mt - mb

    def paper(x, y):
        return ml + x * plot_w, mb + y * plot_h

    axes: dict[str, object] = {}
    bar_groups: dict[str, list] = {}
    for trace in fig.data:
        key = (getattr(trace, "xaxis", None) or "x") + (getattr(trace, "yaxis", None) or "y")
        if key not in axes:
            xa = layout[_axis_key(getattr(trace, "xaxis", None) or "x", "x")]
            ya = layout[_axis_key(getattr(trace, "yaxis", None) or "y", "y")]
            xd, yd = xa.domain or (0, 1), ya.domain or (0, 1)
            x0, y0 = paper(xd[0], yd[0])
            ax = out.add_axes((x0, y0, (xd[1] - xd[0]) * plot_w, (yd[1] - yd[0]) * plot_h))
            ax._plotly_axes = (xa, ya)
            axes[key] = ax
        if trace.type == "bar":
            bar_groups.setdefault(key, []).append(trace)

    mappables: dict[str, tuple] = {}
    categories: dict[str, list] = {}
    for trace in fig.data:
        key = (getattr(trace, "xaxis", None) or "x") + (getattr(trace, "yaxis", None) or "y")
        ax = axes[key]
        if trace.type == "image":
            img = _decode_uri(trace.source) if trace.source is not None else np.asarray(trace.z, dtype=np.uint8)
            h, w = img.shape[:2]
            ax.imshow(img, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
        elif trace.type == "heatmap":
            z = np.asarray(trace.z, dtype=np.float64)
            h, w = z.shape
            if trace.coloraxis:
                ca = layout[trace.coloraxis]
                cmap, vmin, vmax = _mpl_cmap(ca.colorscale), ca.cmin, ca.cmax
            else:
                cmap, vmin, vmax = _mpl_cmap(trace.colorscale), trace.zmin, trace.zmax
            im = ax.imshow(np.ma.masked_invalid(z), cmap=cmap, vmin=vmin, vmax=vmax,
                           alpha=trace.opacity if trace.opacity is not None else None,
                           extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
            if trace.coloraxis:
                mappables.setdefault(trace.coloraxis, (im, ax, layout[trace.coloraxis].colorbar))
            elif trace.showscale is not False:
                mappables[f"trace{id(trace)}"] = (im, ax, trace.colorbar)
        elif trace.type == "bar":
            group = bar_groups[key]
            grouped = (layout.barmode or "group") == "group" and len(group) > 1
            slot = group.index(trace)
            horizontal = trace.orientation == "h"
            cats = list(trace.y if horizontal else trace.x)
            vals = np.asarray(trace.x if horizontal else trace.y, dtype=np.float64)
            if cats and isinstance(cats[0], str):
                known = categories.setdefault(key, [])
                for c in cats:
                    if c not in known:
                        known.append(c)
                pos = np.array([known.index(c) for c in cats], dtype=np.float64)
                width = 0.8
            else:
                pos = np.asarray(cats, dtype=np.float64)
                width = np.asarray(trace.width, dtype=np.float64) if trace.width is not None else 0.8
            if grouped:
                width = 0.8 / len(group)
                pos = pos - 0.4 + width * (slot + 0.5)
            colour = trace.marker.color if isinstance(trace.marker.color, str) else None
            if horizontal:
                ax.barh(pos, vals, height=width, color=colour, label=trace.name)
                if trace.text:
                    for p, v, t in zip(pos, vals, trace.text):
                        ax.text(v, p, " " + str(t), va="center", fontsize=_pt(layout.font.size))
            else:
                ax.bar(pos, np.nan_to_num(vals), width=width, color=colour, label=trace.name)
            if cats and isinstance(cats[0], str):
                ticks = range(len(categories[key]))
                (ax.set_yticks if horizontal else ax.set_xticks)(list(ticks), categories[key])
        elif trace.type == "scatter" and trace.mode and "lines" in trace.mode:
            xs = list(trace.x)
            if xs and isinstance(xs[0], str):
                known = categories.setdefault(key, [])
                for c in xs:
                    if c not in known:
                        known.append(c)
                xs = [known.index(c) for c in xs]
                ax.set_xticks(range(len(known)), known)
            ax.plot(xs, list(trace.y), "-o", color=trace.line.color, label=trace.name)

    for key, ax in axes.items():
        xa, ya = ax._plotly_axes
        image_like = ya.autorange == "reversed" or ya.scaleanchor
        if image_like:
            ax.set_aspect("equal", adjustable="box")
            if ya.autorange == "reversed" and not ax.yaxis_inverted():
                ax.invert_yaxis()
        if xa.range is not None:
            ax.set_xlim(xa.range)
        if ya.range is not None and ya.autorange != "reversed":
            ax.set_ylim(ya.range)
        if xa.visible is False or ya.visible is False or (image_like and xa.showticklabels is False):
            ax.set_axis_off()
        if ya.type == "log":
            ax.set_yscale("log")
        if xa.title and xa.title.text:
            ax.set_xlabel(_plain(xa.title.text), fontsize=_pt(layout.font.size))
        if ya.title and ya.title.text:
            ax.set_ylabel(_plain(ya.title.text), fontsize=_pt(layout.font.size))
        ax.tick_params(labelsize=_pt((layout.font.size or FONT_SIZE) - 2))
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)

    # Shapes and layout images in data coordinates go on the first axes (the diagram).
    first = next(iter(axes.values()), None)
    for shape in layout.shapes or ():
        if first is None or shape.xref != "x" or shape.yref != "y":
            continue
        if shape.type == "rect":
            first.add_patch(Rectangle((shape.x0, shape.y0), shape.x1 - shape.x0, shape.y1 - shape.y0,
                                      facecolor=shape.fillcolor or "none", edgecolor=shape.line.color or "#333",
                                      linewidth=shape.line.width or 1, zorder=0))
        elif shape.type == "line":
            first.plot([shape.x0, shape.x1], [shape.y0, shape.y1], color=shape.line.color or "#333",
                       linewidth=shape.line.width or 1)
    for image in layout.images or ():
        if first is None or image.xref != "x":
            continue
        arr = _decode_uri(image.source)
        first.imshow(arr, extent=(image.x, image.x + image.sizex, image.y - image.sizey, image.y), zorder=2)
        first.set_aspect("equal", adjustable="box")
    if first is not None and (layout.images or layout.shapes):
        xa, ya = first._plotly_axes
        if xa.range is not None:
            first.set_xlim(xa.range)
        if ya.range is not None:
            first.set_ylim(ya.range)

    for name, (im, ax, colorbar) in mappables.items():
        cb = out.colorbar(ScalarMappable(norm=Normalize(im.norm.vmin, im.norm.vmax), cmap=im.cmap), ax=ax,
                          fraction=0.046, pad=0.02)
        title = colorbar.title.text if colorbar is not None and colorbar.title is not None else None
        if title:
            cb.set_label(_plain(title), fontsize=_pt(layout.font.size))
        cb.ax.tick_params(labelsize=_pt((layout.font.size or FONT_SIZE) - 3))

    for note in layout.annotations or ():
        if note.showarrow:
            continue
        text = _plain(note.text)
        if not text:
            continue
        size = _pt(note.font.size if note.font and note.font.size else layout.font.size)
        ha = {"left": "left", "right": "right"}.get(note.xanchor, "center")
        va = {"top": "top", "bottom": "bottom"}.get(note.yanchor, "center")
        if note.xref == "paper" and note.yref == "paper":
            x, y = paper(note.x, note.y)
            out.text(x, y, text, ha=ha, va=va, fontsize=size, rotation=-(note.textangle or 0))
        elif first is not None:
            target = axes.get((note.xref or "x") + (note.yref or "y"), first)
            target.text(note.x, note.y, text, ha=ha, va=va, fontsize=size)
    if layout.title and layout.title.text:
        out.suptitle(_plain(layout.title.text), x=0.01, ha="left", fontsize=_pt((layout.font.size or FONT_SIZE) + 2))
    if any(getattr(t, "showlegend", None) is not False and t.name and t.type in ("bar", "scatter")
           and getattr(t, "showlegend", True) for t in fig.data) and layout.showlegend is not False:
        handles, names = [], []
        for ax in axes.values():
            for handle, label in zip(*ax.get_legend_handles_labels()):
                if label not in names and not label.startswith("_"):
                    handles.append(handle)
                    names.append(label)
        if len(names) > 1:
            out.legend(handles, names, loc="upper center", ncol=min(5, len(names)), frameon=False,
                       fontsize=_pt(layout.font.size))
    return out


def figure_bytes(fig: go.Figure, fmt: str = "png") -> bytes:
    """PNG or SVG bytes of a figure made here (drawn with matplotlib; no browser needed)."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"format must be 'png' or 'svg', got {fmt!r}")
    rendered = to_matplotlib(fig)
    buffer = io.BytesIO()
    rendered.savefig(buffer, format=fmt, dpi=150 if fmt == "png" else None, facecolor="white")
    return buffer.getvalue()
