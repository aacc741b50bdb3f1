"""Downloads: every figure as PNG/SVG (redrawn with matplotlib, so no browser or kaleido is
needed), the traced tensors as .npz (np.savez_compressed, no pickle) and the view's settings
as JSON. The files are made only when a button is clicked (deferred download data)."""
from __future__ import annotations

import io
import re

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from resattn.viz import figure_bytes


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items() if v is not None})
    return buffer.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "figure"


def figure_downloads(fig: go.Figure, name: str, *, key: str) -> None:
    """PNG and SVG buttons for one figure."""
    slug = _slug(name)
    left, right = st.columns(2)
    left.download_button("PNG", lambda: figure_bytes(fig, "png"), file_name=f"{slug}.png", mime="image/png",
                         key=f"{key}_png", on_click="ignore", icon=":material/image:", width="stretch")
    right.download_button("SVG", lambda: figure_bytes(fig, "svg"), file_name=f"{slug}.svg", mime="image/svg+xml",
                          key=f"{key}_svg", on_click="ignore", icon=":material/draw:", width="stretch")


def data_downloads(name: str, *, arrays=None, settings_json: str | None = None, key: str) -> None:
    """.npz of tensors (`arrays`: a dict or a callable returning one) and JSON settings."""
    slug = _slug(name)
    cols = st.columns(2)
    if arrays is not None:
        make = arrays if callable(arrays) else (lambda: arrays)
        cols[0].download_button("Tensors (.npz)", lambda: npz_bytes(make()), file_name=f"{slug}.npz",
                                mime="application/octet-stream", key=f"{key}_npz", on_click="ignore",
                                icon=":material/data_array:", width="stretch")
    if settings_json is not None:
        cols[1].download_button("Settings (.json)", settings_json, file_name=f"{slug}_settings.json",
                                mime="application/json", key=f"{key}_json", on_click="ignore",
                                icon=":material/settings:", width="stretch")


def downloads(figures: dict[str, go.Figure], name: str, *, arrays=None, settings_json: str | None = None,
              key: str, label: str = "Export") -> None:
    """An expander with PNG/SVG per figure plus the tensors and settings."""
    with st.expander(f"{label}: figures (PNG/SVG), tensors (.npz), settings (JSON)"):
        for i, (title, fig) in enumerate(figures.items()):
            st.markdown(f"**{title}**")
            figure_downloads(fig, f"{name}_{title}", key=f"{key}_{i}")
        data_downloads(name, arrays=arrays, settings_json=settings_json, key=key)
