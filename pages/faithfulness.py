"""Deletion & insertion (Petsiuk et al., 2018): does a map order the pixels by how much the
model needs them? Deleting a faithful map's top pixels first makes the class probability
fall fast; inserting them first makes it rise fast. The module's mask, each attribution
method and a random order, on one chart, with the areas under the curves."""
import pandas as pd
import streamlit as st

from resattn import analysis
from resattn import figures_analysis as fa
from resattn.analysis.reduce import REDUCE_LABELS as REDUCTIONS, REDUCE_MODES
from resattn.errors import ResattnError
from ui import analysis_cache as analysed
from ui import state
from ui.cards import describe

BASELINES = {"blur": "blurred image", "zeros": "zeros (the mean colour)"}
RANDOM_SEED = 0

app = state.current()
st.title("Deletion & insertion")
st.markdown("Rank the pixels by a map, highest first. **Deletion** replaces the top pixels by a baseline, step by "
            "step: if the map is faithful the class probability collapses early (small area under the curve). "
            "**Insertion** pastes the top pixels into the baseline: the probability should recover early (large "
            "area). A random order is the reference every map should beat.")
trace = app.require_trace("draw its deletion and insertion curves")
key, image, size, card = app.key(), app.image, app.input_size(), app.entry.card
analysed.use_settings("target", "methods", "camlayer", "igsteps", "steps", "baseline")
masked = [m.name for m in trace.modules if m.mask is not None]
classes = trace.classes

# ----------------------------------------------------------------------------- controls
row = st.columns([1.0, 1.3, 1.6, 1.0, 1.3], vertical_alignment="bottom")
if masked:
    state.ensure_choice("module", masked, masked[-1])
    row[0].selectbox("Attention module", masked, key="module")
    state.ensure_choice("reduce", list(REDUCE_MODES), "mean")
    row[1].selectbox("Mask reduction", list(REDUCE_MODES), key="reduce", format_func=REDUCTIONS.get)
else:
    row[0].caption("No soft masks in this checkpoint: attributions and random order only.")
target = analysed.class_picker(row[2], trace, "Class",
                               "The curves follow this class's probability; the attributions explain it.")
analysed.clamp_setting("steps", 4, 64)
row[3].slider("Steps", 4, 64, step=4, key="steps", help="Points on each curve after the start: the pixels are "
                                                         "deleted / inserted in this many equal chunks.")
state.ensure_choice("baseline", list(BASELINES), "blur")
row[4].radio("Baseline", list(BASELINES), key="baseline", format_func=BASELINES.get, horizontal=True,
             help="What deleted pixels become and what insertion starts from. Blur (sigma = 1/16 of the side) "
                  "removes detail without the sharp edges a constant patch adds.")
row = st.columns([2.2, 1.2, 1.0])
methods, layer, ig_steps = analysed.attribution_controls(row, key, image)
analysed.sync_settings()
steps, baseline = int(st.session_state["steps"]), st.session_state["baseline"]

# ----------------------------------------------------------------------------- compute
specs = {}
if masked:
    module, reduce = st.session_state["module"], st.session_state["reduce"]
    specs[f"mask:{module}"] = ("mask", module, reduce, int(st.session_state.get("channel", 0)),
                               int(st.session_state.get("k", 8)))
for method in methods:
    options = {"ig": (("ig_steps", ig_steps),), "gradcam": (("layer", layer),), "occlusion": ()}[method]
    specs[method] = ("attribution", method) + options
specs["random"] = ("random", RANDOM_SEED)
labels = {name: (f"mask M of {name[5:]}" if name.startswith("mask:") else
                 "random order" if name == "random" else analysis.METHOD_LABELS[name]) for name in specs}
curves = {}
try:
    with st.status("Computing the curves…", expanded=False) as status:
        bar = st.progress(0.0)
        for i, (name, spec) in enumerate(specs.items()):
            status.update(label=f"{labels[name]} ({i + 1} of {len(specs)})…")
            curves[name] = analysed.faithfulness_curve(key, image, spec, target, steps=steps, baseline=baseline)
            bar.progress((i + 1) / len(specs), text=f"{labels[name]}: done")
        bar.empty()  # a finished progress bar would read as work still going on
        status.update(label=f"{len(curves)} pairs of curves, {steps} steps, {BASELINES[baseline]} baseline",
                      state="complete")
except ResattnError as exc:
    st.error(f"The curves could not be computed: {exc}")
    st.stop()

st.subheader(f"Probability of **{classes[target]}** as pixels are deleted or inserted")
curves_fig = fa.curves_figure({name: (c.fractions, c.deletion, c.insertion) for name, c in curves.items()},
                              labels=labels, y_title=f"p({classes[target]})")
st.plotly_chart(curves_fig, theme=None, key="curves")
table = pd.DataFrame([{"map": labels[name], "deletion AUC (lower is better)": c.deletion_auc,
                       "insertion AUC (higher is better)": c.insertion_auc} for name, c in curves.items()])
st.dataframe(table, hide_index=True, width="stretch", key="auc",
             column_config={c: st.column_config.NumberColumn(format="%.4f") for c in table.columns[1:]})
first = next(iter(curves.values()))
st.caption(f"{size} × {size} = {size * size:,} pixels, ranked by each map resized bilinearly to the image (ties "
           f"broken by position); {steps} equal chunks. All curves start at p = {first.deletion[0]:.4f} (the "
           f"image) and end at p = {first.deletion[-1]:.4f} (the baseline). Area: trapezoid rule over the "
           f"fraction of pixels (0…1). Random order: uniform noise with seed {RANDOM_SEED}.")


def arrays() -> dict:
    out = {"fractions": first.fractions}
    for name, c in curves.items():
        out[f"{name}/deletion"] = c.deletion
        out[f"{name}/insertion"] = c.insertion
    return out


curve_rows = pd.DataFrame([{"map": labels[name], "fraction": f, "deletion": d, "insertion": ins}
                           for name, c in curves.items() for f, d, ins in zip(c.fractions, c.deletion, c.insertion)])
analysed.downloads({"curves": curves_fig}, f"faithfulness_{app.entry.name}",
                   tables={"auc": table, "curves": curve_rows}, arrays=arrays, key="faithfulness_export",
                   settings_json=app.settings_json(page="faithfulness", target_class=classes[target],
                                                   analysis=analysed.page_settings()))
st.caption(f"{app.entry.name} ({describe(card)}) on {app.image_label}, on {app.device}.")
