"""Export: any figure made by resattn.viz redrawn with matplotlib (heatmaps, images, bars,
lines, shapes, layout images, annotations, colour bars), as PNG or SVG bytes. Offline:
plotly's own static export needs kaleido and a Chrome, which this project does not ship."""
from __future__ import annotations

import io
import re

import numpy as np
import plotly.graph_objects as go

from .colour import FONT_SIZE, mpl_cmap
from .layout import decode_image_uri


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
            img = decode_image_uri(trace.source) if trace.source is not None else np.asarray(trace.z, dtype=np.uint8)
            h, w = img.shape[:2]
            ax.imshow(img, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
        elif trace.type == "heatmap":
            z = np.asarray(trace.z, dtype=np.float64)
            h, w = z.shape
            if trace.coloraxis:
                ca = layout[trace.coloraxis]
                cmap, vmin, vmax = mpl_cmap(ca.colorscale), ca.cmin, ca.cmax
            else:
                cmap, vmin, vmax = mpl_cmap(trace.colorscale), trace.zmin, trace.zmax
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
        arr = decode_image_uri(image.source)
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
