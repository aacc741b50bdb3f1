"""Charts of statistics: histograms of values, mask statistics per model and stage, the
combination gains along the network, and how concentrated masks are over a dataset."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .colour import FONT_SIZE, PROJECTOR_FONT_SIZE, series_color, type_size
from .layout import base_layout, domain, font, title_note


def histogram_figure(counts: np.ndarray, edges: np.ndarray, *, title: str | None = None, x_title: str = "value",
                     color: str = "#3b528b", height: int = 320, font_size: int = FONT_SIZE,
                     log_y: bool = False) -> go.Figure:
    """A histogram from precomputed (fractions, edges): small to send whatever the tensor size."""
    font_size = type_size(font_size)
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    bar = {"type": "bar", "x": centres, "y": counts, "width": np.diff(edges), "marker": {"color": color},
           "customdata": np.stack([edges[:-1], edges[1:]], axis=1),
           "hovertemplate": "%{customdata[0]:.3g} to %{customdata[1]:.3g}: %{y:.2%}<extra></extra>"}
    layout = base_layout(height, font_size, title=title, bargap=0.02,
                         xaxis={"title": {"text": x_title}, "showgrid": False},
                         yaxis={"title": {"text": "fraction of values"}, "tickformat": ".2~%" if not log_y else None,
                                "type": "log" if log_y else "linear", "gridcolor": "#e5e5e5"},
                         margin={"l": 70, "r": 10, "t": 50 if title else 10, "b": 60})
    return go.Figure(data=[bar], layout=layout)


def histograms_figure(hists: Mapping[str, tuple[np.ndarray, np.ndarray]], *, x_titles: Mapping[str, str] | None = None,
                      height: int = 320, font_size: int = FONT_SIZE,
                      title: str | None = None) -> go.Figure:
    """Several histograms side by side, each on its own x range."""
    font_size = type_size(font_size)
    n = max(1, len(hists))
    gap = 0.07
    width = (1 - gap * (n - 1)) / n
    data, layout, annotations = [], base_layout(height, font_size, title=title, bargap=0.02, showlegend=False,
                                                margin={"l": 70, "r": 10, "t": 80 if title else 45, "b": 60}), []
    for i, (name, (counts, edges)) in enumerate(hists.items()):
        axis = "" if i == 0 else str(i + 1)
        x0 = i * (width + gap)
        edges = np.asarray(edges, dtype=np.float64)
        data.append({"type": "bar", "x": (edges[:-1] + edges[1:]) / 2, "y": np.asarray(counts, dtype=np.float64),
                     "width": np.diff(edges), "xaxis": "x" + axis, "yaxis": "y" + axis, "name": name,
                     "marker": {"color": series_color(name, i)},
                     "hovertemplate": "%{x:.3g}: %{y:.2%}<extra>" + name + "</extra>"})
        layout["xaxis" + axis] = {"domain": domain(x0, x0 + width), "anchor": "y" + axis, "showgrid": False,
                                  "title": {"text": (x_titles or {}).get(name, "value")}}
        layout["yaxis" + axis] = {"anchor": "x" + axis, "tickformat": ".2~%", "gridcolor": "#e5e5e5",
                                  "title": {"text": "fraction of values" if i == 0 else ""}}
        annotations.append(title_note(name, x0 + width / 2, 1.02, font_size))
    layout["annotations"] = annotations
    return go.Figure(data=data, layout=layout)



def stats_figure(rows: Sequence[Mapping], stats: Sequence[str], labels: Mapping[str, str], *, cols: int = 3,
                 font_size: int = PROJECTOR_FONT_SIZE, panel_px: int = 300) -> go.Figure:
    """Grouped bars: one panel per statistic, stages on the x axis, one bar colour per model.

    rows: dicts with "model", "stage" and one value per statistic."""
    font_size = type_size(font_size)
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
        layout_extra["xaxis" + axis] = {"domain": domain(x0, x0 + pw), "anchor": "y" + axis, "type": "category",
                                        "tickfont": font(font_size - 2)}
        layout_extra["yaxis" + axis] = {"domain": domain(y1 - ph, y1), "anchor": "x" + axis, "gridcolor": "#e5e5e5",
                                        "tickfont": font(font_size - 3), "zeroline": True, "zerolinecolor": "#999"}
        annotations.append(title_note(labels.get(stat, stat), x0 + pw / 2, y1 + 6 / plot_h, font_size - 1))
        for m, model in enumerate(models):
            values = {int(rr["stage"]): rr.get(stat) for rr in rows if rr["model"] == model}
            data.append({"type": "bar", "name": model, "legendgroup": model, "showlegend": i == 0,
                         "x": [f"stage {s}" for s in stages],
                         "y": [values.get(s, None) for s in stages], "xaxis": "x" + axis, "yaxis": "y" + axis,
                         "marker": {"color": series_color(model, m)},
                         "hovertemplate": f"{model}, %{{x}}<br>{labels.get(stat, stat)} = %{{y:.3f}}<extra></extra>"})
    layout = base_layout(height, font_size, annotations=annotations, barmode="group",
                         legend={"orientation": "h", "x": 0, "y": 1, "yanchor": "bottom", "font": font(font_size),
                                 "yref": "paper"},
                         margin={"l": 60, "r": 10, "t": legend_px, "b": 40}, **layout_extra)
    return go.Figure(data=data, layout=layout)


def gain_figure(profiles: Mapping[str, Sequence[Mapping]], *, font_size: int = FONT_SIZE, height: int = 400) -> go.Figure:
    """Left: each module's combination gain mean|H| / mean|T| per model (1 = unchanged);
    right: the running product of those gains along the depth of the network."""
    font_size = type_size(font_size)
    data = []
    for i, (model, rows) in enumerate(profiles.items()):
        colour = series_color(model, i)
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
    layout = base_layout(height, font_size, barmode="group",
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
                         annotations=[title_note("gain of each module's combination", 0.225, 1.0, font_size),
                                      title_note("compounded over the modules", 0.775, 1.0, font_size)],
                         legend={"orientation": "h", "y": -0.15, "x": 0},
                         margin={"l": 70, "r": 10, "t": 45, "b": 40})
    return go.Figure(data=data, layout=layout)




def concentration_figure(values: np.ndarray, modules: Sequence[str], groups: Mapping[str, np.ndarray], *,
                         height: int = 340, font_size: int = FONT_SIZE) -> go.Figure:
    """Mean mask concentration per module (bars) for groups of images (e.g. correct /
    wrong); values: N x modules; groups: label -> boolean or index selection over N. A group
    named like a series of the style ("all", "correct", "wrong") takes its colour."""
    font_size = type_size(font_size)
    values = np.asarray(values, dtype=np.float64)
    data = []
    for i, (label, selection) in enumerate(groups.items()):
        chosen = values[selection]
        means = chosen.mean(axis=0) if len(chosen) else np.full(len(modules), np.nan)
        data.append({"type": "bar", "name": f"{label} ({len(chosen)})", "x": list(modules), "y": means,
                     "marker": {"color": series_color(label, i)},
                     "hovertemplate": f"{label}, %{{x}}<br>mean concentration = %{{y:.4f}}<extra></extra>"})
    layout = base_layout(height, font_size, barmode="group",
                         xaxis={"type": "category", "title": {"text": "attention module"}},
                         yaxis={"title": {"text": "mean concentration"}, "gridcolor": "#e5e5e5", "rangemode": "tozero",
                                "exponentformat": "e"},
                         legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
                         margin={"l": 70, "r": 10, "t": 40, "b": 60})
    return go.Figure(data=data, layout=layout)
