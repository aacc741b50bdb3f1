"""Presenter mode (`?present=1`, the setting "present"): for a lecture on a projector.

Larger type (the page's, and in every figure: PRESENTER_STYLE raises each builder's type to
at least the projector size), no sidebar (the navigation moves to the top; the checkpoint
and image come from the link the teacher prepared), colour-blind-safe colours through
resattn.viz.PRESENTER_STYLE (viridis for masks, cividis for signed features, every series in
Okabe-Ito colours without a red-green pair), set once per run in app.py for every page,
and the tour's "next step" one big click (or PageDown, what presentation clickers send) away.
"""
from __future__ import annotations

import streamlit as st

from resattn import viz

# Streamlit sizes its type in rem, so one root size scales the whole page; the sidebar and
# its expand button are removed rather than collapsed, so nothing can open it by accident.
CSS = """
<style>
html { font-size: 22px; }
section[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"],
[data-testid="stExpandSidebarButton"] { display: none !important; }
[data-testid="stMainBlockContainer"] { max-width: 100%; padding-left: 2.5rem; padding-right: 2.5rem; }
.st-key-tour_next button { min-height: 3.2rem; font-size: 1.2rem; }
</style>
"""


def active() -> bool:
    """Whether this session presents (session state once initialised, else the URL)."""
    if "present" in st.session_state:
        value = st.session_state["present"]
    else:
        value = st.query_params.get("present", 0)
    try:
        return int(value) == 1
    except (TypeError, ValueError):
        return False


def set_active(on: bool) -> None:
    """A button callback: switch presenter mode on or off (the URL follows)."""
    st.session_state["present"] = 1 if on else 0


def figure_style() -> viz.FigureStyle:
    return viz.PRESENTER_STYLE if active() else viz.DEFAULT_STYLE


def apply() -> None:
    """In app.py, before the page: the presenter's CSS and a small way back out."""
    if not active():
        return
    st.html(CSS)
    st.button("Leave presenter mode", key="leave_presenter", on_click=set_active, args=(False,),
              icon=":material/close_fullscreen:", type="tertiary",
              help="Back to the normal layout with the sidebar (or remove present=1 from the link).")
