"""The compare grid: rows = modules, columns = models, every cell a map over the image on a
shared colour axis; how those axes are chosen (by activation family, per row, fixed or
over the data); and the dataset page's grid of mean masks per class, drawn the same way."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .colour import (
    FEATURE_SCALE,
    FONT_SIZE,
    MASK_SCALE,
    PROJECTOR_FONT_SIZE,
    ColorAxis,
    data_axis,
    scale,
    type_size,
    value_range,
)
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
    wrap_label,
)

# How the compare grid colours masks (the page's "Mask colour scale" choice).
MASK_SCALES = {"row": "per module: the row's data range, by activation",
               "family": "by activation, fixed (sigmoid 0…1, channel −1…1)",
               "data": "by activation, data range of all modules", "single": "one scale for all masks (−1…1)"}


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



def compare_figure(columns: Sequence[CompareColumn], modules: Sequence[str], coloraxes: Mapping[str, ColorAxis],
                   *, image: np.ndarray | None = None, opacity: float = 0.65, font_size: int = PROJECTOR_FONT_SIZE,
                   width_px: int = 1100, value_name: str = "M", empty_text: str = "no mask",
                   absent_text: str = "no such<br>module") -> go.Figure:
    """Rows = modules, columns = models. Each cell shows the map over the image (when given)
    with the colour scale of its colour axis. Colour axes shared by the whole grid get a
    horizontal colour bar under it; per-row axes (ColorAxis.row) a vertical bar beside the row.

    The figure stretches to the page's width; its height is chosen so that cells are square
    when the page is `width_px` wide (wider pages leave space around the cells, never clip)."""
    font_size = type_size(font_size)
    n_cols, n_rows = max(1, len(columns)), max(1, len(modules))
    full_bars = [name for name, axis in coloraxes.items() if axis.row is None]
    row_bars = len(full_bars) < len(coloraxes)
    slots = 1 + max((axis.slot for axis in coloraxes.values() if axis.row is not None), default=0)
    slot_px = 100  # one vertical colour bar with its ticks and title
    left, right = 40 / width_px, ((10 + slots * slot_px) / width_px if row_bars else 0.0)
    hgap = 8 / width_px
    cell_w = (1 - left - right - hgap * (n_cols - 1)) / n_cols
    cell_px = cell_w * width_px
    # Headers (name, then the top class and its probability) wrap to their cell on a page of
    # PAGE_PX: "English springer" beside "garbage truck" would otherwise run into each other.
    headers = [[f"<b>{line}</b>" for line in fit_lines(c.title, cell_w * PAGE_PX, font_size)]
               + fit_lines(c.subtitle, cell_w * PAGE_PX, font_size) for c in columns]
    header_px = max([3] + [len(lines) for lines in headers]) * font_size * 1.25 + 12
    bars_px = (2.6 * font_size + 30) if full_bars else 0
    vgap_px = 10
    height = int(header_px + n_rows * cell_px + (n_rows - 1) * vgap_px + bars_px + 10)
    cell_h, vgap = cell_px / height, vgap_px / height
    top = 1 - header_px / height
    data, layout_extra, annotations = [], {}, []
    uri = image_uri(image) if image is not None else None
    for c, column in enumerate(columns):
        x0 = left + c * (cell_w + hgap)
        annotations.append(title_note("<br>".join(headers[c]), x0 + cell_w / 2,
                                             top + 4 / height, font_size))
        for r, module in enumerate(modules):
            i = r * n_cols + c
            axis = "" if i == 0 else str(i + 1)
            y1 = top - r * (cell_h + vgap)
            xa, ya = image_axes(axis, (x0, x0 + cell_w), (y1 - cell_h, y1))
            layout_extra["xaxis" + axis], layout_extra["yaxis" + axis] = xa, ya
            z = column.maps.get(module)
            if uri is not None:
                data.append({"type": "image", "source": uri, "xaxis": "x" + axis, "yaxis": "y" + axis,
                             "hoverinfo": "skip"})
            if z is not None:
                data.append(heatmap(z, axis=axis, coloraxis=column.axis_for(module), value_name=value_name,
                                    opacity=opacity if uri is not None else None,
                                    hovertemplate=f"{column.title}, {module}<br>{value_name} = %{{z:.4g}}<extra></extra>"))
            else:
                annotations.append({"text": empty_text if module in column.maps else absent_text,
                                    "x": x0 + cell_w / 2, "y": y1 - cell_h / 2, "xref": "paper",
                                    "yref": "paper", "showarrow": False, "font": font(font_size),
                                    "bgcolor": "rgba(255,255,255,0.85)"})
                if uri is None:
                    data.append({"type": "heatmap", "z": [[np.nan]], "xaxis": "x" + axis, "yaxis": "y" + axis,
                                 "showscale": False, "hoverinfo": "skip"})
            if c == 0:
                annotations.append({"text": module, "x": left - 6 / width_px, "y": y1 - cell_h / 2, "xref": "paper",
                                    "yref": "paper", "showarrow": False, "textangle": -90, "xanchor": "right",
                                    "yanchor": "middle", "font": font(font_size)})
    grid_right = left + n_cols * cell_w + hgap * (n_cols - 1)
    for name, axis in coloraxes.items():
        if axis.row is None:
            j, n_full = full_bars.index(name), len(full_bars)
            span = (grid_right - left) / n_full
            bar = {"orientation": "h", "x": left + span * (j + 0.5), "xanchor": "center", "y": 0.0,
                   "yanchor": "bottom", "len": span * 0.8, "thickness": 16, "tickfont": font(font_size - 2),
                   "outlinewidth": 0, "title": {"text": axis.title, "side": "top", "font": font(font_size)}}
        else:
            y1 = top - axis.row * (cell_h + vgap)
            bar = side_colorbar(axis.title, grid_right + (10 + axis.slot * slot_px) / width_px, y=y1 - cell_h / 2,
                                length=cell_h * 0.95, size=font_size)
        spec = {"cmin": axis.zmin, "cmax": axis.zmax, "colorscale": scale(axis.colorscale),
                "colorbar": bar}
        if axis.zmid is not None and axis.zmin < axis.zmid < axis.zmax:
            spec["cmid"] = axis.zmid
        layout_extra[name] = spec
    layout = base_layout(height, font_size, annotations=annotations, margin={"l": 4, "r": 4, "t": 4, "b": 4},
                         **layout_extra)
    layout["meta"] = {"suggested_width": width_px}
    return go.Figure(data=data, layout=layout)



def _axis_name(index: int) -> str:
    return f"coloraxis{index + 1 if index else ''}"


def compare_axes(maps: Mapping[str, Mapping[str, np.ndarray | None]], modules: Sequence[str], *, show: str,
                 attention: Mapping[str, str], mask_scale: str = "row"
                 ) -> tuple[dict[str, ColorAxis], dict[str, str | dict[str, str]]]:
    """The colour axes of the compare grid and each column's axis (one name, or module ->
    name). maps: column label -> module -> map (None: the baseline's missing mask);
    attention: column label -> the network's attention type; show: "mask", "trunk" or
    "output"; mask_scale: a key of MASK_SCALES.

    Masks of sigmoid networks (mixed, spatial; M in (0, 1)) and of channel attention (M in
    [-1, 1], diverging about 0) never share an axis. Features (T, H) get one symmetric
    diverging axis per row, shared by the models."""
    coloraxes: dict[str, ColorAxis] = {}
    if show != "mask":
        for r, name in enumerate(modules):
            lo, hi = value_range(*[m[name] for m in maps.values() if m.get(name) is not None], symmetric=True)
            coloraxes[_axis_name(r)] = ColorAxis(lo, hi, f"{show[0].upper()} {name}", FEATURE_SCALE, zmid=0.0, row=r)
        row_axes = {name: _axis_name(r) for r, name in enumerate(modules)}
        return coloraxes, {label: row_axes for label in maps}

    sigmoid = [label for label in maps if attention[label] in ("mixed", "spatial")]
    channel = [label for label in maps if attention[label] == "channel"]

    def family_range(labels, fixed):
        if mask_scale == "family":
            return fixed
        return value_range(*[z for label in labels for z in maps[label].values() if z is not None])

    if mask_scale == "row":
        families = [(labels, title, colours) for labels, title, colours in
                    ((sigmoid, "M", MASK_SCALE), (channel, "M channel", FEATURE_SCALE)) if labels]
        per_module: dict[str, dict[str, str]] = {}
        for r, name in enumerate(modules):
            for slot, (labels, title, colours) in enumerate(families):
                present = [maps[label][name] for label in labels if maps[label].get(name) is not None]
                if not present:
                    continue
                lo, hi = value_range(*present)
                axis = _axis_name(len(coloraxes))
                coloraxes[axis] = ColorAxis(lo, hi, title, colours, row=r, slot=slot,
                                            zmid=0.0 if colours != MASK_SCALE and lo < 0 < hi else None)
                for label in labels:
                    per_module.setdefault(label, {})[name] = axis
        # the baseline has no masks: any axis will do for its empty cells
        return coloraxes, {label: per_module.get(label, {m: "coloraxis" for m in modules}) for label in maps}
    if mask_scale == "single":
        coloraxes["coloraxis"] = ColorAxis(-1.0, 1.0, "M", MASK_SCALE)
        return coloraxes, {label: "coloraxis" for label in maps}
    if sigmoid:
        coloraxes["coloraxis"] = ColorAxis(*family_range(sigmoid, (0.0, 1.0)), "M (mixed, spatial)", MASK_SCALE)
    if channel:
        lo, hi = family_range(channel, (-1.0, 1.0))
        coloraxes["coloraxis2"] = ColorAxis(lo, hi, "M (channel)", FEATURE_SCALE, zmid=0.0 if lo < 0 < hi else None)
    return coloraxes, {label: "coloraxis2" if attention[label] == "channel" else "coloraxis" for label in maps}


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
        coloraxes["coloraxis"] = data_axis(means, title=value_name)
        axes: str | dict = "coloraxis"
    else:
        axes = {}
        for r, module in enumerate(modules):
            coloraxes[_axis_name(r)] = data_axis(means[:, r], title="M", row=r)
            axes[module] = _axis_name(r)
    for c, label in enumerate(classes):
        count = int(counts[c])
        maps = {module: (means[c, r] if count else None) for r, module in enumerate(modules)}
        columns.append(CompareColumn(wrap_label(str(label)), f"{count} image{'s' if count != 1 else ''}", maps, axes))
    # A white picture under every cell (maps fully opaque over it): without one, compare_figure
    # fills empty cells with an all-NaN heatmap, which stops Streamlit's plotly.js from drawing
    # any heatmap of the figure.
    side = means.shape[-1]
    blank = np.full((means.shape[-2], side, 3), 255, dtype=np.uint8)
    return compare_figure(columns, list(modules), coloraxes, image=blank, opacity=1.0, font_size=font_size,
                          width_px=width_px, value_name=value_name, empty_text="none")

