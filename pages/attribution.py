"""Masks vs attributions: does a module's soft mask light up where the classifier's evidence
is? The mask (reduced over channels, resized to the image) beside |IG|, signed IG, Grad-CAM
and Occlusion maps of one class, each on its own colour bar in its own units; three
agreement numbers per method, each beside the band chance gives (random maps as smooth as
the mask), and, when the checkpoint has a dataset report, the corrected tests over many
images with their verdicts."""
import pandas as pd
import streamlit as st

from resattn import analysis, viz
from resattn.analysis.agreement import METRIC_LABELS
from resattn.analysis.nulls import DEFAULT_GRID, image_agreement
from resattn.analysis.reduce import ANALYSIS_REDUCTION_LABELS as REDUCTIONS
from resattn.analysis.reduce import to_image_size
from resattn.analysis.significance import agreement_summary, agreement_verdict, image_agreement_verdict
from resattn.errors import ResattnError
from ui import analysis_cache as analysed
from ui import state
from ui.cards import describe

UNITS = {"abs_ig": ("|IG|", "|IG| (logit)"), "ig": ("IG", "IG (logit, signed)"), "gradcam": ("Grad-CAM", "Grad-CAM"),
         "occlusion": ("drop", "logit drop")}

app = state.current()
st.title("Masks vs attributions")
st.markdown("A soft mask says where a module *lets features through*; an attribution method says which pixels "
            "*the prediction depends on*. Do they agree, more than chance would? Each map keeps its own units: "
            "nothing is stretched to 0…1 unless you ask for it.")
trace = app.require_trace("compare its masks with attributions")
key, image, size, card = app.key(), app.image, app.input_size(), app.entry.card
analysed.use_settings("target", "methods", "camlayer", "igsteps", "topk", "normalise", "areduce")
masked = [m.name for m in trace.modules if m.mask is not None]
classes = trace.classes

# ----------------------------------------------------------------------------- controls
row = st.columns([1.1, 1.4, 0.9, 1.6])
reductions = list(analysis.ANALYSIS_REDUCTIONS)
if masked:
    state.ensure_choice("module", masked, masked[-1])
    row[0].selectbox("Attention module", masked, key="module", help="Whose soft mask M to compare.")
    module = trace.module(st.session_state["module"])
    state.ensure_choice("areduce", reductions, "mean")
    row[1].selectbox("Channel reduction", reductions, key="areduce", format_func=REDUCTIONS.get,
                     help="How the mask's C channels become one map: their mean; a sum weighted by the gradient of "
                          "the explained class at the module's output (Grad-CAM's weights, applied to M); or the "
                          "mean of the 8 channels with the most mask energy. The share of the mask's spatial variance "
                          "each keeps is shown under the maps.")
    reduction = st.session_state["areduce"]
    row[2].caption(f"{module.mask.shape[0]} channels")
else:
    module, reduction = None, "mean"
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

reduced = None
if module is not None:
    try:
        reduced = analysed.report_mask(key, image, module.name, reduction, target)
    except ResattnError as exc:
        st.error(f"The mask could not be reduced: {exc}")
mask_map = to_image_size(reduced.map, size) if reduced is not None else None
panels = []
if mask_map is not None:
    panels.append(viz.map_panel(f"mask M of {module.name}", mask_map, normalise=normalise, value_name="M"))
for method, result in results.items():
    panels.append(viz.map_panel(result.label, result.map, normalise=normalise, value_name=UNITS[method][0],
                                colorbar_title=UNITS[method][1]))
if not panels:
    st.stop()

st.subheader(f"Explaining **{classes[target]}** ({trace.probs[target]:.1%})")
maps_fig = viz.panels_figure(panels, image=trace.image, image_title=f"image ({size} px)", height=None)
st.plotly_chart(maps_fig, theme=None, key="attribution_maps")
notes = []
if mask_map is not None:
    kept = reduced.variance_kept
    notes.append(f"M: {REDUCTIONS[reduction]} of {module.name}'s mask ({module.mask.shape[1]} × "
                 f"{module.mask.shape[2]}), resized bilinearly to {size} × {size}; it keeps "
                 + (f"{kept:.0%}" if kept == kept else "none (the mask is flat)")
                 + " of the mask's spatial variance")
for method, result in results.items():
    p = result.params
    notes.append({"abs_ig": f"|IG|: the absolute value of IG summed over colour channels ({p.get('n_steps')} steps)",
                  "ig": f"IG: {p.get('n_steps')} steps from the mean colour, summed over colour channels "
                        "(signed; the map sums to about logit(image) − logit(baseline))",
                  "gradcam": f"Grad-CAM at {p.get('layer')} ({'×'.join(map(str, p.get('layer_size', ())))}), "
                             "ReLU, upsampled bilinearly",
                  "occlusion": f"Occlusion: drop of the logit when a {p.get('window')} px window "
                               f"(stride {p.get('stride')}) is set to the mean colour"}[method])
st.caption("; ".join(notes) + ". Signed maps use a diverging scale centred at 0, the others their own data range"
           + ("; **normalised for display**: each map divided by its largest magnitude (hover shows raw values)."
              if normalise else "; the colour bars show raw values."))

# ----------------------------------------------------------------------------- agreement on this image
table = pd.DataFrame()
if reduced is not None and results:
    st.subheader(f"Agreement of {module.name}'s mask with each attribution, against chance")
    st.columns([1, 2])[0].slider("Top k % of the pixels", 1, 50, key="topk",
                                 help="The region compared by IoU and the pointing game: the top k % of pixels "
                                      "of each map (ties broken at random, seeded).")
    fraction = st.session_state["topk"] / 100
    analysed.sync_settings()
    rows = image_agreement(reduced.map, {m: r.map for m, r in results.items()}, grid=DEFAULT_GRID,
                           fraction=fraction)
    labels = {m: r.label for m, r in results.items()}
    table = pd.DataFrame([{"method": labels[r["method"]], "metric": METRIC_LABELS[r["metric"]].replace(
        "top-20 %", f"top-{st.session_state['topk']} %"), "value": r["value"], "chance (null mean)": r["null_mean"],
        "null 2.5 %": r["null_low"], "null 97.5 %": r["null_high"], "p (uncorrected)": r["p"]} for r in rows])
    st.dataframe(table, hide_index=True, width="stretch", key="agreement",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in table.columns[2:]})
    st.markdown("\n".join(f"- {image_agreement_verdict(r, labels[r['method']])}" for r in rows))
    st.caption(f"Both maps are compared on a {DEFAULT_GRID} × {DEFAULT_GRID} grid (attributions averaged over "
               "blocks, the mask resized), with ties broken at random. The null: "
               f"{rows[0]['draws']} random maps with the mask's power spectrum (its spatial autocorrelation), "
               "compared with the same attribution. One image says where this value lies, not what the masks "
               "do; the dataset tests below say that.")
elif reduced is None and module is None:
    st.info("This checkpoint has no soft masks (attention 'none'), so there is nothing to compare the "
            "attributions with: choose an attention checkpoint in the sidebar.")

# ----------------------------------------------------------------------------- over the dataset
report_table = pd.DataFrame()
if module is not None:
    st.subheader("Over many images (dataset report)")
    report = analysed.report_rows(app.entry.name, "agreement.csv")
    if report is None:
        st.info(analysed.report_note(app.entry.name))
    elif report:
        st.markdown(agreement_summary(report))
        chosen = [r for r in report if r["module"] == module.name and r["reduction"] == reduction]
        report_table = pd.DataFrame([{
            "method": analysis.REPORT_METHOD_LABELS.get(r["method"], r["method"]),
            "metric": METRIC_LABELS.get(r["metric"], r["metric"]), "images": int(r["n_images"]),
            "value": float(r["value"]), "chance (null mean)": float(r["null_mean"]),
            "null 2.5 %": float(r["null_low"]), "null 97.5 %": float(r["null_high"]),
            "p (Holm)": float(r["p_holm"])} for r in chosen])
        st.dataframe(report_table, hide_index=True, width="stretch", key="report_agreement",
                     column_config={c: st.column_config.NumberColumn(format="%.3g")
                                    for c in report_table.columns[3:]})
        st.markdown("\n".join(f"- {agreement_verdict(r, tests=len(report))}" for r in chosen))
        st.caption("From agreement.csv of `python -m resattn.report`: means over images; the null shown is the less "
                   "significant of two (attributions of other images; random maps as smooth as the mask); p from a "
                   "paired t-test of each image's value against its own null mean, Holm-corrected over every test "
                   "of the checkpoint.")


def arrays() -> dict:
    out = {"image": trace.image}
    if mask_map is not None:
        out[f"mask_{module.name}_{reduction}"] = mask_map
    out.update({method: result.map.numpy() for method, result in results.items()})
    return out


analysed.downloads({"maps": maps_fig}, f"attribution_{app.entry.name}",
                   tables={"agreement": table, "dataset_agreement": report_table},
                   arrays=arrays, key="attribution_export",
                   settings_json=app.settings_json(page="attribution", target_class=classes[target],
                                                   analysis=analysed.page_settings()))
st.caption(f"{app.entry.name} ({describe(card)}) on {app.image_label}, on {app.device}.")
