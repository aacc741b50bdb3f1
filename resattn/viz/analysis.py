"""Charts of the analysis pages: the top-5 probabilities before and after an intervention,
how much each module's mask changed, and deletion / insertion curves of several maps."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .colour import FONT_SIZE, series_color, type_size
from .layout import base_layout, font, title_note, wrap_label


def top5_change_figure(rows: Sequence[Mapping], *, labels: Mapping[str, str] | None = None, height: int = 380,
                       font_size: int = FONT_SIZE, title: str | None = None) -> go.Figure:
    """Grouped bars: each class's probability before and after. rows: dicts with "name",
    "before", "after" (as from InterventionResult.top5_table with class names filled in),
    drawn in the given order."""
    font_size = type_size(font_size)
    labels = labels or {}
    names = [wrap_label(str(r["name"]), 6) for r in rows]
    data = []
    for which in ("before", "after"):
        values = [float(r[which]) for r in rows]
        data.append({"type": "bar", "name": labels.get(which, which), "x": names, "y": values,
                     "marker": {"color": series_color(which)}, "text": [f"{v:.1%}" for v in values], "textposition": "outside",
                     "cliponaxis": False, "textfont": font(font_size - 3),
                     "hovertemplate": f"%{{x}}<br>{labels.get(which, which)}: %{{y:.2%}}<extra></extra>"})
    top = max([float(r[w]) for r in rows for w in ("before", "after")] or [1.0])
    layout = base_layout(height, font_size, title=title, barmode="group", bargap=0.25,
                         xaxis={"type": "category", "tickfont": font(font_size - 2), "tickangle": 0},
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
    font_size = type_size(font_size)
    names = list(changes)
    values = [float(changes[n]) for n in names]
    colours = ["#bbbbbb" if n == intervened else "#3b528b" for n in names]
    bar = {"type": "bar", "x": names, "y": values, "marker": {"color": colours},
           "text": [f"{v:.3g}" for v in values], "textposition": "outside", "cliponaxis": False,
           "textfont": font(font_size - 2),
           "customdata": ["the intervened module: its replacement" if n == intervened else "a knock-on change"
                          for n in names],
           "hovertemplate": "%{x}: %{y:.4g}<br>%{customdata}<extra></extra>"}
    top = max(values or [1.0])
    layout = base_layout(height, font_size, title=title,
                         xaxis={"type": "category", "title": {"text": "attention module"}},
                         yaxis={"title": {"text": y_title}, "gridcolor": "#e5e5e5",
                                "range": [0, (top if top > 0 else 1.0) * 1.18]},
                         margin={"l": 80, "r": 10, "t": 50 if title else 20, "b": 60})
    return go.Figure(data=[bar], layout=layout)



def curves_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                  labels: Mapping[str, str] | None = None, height: int = 460, font_size: int = FONT_SIZE,
                  y_title: str = "probability of the target class") -> go.Figure:
    """Deletion (left) and insertion (right) curves, one line per map, the same colour in
    both panels; curves: name -> (fractions, deletion, insertion). Random orders ("random",
    "random_smooth") are dashed: the references a useful map must beat. A map's colour is its
    kind's ("mask:<module>" is a mask), the same on every page."""
    font_size = type_size(font_size)
    labels = labels or {}
    data = []
    for i, (name, (fractions, deletion, insertion)) in enumerate(curves.items()):
        colour = series_color("mask" if name.startswith("mask") else name, i)
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
    layout = base_layout(height, font_size,
                         xaxis={"domain": [0, 0.46], "anchor": "y", "tickformat": ".0%", **axis_common,
                                "title": {"text": "fraction of pixels deleted"}},
                         yaxis={"anchor": "x", "title": {"text": y_title}, "rangemode": "tozero", **axis_common},
                         xaxis2={"domain": [0.54, 1], "anchor": "y2", "tickformat": ".0%", **axis_common,
                                 "title": {"text": "fraction of pixels inserted"}},
                         yaxis2={"anchor": "x2", "rangemode": "tozero", "matches": "y", **axis_common},
                         annotations=[title_note("deletion: lower is better", 0.23, 1.0, font_size),
                                      title_note("insertion: higher is better", 0.77, 1.0, font_size)],
                         legend={"orientation": "h", "x": 0, "y": -0.3, "yanchor": "top"},
                         margin={"l": 70, "r": 20, "t": 40, "b": 120})
    return go.Figure(data=data, layout=layout)
