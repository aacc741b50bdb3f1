"""The network drawn left to right with each module's mask, and the network's answer (its
top-k classes): the overview page's two figures."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .colour import FONT_SIZE, type_size
from .layout import base_layout, font, image_uri


def network_figure(outline: Mapping, thumbnails: Mapping[str, np.ndarray], *, selected: str | None = None,
                   captions: Mapping[str, str] | None = None, width_px: int = 1050,
                   font_size: int = FONT_SIZE) -> go.Figure:
    """The network left to right: stem, per stage its residual units (small boxes) and its
    attention modules (big blocks showing each module's mask thumbnail over the image), the
    final units and the classifier. Each module block carries an invisible marker whose
    customdata is the module name, so a click (plotly selection) tells which module it was.

    outline: as from `resattn.stats.network_outline`; thumbnails: module name -> uint8 RGB.
    The height is chosen for a page `width_px` wide (the drawing keeps its proportions)."""
    font_size = type_size(font_size)
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
                                "yref": "y", "showarrow": False, "yanchor": "top", "font": font(font_size - 3)})

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
                                    "yref": "y", "showarrow": False, "font": font(font_size - 2)})
            annotations.append({"text": f"<b>{name}</b>", "x": x + block / 2, "y": mid + block / 2 + 0.05,
                                "xref": "x", "yref": "y", "showarrow": False, "yanchor": "bottom",
                                "font": font(font_size - 1)})
            if captions and name in captions:
                annotations.append({"text": captions[name], "x": x + block / 2, "y": mid - block / 2 - 0.05,
                                    "xref": "x", "yref": "y", "showarrow": False, "yanchor": "top",
                                    "font": font(font_size - 3)})
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
                            "showarrow": False, "font": font(font_size), "yanchor": "bottom"})
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
    layout = base_layout(height, font_size, shapes=shapes, annotations=annotations, images=images,
                         xaxis={"range": span_x, "visible": False, "fixedrange": True},
                         yaxis={"range": span_y, "visible": False, "fixedrange": True, "scaleanchor": "x"},
                         margin={"l": 5, "r": 5, "t": 5, "b": 5}, dragmode=False, clickmode="event+select")
    return go.Figure(data=[clicks], layout=layout)




def predictions_figure(labels: Sequence[str], probs: Sequence[float], *, k: int = 5, height: int | None = None,
                       font_size: int = FONT_SIZE, title: str | None = None) -> go.Figure:
    """Top-k classes as horizontal bars, the most likely on top, probabilities written out."""
    font_size = type_size(font_size)
    probs = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs)[:k]
    names = [str(labels[i]) for i in order][::-1]
    values = probs[order][::-1]
    bar = {"type": "bar", "orientation": "h", "x": values, "y": names, "marker": {"color": "#3b528b"},
           "text": [f"{v:.1%}" for v in values], "textposition": "outside", "cliponaxis": False,
           "textfont": font(font_size),
           "hovertemplate": "%{y}: %{x:.2%}<extra></extra>"}
    layout = base_layout(height or 70 + 44 * len(names), font_size, title=title,
                         xaxis={"range": [0, 1.18], "tickformat": ".0%", "gridcolor": "#e5e5e5",
                                "title": {"text": "probability"}},
                         yaxis={"automargin": True, "tickfont": font(font_size)},
                         margin={"l": 10, "r": 20, "t": 50 if title else 10, "b": 50})
    return go.Figure(data=[bar], layout=layout)


