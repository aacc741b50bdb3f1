"""Per-session state: the settings a link carries (st.query_params), and the AppState the
sidebar builds on every run and the pages read.

Settings live in st.session_state under the same names as their query parameters, e.g.
?ckpt=attention56_mixed_arl&img=sample:chelsea&module=stage2.1&reduce=mean&scale=stage&opacity=0.5
On a session's first run they are read from the URL; afterwards session state is the truth
and the URL is rewritten from it on every run, so a copied link reopens the same view.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import streamlit as st
from PIL import Image

from resattn.card import FALLBACK_INPUT_SIZE
from resattn.errors import ResattnError

from . import cache

# name -> (type, default). None: chosen at run time (first checkpoint, best device, ...).
SETTINGS: dict[str, tuple[Callable, Any]] = {
    "ckpt": (str, None),
    "device": (str, None),
    "img": (str, None),  # None: ui.samples.default_image picks the opening photo
    "module": (str, None),
    "tensor": (str, "mask"),
    "reduce": (str, "mean"),
    "channel": (int, 0),
    "k": (int, 8),
    "scale": (str, "stage"),
    "opacity": (float, 0.5),
    "show": (str, "mask"),
    "cmpscale": (str, "row"),
    "step": (int, 1),  # the guided tour's step (pages/tour.py)
    "present": (int, 0),  # 1: presenter mode (ui/presenter.py)
    "cmpset": (str, "types"),
    "cmpcols": (str, "types"),  # "seeds": the Compare page shows the seeds of one type (issue 19)
    "cmpseedtype": (str, None),  # that type, arch/attention/residual
}
# The checkpoint a session opens on: the first of these that the folder has (the flagship, then
# the zoo's mixed + ARL), else the first by name.
PREFERRED_CHECKPOINTS = ("attention56_mixed_arl_e100", "attention56_mixed_arl")


def default_checkpoint(names: list[str]) -> str:
    return next((name for name in PREFERRED_CHECKPOINTS if name in names), names[0])
_STATE_KEY = "_resattn_app_state"
_FAILED_KEY = "_resattn_failed_checkpoints"


def init_session() -> None:
    """On a session's first run: settings from the URL (ignoring malformed values), then
    defaults. On every run: re-assign the settings so that a page's widget state survives
    visits to pages that do not draw that widget."""
    ss = st.session_state
    if not ss.get("_resattn_initialised"):
        for name, (kind, default) in SETTINGS.items():
            value = st.query_params.get(name)
            try:
                ss[name] = kind(value) if value is not None else default
            except (TypeError, ValueError):
                ss[name] = default
        image_id = ss.get("img") or None
        if image_id in ("upload", "camera"):
            ss["_link_note"] = (f"The link was made with {'an uploaded' if image_id == 'upload' else 'a camera'} "
                                "image, which cannot travel in a link: showing the default sample photo. "
                                "Upload the image again to see the same view.")
            image_id = None  # the sidebar opens on ui.samples.default_image
        ss["img"] = image_id
        ss["_source"] = "Sample gallery"
        ss["_gallery"] = image_id
        ss["_resattn_initialised"] = True
    # Streamlit drops a widget's state at the end of a run that did not draw it (another
    # page, or a run of a page file without app.py, see `current`). Re-assigning the value
    # turns it into plain session state that survives; the shadow copy restores one that
    # was dropped anyway.
    shadow = ss.setdefault("_resattn_settings", {})
    for name in (*SETTINGS, "_source", "_gallery"):
        if name in ss:
            shadow[name] = ss[name]
            ss[name] = ss[name]
        elif name in shadow:
            ss[name] = shadow[name]


def setting(name: str):
    return st.session_state.get(name, SETTINGS[name][1])


def ensure_choice(name: str, options: list, fallback=None) -> None:
    """Make the setting one of `options` before the widget that shows it is drawn (a widget
    whose state holds a value outside its options raises)."""
    if not options:
        return
    if st.session_state.get(name) not in options:
        st.session_state[name] = fallback if fallback in options else options[0]


def sync_query_params() -> None:
    """Write the settings into the URL (only those that changed)."""
    for name in SETTINGS:
        value = st.session_state.get(name)
        if value is None:
            continue
        text = f"{value:g}" if isinstance(value, float) else str(value)
        if st.query_params.get(name) != text:
            st.query_params[name] = text


def failed_checkpoints() -> dict[str, tuple[tuple, str]]:
    """Checkpoints that failed to load in this session: name -> (stamp, reason). An entry is
    retried once its files change (new stamp)."""
    return st.session_state.setdefault(_FAILED_KEY, {})


@dataclass
class AppState:
    """What the sidebar chose, for the pages."""
    folder: Path
    entries: list[cache.Entry]
    entry: cache.Entry | None
    device: str
    image: Image.Image | None
    image_id: str
    image_label: str
    sha: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> list[cache.Entry]:
        failed = failed_checkpoints()
        return [e for e in self.entries if e.ok and failed.get(e.name, (None,))[0] != e.stamp]

    def input_size(self, entry: cache.Entry | None = None) -> int:
        """The pixels per side `entry` (default: the chosen checkpoint) sees: its card's
        input_size (the card resolves a missing one)."""
        card = (entry or self.entry).card
        return card.input_size if card is not None else FALLBACK_INPUT_SIZE

    def key(self, entry: cache.Entry | None = None) -> tuple | None:
        entry = entry or self.entry
        if entry is None or self.image is None or self.sha is None:
            return None
        return cache.trace_key(entry, self.device, self.sha, self.input_size(entry))

    def trace(self, entry: cache.Entry | None = None, *, show_error: bool = True) -> cache.ImageTrace | None:
        """The cached trace of the current image through `entry` (default: the chosen
        checkpoint), or None after showing what went wrong."""
        entry = entry or self.entry
        key = self.key(entry)
        if key is None:
            return None
        try:
            return cache.image_trace(key, self.image)
        except ResattnError as exc:
            failed_checkpoints()[entry.name] = (entry.stamp, str(exc))
            if show_error:
                st.error(f"The checkpoint **{entry.name}** could not be used: {exc} "
                         "Choose another checkpoint in the sidebar; the others still work.")
            return None

    def require_trace(self, needs: str) -> cache.ImageTrace:
        """The trace of the chosen image through the chosen checkpoint; when there is none,
        say what the page needs (`needs`: "Choose a checkpoint ... to <needs>.") or why the
        trace failed, and end the page's run there."""
        if self.entry is None or self.image is None:
            st.info(f"Choose a checkpoint and an image in the sidebar to {needs}.")
            st.stop()
        trace = self.trace()
        if trace is None:
            st.stop()
        return trace

    def settings(self, **extra) -> dict:
        """The view as JSON-able settings (for the settings export)."""
        out = {name: st.session_state.get(name) for name in SETTINGS}
        out.update({
            "checkpoint": self.entry.name if self.entry else None,
            "checkpoint_folder": str(self.folder),
            "card": {k: (self.entry.card or {}).get(k) for k in ("arch", "attention", "residual", "width",
                                                                  "input_size", "weights")} if self.entry else None,
            "image_id": self.image_id, "image_label": self.image_label, "image_sha256": self.sha,
            "query": "&".join(f"{k}={v}" for k, v in st.query_params.to_dict().items()),
        })
        out.update(extra)
        return out

    def settings_json(self, **extra) -> str:
        return json.dumps(self.settings(**extra), indent=2, default=str)


def save(state: AppState) -> None:
    st.session_state[_STATE_KEY] = state


def end_run() -> None:
    """Forget this run's AppState (app.py, after the page): a page that later runs without
    app.py before it must not find a stale one (see `current`)."""
    st.session_state.pop(_STATE_KEY, None)


RESUME_KEY = "_resattn_resume_page"


def current() -> AppState:
    """The AppState of this run (built by ui.sidebar.render in app.py).

    Streamlit runs a file of pages/ directly, without app.py, when a link to a page is the
    first request a freshly started server gets (it assumes the old pages/ folder layout
    until app.py has called st.navigation once). Then this goes through app.py, which draws
    the sidebar and the navigation and comes back to the page with the same query."""
    state = st.session_state.get(_STATE_KEY)
    if state is None:
        page = Path(inspect.stack()[1].filename).name
        st.session_state[RESUME_KEY] = f"pages/{page}"
        st.switch_page("app.py", query_params=st.query_params.to_dict())
    return state


def resume_page() -> None:
    """In app.py after st.navigation: finish the detour described in `current`."""
    page = st.session_state.pop(RESUME_KEY, None)
    if page:
        st.switch_page(page, query_params=st.query_params.to_dict())

