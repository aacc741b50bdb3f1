"""Masks vs attributions: does a module's soft mask light up where the classifier's evidence
is? The mask (reduced over channels, resized to the image) beside Integrated Gradients,
Grad-CAM and Occlusion maps of one class, each on its own colour bar in its own units, and
three agreement numbers per method."""
import pandas as pd
import streamlit as st

from resattn import analysis
from resattn import figures_analysis as fa
from resattn.analysis.reduce import REDUCE_LABELS as REDUCTIONS, REDUCE_MODES
from resattn.errors import ResattnError
from ui import analysis_cache as analysed
from ui import cache, state
from ui.cards import describe

UNITS = {"ig": ("IG", "IG (logit)"), "gradcam": ("Grad-CAM", "Grad-CAM"), "occlusion": ("drop", "logit drop")}

app = state.current()
st.title("Masks vs attributions")
st.markdown("A soft mask says where a module *lets features through*; an attribution method says which pixels "
            "*the prediction depends on*. Do they agree? Each map keeps its own units: nothing is stretched to "
            "0…1 unless you ask for it.")
trace = app.require_trace("compare its masks with attributions")
key, image, size, card = app.key(), app.image, app.input_size(), app.entry.card
analysed.use_settings("target", "methods", "camlayer", "igsteps", "topk", "normalise")
masked = [m.name for m in trace.modules if m.mask is not None]
classes = trace.classes

# ----------------------------------------------------------------------------- controls
row = st.columns([1.1, 1.4, 0.9, 1.6])
if masked:
    state.ensure_choice("module", masked, masked[-1])
    row[0].selectbox("Attention module", masked, key="module", help="Whose soft mask M to compare.")
    module = trace.module(st.session_state["module"])
    channels = int(module.mask.shape[0])
    state.ensure_choice("reduce", list(REDUCE_MODES), "mean")
    row[1].selectbox("Channel reduction", list(REDUCE_MODES), key="reduce", format_func=REDUCTIONS.get,
                     help="How the mask's C channels become one map.")
    mode = st.session_state["reduce"]
    if mode == "channel":
        st.session_state["channel"] = int(min(max(0, st.session_state.get("channel", 0)), channels - 1))
        row[2].number_input("Channel", min_value=0, max_value=channels - 1, step=1, key="channel")
    elif mode == "topk":
        st.session_state["k"] = int(min(max(1, st.session_state.get("k", 8)), channels))
        row[2].number_input("k channels", min_value=1, max_value=channels, step=1, key="k",
                            help="Mean of the k channels with the largest mask energy (mean of squares).")
    else:
        row[2].caption(f"{channels} channels")
else:
    module, mode = None, "mean"
    row[0].caption("This checkpoint has no soft masks: only the attributions are shown.")
target = analysed.class_picker(row[3], trace, "Explain class", "Every attribution explains this class's logit.")

row = st.columns([3.0, 1.1, 0.9, 1.5], vertical_alignment="bottom")
methods, layer, ig_steps = analysed.attribution_controls(row[:3], key, image)
row[3].toggle("Normalise for display", key="normalise",
              help="Divide each map by its largest magnitude. Off: colour bars show the maps' real values.")
analysed.clamp_setting("topk", 1, 50)
analysed.sync_settings()
normalise = bool(st.session_state["normalise"])

# ----------------------------------------------------------------------------- compute
results = {}
if methods:
    try:
        with st.status("Computing attributions…", expanded=False) as status:
            bar = st.progress(0.0)
            for i, method in enumerate(methods):
                status.update(label=f"{analysis.METHOD_LABELS[method]} ({i + 1} of {len(methods)})…")
                results[method] = analysed.attribution(key, image, method, target, layer=layer, ig_steps=ig_steps)
                bar.progress((i + 1) / len(methods), text=f"{analysis.METHOD_LABELS[method]}: done")
            bar.empty()  # a finished progress bar would read as work still going on
            status.update(label="Attributions ready (computed in " + ", ".join(
                f"{r.label} {r.seconds:.1f} s" for r in results.values()) + ")", state="complete")
    except ResattnError as exc:
        st.error(f"The attributions could not be computed: {exc}")
else:
    st.info("Choose at least one attribution method.")

mask_map = cache.reduced(key, image, module.name, "mask", mode, int(st.session_state.get("channel", 0)),
                         int(st.session_state.get("k", 8)), size) if module is not None else None
panels = []
if mask_map is not None:
    panels.append(fa.map_panel(f"mask M of {module.name}", mask_map, normalise=normalise, value_name="M"))
for method, result in results.items():
    panels.append(fa.map_panel(result.label, result.map, normalise=normalise, value_name=UNITS[method][0],
                               colorbar_title=UNITS[method][1]))
if not panels:
    st.stop()

st.subheader(f"Explaining **{classes[target]}** ({trace.probs[target]:.1%})")
n_cells = len(panels) + 1
maps_fig = fa.maps_row_figure(panels, image=trace.image, image_title=f"image ({size} px)",
                              height=int(min(440, max(280, 1000 / n_cells + 95))))
st.plotly_chart(maps_fig, theme=None, key="attribution_maps")
notes = []
if mask_map is not None:
    notes.append(f"M: {REDUCTIONS[mode]} of {module.name}'s mask ({module.mask.shape[1]} × {module.mask.shape[2]}), "
                 f"resized bilinearly to {size} × {size}")
for method, result in results.items():
    p = result.params
    notes.append({"ig": f"IG: {p.get('n_steps')} steps from the mean colour, summed over colour channels "
                        "(signed; the map sums to about logit(image) − logit(baseline))",
                  "gradcam": f"Grad-CAM at {p.get('layer')} ({'×'.join(map(str, p.get('layer_size', ())))}), "
                             "ReLU, upsampled bilinearly",
                  "occlusion": f"Occlusion: drop of the logit when a {p.get('window')} px window "
                               f"(stride {p.get('stride')}) is set to the mean colour"}[method])
st.caption("; ".join(notes) + ". Signed maps use a diverging scale centred at 0, the others their own data range"
           + ("; **normalised for display**: each map divided by its largest magnitude (hover shows raw values)."
              if normalise else "; the colour bars show raw values."))

# ----------------------------------------------------------------------------- agreement
table = pd.DataFrame()
if mask_map is not None and results:
    st.subheader(f"Agreement of {module.name}'s mask with each attribution")
    st.columns([1, 2])[0].slider("Top k % of the pixels", 1, 50, key="topk",
                                 help="The region compared by IoU and the pointing game: the top k % of pixels "
                                      "of each map.")
    fraction = st.session_state["topk"] / 100
    analysed.sync_settings()
    rows = []
    for method, result in results.items():
        agree = analysis.agreement(mask_map, result.map, fraction)
        rows.append({"method": result.label, "Spearman ρ": agree.spearman,
                     f"IoU of top {st.session_state['topk']} %": agree.iou,
                     "pointing game": "hit" if agree.pointing else "miss"})
    table = pd.DataFrame(rows)
    st.dataframe(table, hide_index=True, width="stretch", key="agreement",
                 column_config={"Spearman ρ": st.column_config.NumberColumn(format="%.3f"),
                                f"IoU of top {st.session_state['topk']} %":
                                    st.column_config.NumberColumn(format="%.3f")})
    st.caption("Spearman ρ: do the two maps rank the pixels alike (−1…1; empty when a map is constant, e.g. a "
               "Grad-CAM map that ReLU set to 0 everywhere). IoU: overlap of the two top-k % regions (0…1). "
               "Pointing game: does the mask's peak fall inside the attribution's top-k % region?")
elif mask_map is None:
    st.info("This checkpoint has no soft masks (attention 'none'), so there is nothing to compare the "
            "attributions with: choose an attention checkpoint in the sidebar.")


def arrays() -> dict:
    out = {"image": trace.image}
    if mask_map is not None:
        out[f"mask_{module.name}_{mode}"] = mask_map
    out.update({method: result.map for method, result in results.items()})
    return out


analysed.downloads({"maps": maps_fig}, f"attribution_{app.entry.name}", tables={"agreement": table},
                   arrays=arrays, key="attribution_export",
                   settings_json=app.settings_json(page="attribution", target_class=classes[target],
                                                   analysis=analysed.page_settings()))
st.caption(f"{app.entry.name} ({describe(card)}) on {app.image_label}, on {app.device}.")
