"""resattn: look inside Residual Attention Networks. `streamlit run app.py` (or `make run`).

The sidebar (checkpoint, device, image) is drawn here once per run; each page reads the
result with `ui.state.current()`. To add a page, add one line to PAGES.
"""
import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `streamlit run` from anywhere finds resattn/ and ui/

from resattn import viz  # noqa: E402
from ui import presenter, sidebar, state  # noqa: E402

st.set_page_config(page_title="resattn", page_icon=":material/visibility:", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/explorer.py", title="Module explorer", icon=":material/layers:"),
    st.Page("pages/compare.py", title="Compare attention types", icon=":material/compare:"),
    st.Page("pages/how_it_works.py", title="How it works", icon=":material/school:"),
    st.Page("pages/tour.py", title="Guided tour", icon=":material/tour:", url_path="tour"),
    st.Page("pages/attribution.py", title="Masks vs attributions", icon=":material/compare_arrows:"),
    st.Page("pages/interventions.py", title="Switch a mask off", icon=":material/toggle_off:"),
    st.Page("pages/faithfulness.py", title="Deletion & insertion", icon=":material/show_chart:"),
    st.Page("pages/dataset.py", title="Masks across a dataset", icon=":material/grid_view:"),
]

state.init_session()  # settings first: presenter mode moves the navigation to the top
page = st.navigation(PAGES, position="top" if presenter.active() else "sidebar")
state.resume_page()
sidebar.render()
state.sync_query_params()
presenter.apply()
try:
    with viz.figure_style(presenter.figure_style()):
        page.run()
    state.sync_query_params()
finally:
    state.end_run()
