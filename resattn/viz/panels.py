"""The one panel type of the app: a map with its colour scale and colour bar, raw values on
hover, exportable like every figure here (resattn.viz.export). Every page draws its maps
with it: `map_panel` makes a panel from values (choosing the scale and the range),
`panels_figure` puts panels side by side (optionally after the image), `overlay_figure`
lays one map over the image, `channel_grid_figure` tiles channels on one scale.

Colour bars always show the values drawn. A signed map gets the diverging scale centred at
0 and symmetric about it; any other map a sequential scale over its data range (or over the
range of the maps it is compared with: `range_of`). "Normalised for display" divides a map
by its largest magnitude, says so on the colour bar, and keeps the raw values in the hover.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from .colour import FONT_SIZE, MASK_SCALE, signed_scale, type_size, value_range
from .layout import (
    PAGE_PX,
    base_layout,
    fit_lines,
    font,
    heatmap,
    image_axes,
    image_uri,
    side_colorbar,
    title_note,
)


@dataclass
class Panel:
    """One map as drawn: `z` the displayed values on [zmin, zmax] in `colorscale` (centred
    at `zmid` when given); `raw` the map's own values, shown on hover instead of z when set
    (a map normalised for display)."""
    title: str
    z: np.ndarray
    zmin: float
    zmax: float
    colorscale: str = MASK_SCALE
    colorbar_title: str = ""
    value_name: str = "value"
    zmid: float | None = None
    raw: np.ndarray | None = None


def map_panel(title: str, values: np.ndarray, *, signed: bool | None = None, range_of: Sequence | None = None,
              normalise: bool = False, value_name: str = "value", colorbar_title: str | None = None) -> Panel:
    """A panel for one map in its own units. `signed` (default: any value < 0) picks the
    diverging scale symmetric about 0; otherwise the sequential scale spans the data range.
    `range_of`: the maps that share this panel's colour range (default: this map alone).
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
        range_of = None  # the other maps are in raw units
    lo, hi = value_range(*(range_of if range_of is not None else [z]), symmetric=signed)
    colours, mid = signed_scale(signed)
    return Panel(title, z, lo, hi, colours, bar, value_name, mid, raw=raw)


def share_range(panels: Sequence[Panel]) -> list[Panel]:
    """The panels on one colour range, the range of all their values (symmetric about 0 when
    any of them is diverging), each keeping its scale."""
    signed = any(p.zmid is not None for p in panels)
    lo, hi = value_range(*[p.z for p in panels], symmetric=signed)
    return [dataclasses.replace(p, zmin=lo, zmax=hi) for p in panels]


def before_after_panels(name: str, before: np.ndarray, after: np.ndarray, *, signed: bool = False,
                        value_name: str = "M") -> list[Panel]:
    """Three panels: a map before and after a change on one shared colour scale (diverging
    about 0 when `signed`), and their difference on a scale centred at 0."""
    before, after = np.asarray(before, dtype=np.float32), np.asarray(after, dtype=np.float32)
    pair = [before, after]
    return [map_panel(f"{name}: {value_name} before", before, signed=signed, range_of=pair, value_name=value_name),
            map_panel(f"{name}: {value_name} after", after, signed=signed, range_of=pair, value_name=value_name),
            map_panel(f"{name}: after − before", after - before, signed=True, value_name=f"Δ{value_name}")]


def panels_figure(panels: Sequence[Panel], *, image: np.ndarray | None = None, image_title: str = "image",
                  height: int | None = 380, font_size: int = FONT_SIZE, title: str | None = None) -> go.Figure:
    """The image (optional, first) and the maps side by side, each map with its own
    horizontal colour bar underneath (its range may be shared with others: see
    `share_range` and `map_panel(range_of=...)`). Hover shows each map's raw value.
    `height=None` fits the height to the number of cells (square cells on a ~1000 px page)."""
    font_size = type_size(font_size)
    n = max(1, len(panels) + (image is not None))
    if height is None:
        height = int(min(440, max(280, 1000 / n + 95)))
    gap = 0.03 if image is None else 0.025
    width = (1.0 - gap * (n - 1)) / n
    titled = any(p.colorbar_title for p in panels)
    # A title wider than its cell would run into its neighbours' (six or seven cells on a page
    # ~900 px wide leave ~110 px each): wrap it at spaces and raise the top margin to hold it.
    titles = [fit_lines(p.title, width * PAGE_PX, font_size) for p in panels]
    lines = max((len(t) for t in titles), default=1)
    bar_px, top_px = (66 if titled else 62), (70 if title else 42) + int((lines - 1) * font_size * 1.25)
    bottom = bar_px / height
    layout = base_layout(height, font_size, title=title, margin={"l": 10, "r": 10, "t": top_px, "b": 10})
    data, annotations = [], []
    for i in range(n):
        axis = "" if i == 0 else str(i + 1)
        x0 = i * (width + gap)
        xa, ya = image_axes(axis, (x0, x0 + width), (bottom, 1.0), size=font_size)
        layout["xaxis" + axis], layout["yaxis" + axis] = xa, ya
        if image is not None and i == 0:
            data.append({"type": "image", "source": image_uri(image), "xaxis": "x", "yaxis": "y",
                         "hoverinfo": "skip"})
            annotations.append(title_note(image_title, x0 + width / 2, 1.0, font_size))
            continue
        panel = panels[i - (image is not None)]
        bar = {"orientation": "h", "x": x0 + width / 2, "xanchor": "center", "y": 0.0, "yanchor": "bottom",
               "len": width * 0.9, "thickness": 12, "tickfont": font(font_size - 3), "outlinewidth": 0, "nticks": 4,
               # plotly turns crowded tick labels vertical, which pushes the bar's title up into the map
               "tickangle": 0}
        if panel.colorbar_title:
            bar["title"] = {"text": panel.colorbar_title, "side": "top", "font": font(font_size - 3)}
        if panel.raw is not None:
            hover = {"customdata": np.asarray(panel.raw, dtype=np.float32),
                     "hovertemplate": f"x %{{x}}, y %{{y}}<br>{panel.value_name} = %{{customdata:.4g}}"
                                      f"<extra>{panel.title}</extra>"}
        else:
            hover = {"value_name": panel.value_name}
        data.append(heatmap(panel.z, axis=axis, zmin=panel.zmin, zmax=panel.zmax, colorscale=panel.colorscale,
                            zmid=panel.zmid, colorbar=bar, **hover))
        annotations.append(title_note("<br>".join(titles[i - (image is not None)]), x0 + width / 2, 1.0, font_size))
    layout["annotations"] = annotations
    return go.Figure(data=data, layout=layout)


def _colours(zmin, zmax, signed: bool, range_of, colorscale, values) -> tuple[float, float, str, float | None]:
    """The colour range and scale of a builder given explicit bounds or the maps to span."""
    default_scale, mid = signed_scale(signed)
    if zmin is None or zmax is None:
        zmin, zmax = value_range(*(range_of if range_of is not None else [values]), symmetric=signed)
    return zmin, zmax, colorscale or default_scale, mid


def overlay_figure(image: np.ndarray, z: np.ndarray, *, opacity: float, zmin: float | None = None,
                   zmax: float | None = None, signed: bool = False, range_of: Sequence | None = None,
                   colorscale: str | None = None, title: str | None = None, colorbar_title: str = "M",
                   value_name: str = "M", height: int = 440, font_size: int = FONT_SIZE) -> go.Figure:
    """A map (already at the image's resolution) over the image, with an opacity; hover
    shows the map's raw value at each pixel. The colour range: zmin..zmax when given, else
    the data range of `range_of` (default: the map), symmetric about 0 when `signed`."""
    font_size = type_size(font_size)
    image = np.asarray(image, dtype=np.uint8)
    if image.shape[:2] != np.shape(z):
        raise ValueError(f"the map {np.shape(z)} must have the image's size {image.shape[:2]}")
    zmin, zmax, colorscale, mid = _colours(zmin, zmax, signed, range_of, colorscale, z)
    xa, ya = image_axes("", (0.0, 0.86), (0.0, 1.0))
    data = [
        {"type": "image", "source": image_uri(image), "xaxis": "x", "yaxis": "y", "hoverinfo": "skip"},
        heatmap(z, zmin=zmin, zmax=zmax, colorscale=colorscale, zmid=mid, value_name=value_name, opacity=opacity,
                colorbar=side_colorbar(colorbar_title, 0.87, size=font_size)),
    ]
    layout = base_layout(height, font_size, title=title, xaxis=xa, yaxis=ya,
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


def channel_grid_figure(maps: np.ndarray, labels: Sequence[str], *, zmin: float | None = None,
                        zmax: float | None = None, signed: bool = False, range_of: Sequence | None = None,
                        colorscale: str | None = None, cols: int = 8, title: str | None = None,
                        colorbar_title: str = "", value_name: str = "value", font_size: int = FONT_SIZE,
                        tile_px: int = 110) -> go.Figure:
    """Individual channels (k x h x w) as a grid of tiles with one shared colour scale
    (zmin..zmax, or the data range of `range_of`, default the maps; symmetric about 0 when
    `signed`). Drawn as a single mosaic heatmap (one trace, fast to send); hover names the
    channel."""
    font_size = type_size(font_size)
    maps = np.asarray(maps, dtype=np.float32)
    zmin, zmax, colorscale, _ = _colours(zmin, zmax, signed, range_of, colorscale, maps)
    k, h, w = maps.shape
    gap = max(1, round(max(h, w) / 16))
    row_gap = max(2, round(h * 0.3))  # room for each tile's label above it
    tiled, index = mosaic(maps, cols, gap, row_gap)
    cols = max(1, min(cols, k))
    rows = math.ceil(k / cols)
    names = np.array(list(labels) + [""], dtype=object)
    custom = names[index]
    heat = heatmap(tiled, zmin=zmin, zmax=zmax, colorscale=colorscale, customdata=custom,
                   colorbar=side_colorbar(colorbar_title, 1.005, size=font_size),
                   hovertemplate=f"%{{customdata}}<br>{value_name} = %{{z:.4g}}<extra></extra>")
    xa, ya = image_axes("", (0.0, 1.0), (0.0, 1.0))
    annotations = []
    for i, label in enumerate(labels):
        r, c = divmod(i, cols)
        annotations.append({"text": label, "x": c * (w + gap) + (w - 1) / 2, "y": row_gap + r * (h + row_gap) - 0.5,
                            "xref": "x", "yref": "y", "showarrow": False, "yanchor": "bottom",
                            "font": font(font_size - 3)})
    height = int(rows * tile_px * (1 + row_gap / h) + (60 if title else 20))
    layout = base_layout(height, font_size, title=title, xaxis=xa, yaxis=ya, annotations=annotations,
                         margin={"l": 10, "r": 90, "t": 60 if title else 10, "b": 10})
    return go.Figure(data=[heat], layout=layout)
