"""Figure builders for the analysis pages: data in (numpy arrays, numbers, names), figure out.
No Streamlit, no models. Built from the same pieces as `resattn.figures` (fonts, colour
scales, image axes), so `figures.figure_bytes` exports every figure here as PNG or SVG.

    map_panel / maps_row_figure   masks and attribution maps side by side, honest colour bars
    top5_change_figure            top-5 probabilities before / after an intervention
    mask_change_figure            mean |ΔM| per module after an intervention
    curves_figure                 deletion and insertion curves of several maps
    class_means_figure            mean mask per class (columns) and module (rows)

Colour bars always show the values drawn. A signed map (any value below 0) gets the
diverging scale centred at 0 and symmetric about it; a non-negative map a sequential scale
over its own data range. "Normalised for display" divides a map by its largest magnitude,
says so on the colour bar, and keeps the raw values in the hover text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .figures import (
    FEATURE_SCALE,
    FONT_SIZE,
    MASK_SCALE,
    ColorAxis,
    CompareColumn,
    _font,
    _heatmap,
    _image_axes,
    _layout,
    _title_annotation,
    compare_figure,
    image_uri,
    value_range,
)

# One colour per map kind on the faithfulness chart (and its table), the same on every page.
MAP_COLORS = {"mask": "#7b3294", "abs_ig": "#66a61e", "ig": "#1b9e77", "gradcam": "#d95f02", "occlusion": "#e7298a",
              "random": "#7f7f7f", "random_smooth": "#bcbd22"}
BEFORE_COLOR, AFTER_COLOR = "#9aa5b1", "#d62728"


def _color(name: str, index: int = 0) -> str:
    kind = "mask" if name.startswith("mask") else name
    return MAP_COLORS.get(kind, ("#1f77b4", "#2ca02c", "#bcbd22", "#17becf")[index % 4])


def _wrap(label: str, width: int = 11) -> str:
    """Break a long class name once, at the space nearest its middle, for a narrow header."""
    if len(label) <= width or " " not in label:
        return label
    spaces = [i for i, ch in enumerate(label) if ch == " "]
    cut = min(spaces, key=lambda i: abs(i - len(label) / 2))
    return label[:cut] + "<br>" + label[cut + 1:]


# --------------------------------------------------------------------------- maps

@dataclass
class MapPanel:
    """One map as drawn: `z` the displayed values, `raw` the map's own values (for hover)."""
    title: str
    z: np.ndarray
    raw: np.ndarray
    zmin: float
    zmax: float
    colorscale: str
    colorbar_title: str
    value_name: str
    zmid: float | None = None


def map_panel(title: str, values: np.ndarray, *, normalise: bool = False, value_name: str = "value",
              colorbar_title: str | None = None, signed: bool | None = None) -> MapPanel:
    """A panel for one map in its own units. `signed` (default: any value < 0) picks the
    diverging scale symmetric about 0; otherwise the sequential scale spans the data range.
    `normalise` divides by max |value| for display only (hover keeps the raw values)."""
    raw = np.asarray(values, dtype=np.float32)
    finite = raw[np.isfinite(raw)]
    if signed is None:
        signed = bool(finite.size and finite.min() < 0)
    z, bar = raw, colorbar_title if colorbar_title is not None else value_name
    if normalise:
        peak = float(np.abs(finite).max()) if finite.size else 0.0
        z = raw / peak if peak > 0 else raw
        bar = f"{bar} ÷ max|{value_name}|"
    lo, hi = value_range(z, symmetric=signed)
    return MapPanel(title, z, raw, lo, hi, FEATURE_SCALE if signed else MASK_SCALE, bar, value_name,
                    0.0 if signed else None)


def maps_row_figure(panels: Sequence[MapPanel], *, image: np.ndarray | None = None, image_title: str = "image",
                    height: int = 360, font_size: int = FONT_SIZE, title: str | None = None) -> go.Figure:
    """The image (optional, first) and the maps side by side, each map with its own
    horizontal colour bar underneath. Hover shows each map's raw value, also when the
    panel is normalised for display."""
    cells = len(panels) + (image is not None)
    n = max(1, cells)
    gap = 0.025
    width = (1.0 - gap * (n - 1)) / n
    bar_px, top_px = 66, 70 if title else 42
    bottom = bar_px / height
    layout = _layout(height, font_size, title=title, margin={"l": 10, "r": 10, "t": top_px, "b": 10})
    data, annotations = [], []
    for i in range(n):
        axis = "" if i == 0 else str(i + 1)
        x0 = i * (width + gap)
        xa, ya = _image_axes(axis, (x0, x0 + width), (bottom, 1.0), size=font_size)
        layout["xaxis" + axis], layout["yaxis" + axis] = xa, ya
        if image is not None and i == 0:
            data.append({"type": "image", "source": image_uri(image), "xaxis": "x", "yaxis": "y",
                         "hoverinfo": "skip"})
            annotations.append(_title_annotation(image_title, x0 + width / 2, 1.0, font_size))
            continue
        panel = panels[i - (image is not None)]
        bar = {"orientation": "h", "x": x0 + width / 2, "xanchor": "center", "y": 0.0, "yanchor": "bottom",
               "len": width * 0.92, "thickness": 12, "tickfont": _font(font_size - 3), "outlinewidth": 0,
               "nticks": 5, "title": {"text": panel.colorbar_title, "side": "top", "font": _font(font_size - 3)}}
        hover = f"x %{{x}}, y %{{y}}<br>{panel.value_name} = %{{customdata:.4g}}<extra>{panel.title}</extra>"
        data.append(_heatmap(panel.z, axis=axis, zmin=panel.zmin, zmax=panel.zmax, colorscale=panel.colorscale,
                             zmid=panel.zmid, colorbar=bar, customdata=np.asarray(panel.raw, dtype=np.float32),
                             hovertemplate=hover))
        annotations.append(_title_annotation(panel.title, x0 + width / 2, 1.0, font_size))
    layout["annotations"] = annotations
    return go.Figure(data=data, layout=layout)


def before_after_panels(name: str, before: np.ndarray, after: np.ndarray, *, signed: bool = False,
                        value_name: str = "M") -> list[MapPanel]:
    """Three panels: a map before and after a change on one shared colour scale (diverging
    about 0 when `signed`), and their difference on a scale centred at 0."""
    before, after = np.asarray(before, dtype=np.float32), np.asarray(after, dtype=np.float32)
    lo, hi = value_range(before, after, symmetric=signed)
    scale, mid = (FEATURE_SCALE, 0.0) if signed else (MASK_SCALE, None)
    return [MapPanel(f"{name}: {value_name} before", before, before, lo, hi, scale, value_name, value_name, mid),
            MapPanel(f"{name}: {value_name} after", after, after, lo, hi, scale, value_name, value_name, mid),
            map_panel(f"{name}: after − before", after - before, signed=True, value_name=f"Δ{value_name}")]


# --------------------------------------------------------------------------- interventions

def top5_change_figure(rows: Sequence[Mapping], *, labels: Mapping[str, str] | None = None, height: int = 380,
                       font_size: int = FONT_SIZE, title: str | None = None) -> go.Figure:
    """Grouped bars: each class's probability before and after. rows: dicts with "name",
    "before", "after" (as from InterventionResult.top5_table with class names filled in),
    drawn in the given order."""
    labels = labels or {}
    names = [_wrap(str(r["name"]), 6) for r in rows]
    data = []
    for which, colour in (("before", BEFORE_COLOR), ("after", AFTER_COLOR)):
        values = [float(r[which]) for r in rows]
        data.append({"type": "bar", "name": labels.get(which, which), "x": names, "y": values,
                     "marker": {"color": colour}, "text": [f"{v:.1%}" for v in values], "textposition": "outside",
                     "cliponaxis": False, "textfont": _font(font_size - 3),
                     "hovertemplate": f"%{{x}}<br>{labels.get(which, which)}: %{{y:.2%}}<extra></extra>"})
    top = max([float(r[w]) for r in rows for w in ("before", "after")] or [1.0])
    layout = _layout(height, font_size, title=title, barmode="group", bargap=0.25,
                     xaxis={"type": "category", "tickfont": _font(font_size - 2), "tickangle": 0},
                     yaxis={"title": {"text": "probability"}, "tickformat": ".0%", "gridcolor": "#e5e5e5",
                            "range": [0, min(1.0, top) * 1.15 + 1e-3]},
                     legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.0, "yanchor": "bottom"},
                     margin={"l": 70, "r": 10, "t": 80 if title else 40, "b": 60})
    return go.Figure(data=data, layout=layout)


def mask_change_figure(changes: Mapping[str, float], *, intervened: str | None = None, height: int = 340,
                       font_size: int = FONT_SIZE, title: str | None = None,
                       y_title: str = "mean |M after − M before|") -> go.Figure:
    """One bar per module: how much its mask changed. The intervened module (whose change
    is the replacement itself) is grey, the knock-on changes in colour."""
    names = list(changes)
    values = [float(changes[n]) for n in names]
    colours = ["#bbbbbb" if n == intervened else "#3b528b" for n in names]
    bar = {"type": "bar", "x": names, "y": values, "marker": {"color": colours},
           "text": [f"{v:.3g}" for v in values], "textposition": "outside", "cliponaxis": False,
           "textfont": _font(font_size - 2),
           "customdata": ["the intervened module: its replacement" if n == intervened else "a knock-on change"
                          for n in names],
           "hovertemplate": "%{x}: %{y:.4g}<br>%{customdata}<extra></extra>"}
    top = max(values or [1.0])
    layout = _layout(height, font_size, title=title,
                     xaxis={"type": "category", "title": {"text": "attention module"}},
                     yaxis={"title": {"text": y_title}, "gridcolor": "#e5e5e5",
                            "range": [0, (top if top > 0 else 1.0) * 1.18]},
                     margin={"l": 80, "r": 10, "t": 50 if title else 20, "b": 60})
    return go.Figure(data=[bar], layout=layout)


# --------------------------------------------------------------------------- faithfulness

def curves_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                  labels: Mapping[str, str] | None = None, height: int = 460, font_size: int = FONT_SIZE,
                  y_title: str = "probability of the target class") -> go.Figure:
    """Deletion (left) and insertion (right) curves, one line per map, the same colour in
    both panels; curves: name -> (fractions, deletion, insertion). Random orders ("random",
    "random_smooth") are dashed: the references a useful map must beat."""
    labels = labels or {}
    data = []
    for i, (name, (fractions, deletion, insertion)) in enumerate(curves.items()):
        colour = _color(name, i)
        label = labels.get(name, name)
        line = {"color": colour, "width": 2.5, "dash": "dash" if name.startswith("random") else "solid"}
        for axis, values, curve in (("", deletion, "deletion"), ("2", insertion, "insertion")):
            data.append({"type": "scatter", "mode": "lines", "name": label, "legendgroup": name,
                         "showlegend": axis == "", "x": np.asarray(fractions, dtype=np.float64),
                         "y": np.asarray(values, dtype=np.float64), "xaxis": "x" + axis, "yaxis": "y" + axis,
                         "line": line,
                         "hovertemplate": f"{label}, {curve}<br>%{{x:.1%}} of the pixels: p = %{{y:.4f}}"
                                          "<extra></extra>"})
    axis_common = {"gridcolor": "#e5e5e5", "zeroline": False}
    layout = _layout(height, font_size,
                     xaxis={"domain": [0, 0.46], "anchor": "y", "tickformat": ".0%", **axis_common,
                            "title": {"text": "fraction of pixels deleted"}},
                     yaxis={"anchor": "x", "title": {"text": y_title}, "rangemode": "tozero", **axis_common},
                     xaxis2={"domain": [0.54, 1], "anchor": "y2", "tickformat": ".0%", **axis_common,
                             "title": {"text": "fraction of pixels inserted"}},
                     yaxis2={"anchor": "x2", "rangemode": "tozero", "matches": "y", **axis_common},
                     annotations=[_title_annotation("deletion: lower is better", 0.23, 1.0, font_size),
                                  _title_annotation("insertion: higher is better", 0.77, 1.0, font_size)],
                     legend={"orientation": "h", "x": 0, "y": -0.3, "yanchor": "top"},
                     margin={"l": 70, "r": 20, "t": 40, "b": 120})
    return go.Figure(data=data, layout=layout)


# --------------------------------------------------------------------------- dataset

def class_means_figure(means: np.ndarray, counts: Sequence[int], classes: Sequence[str], modules: Sequence[str], *,
                       shared: bool = False, font_size: int = FONT_SIZE, width_px: int = 1100,
                       value_name: str = "mean M") -> go.Figure:
    """Mean mask maps: columns = classes, rows = modules (means: classes x modules x S x S,
    NaN for a class without images, drawn as "none"). Each row has its own colour bar
    over its data range (masks of different depths differ in range), or with `shared` one
    bar for the whole grid. A row with negative values (channel attention) is diverging."""
    means = np.asarray(means, dtype=np.float32)
    columns, coloraxes = [], {}
    if shared:
        lo, hi = value_range(means)
        signed = lo < 0
        if signed:
            lo, hi = value_range(means, symmetric=True)
        coloraxes["coloraxis"] = ColorAxis(lo, hi, value_name, FEATURE_SCALE if signed else MASK_SCALE,
                                           zmid=0.0 if signed else None)
        axes: str | dict = "coloraxis"
    else:
        axes = {}
        for r, module in enumerate(modules):
            lo, hi = value_range(means[:, r])
            signed = lo < 0
            if signed:
                lo, hi = value_range(means[:, r], symmetric=True)
            name = f"coloraxis{r + 1 if r else ''}"
            coloraxes[name] = ColorAxis(lo, hi, "M", FEATURE_SCALE if signed else MASK_SCALE,
                                        zmid=0.0 if signed else None, row=r)
            axes[module] = name
    for c, label in enumerate(classes):
        count = int(counts[c])
        maps = {module: (means[c, r] if count else None) for r, module in enumerate(modules)}
        columns.append(CompareColumn(_wrap(str(label)), f"{count} image{'s' if count != 1 else ''}", maps, axes))
    # A white picture under every cell (maps fully opaque over it): without one, compare_figure
    # fills empty cells with an all-NaN heatmap, which stops Streamlit's plotly.js from drawing
    # any heatmap of the figure.
    side = means.shape[-1]
    blank = np.full((means.shape[-2], side, 3), 255, dtype=np.uint8)
    return compare_figure(columns, list(modules), coloraxes, image=blank, opacity=1.0, font_size=font_size,
                          width_px=width_px, value_name=value_name, empty_text="none")


def concentration_figure(values: np.ndarray, modules: Sequence[str], groups: Mapping[str, np.ndarray], *,
                         height: int = 340, font_size: int = FONT_SIZE) -> go.Figure:
    """Mean mask concentration per module (bars) for groups of images (e.g. correct /
    wrong); values: N x modules; groups: label -> boolean or index selection over N."""
    values = np.asarray(values, dtype=np.float64)
    colours = ("#3b528b", "#d62728", "#2ca02c", "#7f7f7f")
    data = []
    for i, (label, selection) in enumerate(groups.items()):
        chosen = values[selection]
        means = chosen.mean(axis=0) if len(chosen) else np.full(len(modules), np.nan)
        data.append({"type": "bar", "name": f"{label} ({len(chosen)})", "x": list(modules), "y": means,
                     "marker": {"color": colours[i % len(colours)]},
                     "hovertemplate": f"{label}, %{{x}}<br>mean concentration = %{{y:.4f}}<extra></extra>"})
    layout = _layout(height, font_size, barmode="group",
                     xaxis={"type": "category", "title": {"text": "attention module"}},
                     yaxis={"title": {"text": "mean concentration"}, "gridcolor": "#e5e5e5", "rangemode": "tozero",
                            "exponentformat": "e"},
                     legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
                     margin={"l": 70, "r": 10, "t": 40, "b": 60})
    return go.Figure(data=data, layout=layout)


__all__ = ["MAP_COLORS", "MapPanel", "before_after_panels", "class_means_figure", "concentration_figure", "curves_figure", "map_panel",
           "mask_change_figure", "maps_row_figure", "top5_change_figure"]
