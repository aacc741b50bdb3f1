"""The plotly pieces every builder is made of: fonts, image-like axes, colour bars, heatmap
traces, a page layout, titles, and images as data URIs. Plain dicts (plotly accepts them),
so a figure is cheap to build and to send."""
from __future__ import annotations

import base64
import io
import re
import textwrap

import numpy as np

from .colour import FONT_FAMILY, FONT_SIZE, MASK_SCALE, centred, scale


def image_uri(image: np.ndarray) -> str:
    """A uint8 H x W x 3 array as a PNG data URI (compact in a figure's JSON)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image_uri(source) -> np.ndarray:
    """The RGB array of a data URI made by `image_uri` (or of a PIL image)."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return np.asarray(source.convert("RGB"))
    match = re.match(r"data:image/[a-z]+;base64,(.*)", str(source), re.S)
    if not match:
        raise ValueError("only data URIs and PIL images can be redrawn")
    with Image.open(io.BytesIO(base64.b64decode(match.group(1)))) as img:
        return np.asarray(img.convert("RGB"))


def domain(a: float, b: float) -> list[float]:
    """An axis domain clipped to [0, 1] (sums of fractions can overshoot by 1e-16)."""
    return [min(1.0, max(0.0, float(a))), min(1.0, max(0.0, float(b)))]


def font(size: int) -> dict:
    return {"size": size, "family": FONT_FAMILY}


def wrap_label(label: str, width: int = 11) -> str:
    """Break a long label once, at the space nearest its middle, for a narrow header."""
    if len(label) <= width or " " not in label:
        return label
    spaces = [i for i, ch in enumerate(label) if ch == " "]
    cut = min(spaces, key=lambda i: abs(i - len(label) / 2))
    return label[:cut] + "<br>" + label[cut + 1:]


# The width a figure gets in the app's wide layout beside the sidebar, roughly: figures stretch
# to the page, so text that must fit a cell is measured against this, not the figure's nominal width.
PAGE_PX = 900
CHAR_EM = 0.52  # the app's sans-serif averages about half an em per character


def fit_lines(text: str, width_px: float, size: int) -> list[str]:
    """The lines of `text` (lines joined by <br>), each wrapped at spaces so that none is
    wider than `width_px` at font `size` (a character taken as CHAR_EM of the size); words
    are never cut, and a "name · name" pair (a column's attention · residual) stays on one line."""
    chars = max(6, int(width_px / (CHAR_EM * size)))
    keep = "\u00a0·\u00a0"  # textwrap does not break at a no-break space
    return [part.replace(keep, " · ") for line in text.split("<br>")
            for part in textwrap.wrap(line.replace(" · ", keep), chars, break_long_words=False) or [line]]


def image_axes(anchor: str, domain_x, domain_y, *, title: str | None = None, size: int = FONT_SIZE) -> tuple[dict, dict]:
    """An x/y axis pair that shows an array like an image: square pixels, row 0 on top, no ticks."""
    x = {"domain": domain(*domain_x), "anchor": "y" + anchor, "showticklabels": False, "showgrid": False,
         "zeroline": False, "ticks": "", "constrain": "domain"}
    y = {"domain": domain(*domain_y), "anchor": "x" + anchor, "showticklabels": False, "showgrid": False,
         "zeroline": False, "ticks": "", "autorange": "reversed", "scaleanchor": "x" + anchor,
         "constrain": "domain"}
    if title:
        y["title"] = {"text": title, "font": font(size)}
    return x, y


def side_colorbar(title: str, x: float, y: float = 0.5, length: float = 0.9, size: int = FONT_SIZE) -> dict:
    """A vertical colour bar at paper position x, its title beside it."""
    return {"title": {"text": title, "side": "right", "font": font(size - 2)}, "x": x, "xanchor": "left",
            "y": y, "yanchor": "middle", "len": length, "thickness": 14, "tickfont": font(size - 3),
            "outlinewidth": 0}


def heatmap(z: np.ndarray, *, axis: str = "", zmin=None, zmax=None, colorscale=None, coloraxis=None,
            zmid=None, colorbar=None, value_name: str = "value", opacity: float | None = None,
            customdata=None, hovertemplate=None) -> dict:
    """A heatmap trace on axes x<axis>/y<axis>: on a shared colour axis, or with its own
    range and scale (drawn in the current style) and a colour bar when one is given."""
    trace = {"type": "heatmap", "z": np.asarray(z, dtype=np.float32), "xaxis": "x" + axis, "yaxis": "y" + axis,
             "hovertemplate": hovertemplate or f"x %{{x}}, y %{{y}}<br>{value_name} = %{{z:.4g}}<extra></extra>"}
    if coloraxis:
        trace["coloraxis"] = coloraxis
    else:
        trace.update({"zmin": zmin, "zmax": zmax, "colorscale": scale(colorscale or MASK_SCALE)})
        if zmin is not None and zmax is not None and centred(zmid, zmin, zmax) is not None:
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


def base_layout(height: int, size: int, *, title: str | None = None, margin=None, **extra) -> dict:
    """White background, the app's font at `size`, an optional title top left."""
    layout = {"height": int(height), "font": font(size), "margin": margin or {"l": 10, "r": 10, "t": 50, "b": 10},
              "plot_bgcolor": "white", "paper_bgcolor": "white", "hoverlabel": {"font": font(size - 1)}}
    if title:
        layout["title"] = {"text": title, "font": font(size + 2), "x": 0.01, "xanchor": "left"}
    layout.update(extra)
    return layout


def title_note(text: str, x: float, y: float, size: int, *, yanchor="bottom", xanchor="center") -> dict:
    """A text annotation at paper coordinates (panel titles, column headers)."""
    return {"text": text, "x": x, "y": y, "xref": "paper", "yref": "paper", "showarrow": False,
            "xanchor": xanchor, "yanchor": yanchor, "font": font(size)}
