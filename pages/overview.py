"""Overview: the image, the top-5 predictions and the network with every attention module's
mask over the image; a click on a module opens it in the explorer."""
import streamlit as st

from resattn import viz
from ui import cache, export, samples, state
from ui.cards import describe

app = state.current()
st.title("Look inside a Residual Attention Network")


def open_in_explorer(name: str) -> None:
    st.session_state["module"] = name
    st.session_state["_goto_explorer"] = True


def on_diagram_select() -> None:
    event = st.session_state.get("diagram")
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    names = [p.get("customdata") for p in points if p.get("customdata")]
    if names:
        open_in_explorer(names[0])


def use_sample(image_id: str) -> None:
    st.session_state["_source"] = "Sample gallery"
    st.session_state["_gallery"] = image_id


if st.session_state.pop("_goto_explorer", False):
    st.switch_page("pages/explorer.py")

if app.entry is None:
    st.info("Choose a checkpoint in the sidebar to see the network's predictions and masks. "
            "The sidebar says why none is available.")
    if app.image is not None:
        st.image(app.image, caption=app.image_label, width=320)
    st.stop()

trace = app.trace()
if trace is None:
    st.stop()
key = app.key()
size = app.input_size()
model, card, outline = cache.load_model(app.entry.path, app.entry.stamp, app.device)

st.markdown(f"**{app.entry.name}** ({describe(card)}) on **{app.image_label}**, on {app.device}.")

left, right = st.columns([1, 1.4], gap="large")
with left:
    st.image(trace.image, caption=f"As the network sees it: {size} × {size} px", width="stretch")
with right:
    best, p = trace.top(1)[0]
    st.subheader(f"Prediction: {best} ({p:.0%})")
    predictions = viz.predictions_figure(trace.classes, trace.probs, k=5, font_size=16)
    st.plotly_chart(predictions, theme=None, config={"displayModeBar": False}, key="predictions")
    st.caption(f"The network answers with its {len(trace.classes)} training classes only "
               f"({', '.join(trace.classes[:12])}{' …' if len(trace.classes) > 12 else ''}); "
               "for a photo of something else it still picks the closest of them. "
               f"Forward pass with hooks: {trace.seconds * 1000:.0f} ms when this trace was computed "
               "(the first pass after loading a model includes its warm-up).")

st.subheader("The network, module by module")
thumbs, captions = {}, {}
for m in trace.modules:
    if m.mask is None:
        continue
    mask_map = cache.reduced(key, app.image, m.name, "mask", "mean", size=size)
    thumbs[m.name] = viz.blend(trace.image, mask_map, opacity=0.6)  # coloured over its own range
    captions[m.name] = f"mean M {float(m.mask.mean()):.2f}<br>{m.mask.shape[0]} ch · {m.mask.shape[1]}×{m.mask.shape[2]}"
diagram = viz.network_figure(outline, thumbs, selected=st.session_state.get("module"), captions=captions)
st.plotly_chart(diagram, theme=None, key="diagram", on_select=on_diagram_select, selection_mode="points",
                config={"displayModeBar": False})
if thumbs:
    st.caption("Each block is an attention module, showing its soft mask M (mean over channels, stretched "
               "to the image and coloured from its own minimum to its maximum) over the image; small boxes "
               "are residual units. Click a block, or a button below, to open that module in the explorer.")
else:
    st.caption("This network has no attention masks (the baseline): its modules are plain residual blocks.")
label, *buttons = st.columns([1.4] + [1] * len(trace.modules), vertical_alignment="center")
label.markdown("**Open in the explorer:**")
for column, m in zip(buttons, trace.modules):
    column.button(m.name, key=f"open_{m.name.replace('.', '_')}", on_click=open_in_explorer, args=(m.name,),
                  icon=":material/open_in_new:", width="stretch", help=f"Open {m.name} in the module explorer")

with st.expander("Sample gallery"):
    choices = samples.choices()
    cols = st.columns(6)
    for i, (image_id, label) in enumerate(choices.items()):
        with cols[i % 6]:
            st.image(samples.thumbnail(image_id), caption=label, width="stretch")
            st.button("Use", key=f"use_{image_id}", on_click=use_sample, args=(image_id,), width="stretch")

with st.expander("Model card"):
    st.json({k: v for k, v in card.items() if k != "classes"}, expanded=False)

export.downloads({"predictions": predictions, "network": diagram}, f"overview_{app.entry.name}",
                 arrays=trace.arrays, settings_json=app.settings_json(page="overview"), key="overview_export")
