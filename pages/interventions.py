"""Switch a mask off: run the image again with one module's soft mask replaced (0, 1, a
constant, its spatial mean, another image's mask, or a mask branch with random weights)
and see what changes: the top-5 predictions and the masks of the later modules. The change
is shown beside a reference (the changes other images' masks cause), and, when the
checkpoint has a dataset report, beside the causal test and the sanity check over many
images."""
import pandas as pd
import streamlit as st

from resattn import analysis, viz
from resattn.analysis.reduce import REDUCE_LABELS as REDUCTIONS
from resattn.analysis.reduce import REDUCE_MODES
from resattn.analysis.significance import band_side, causal_verdict
from resattn.errors import ResattnError
from ui import analysis_cache as analysed
from ui import cache, samples, state
from ui.cards import describe

MODES = list(analysis.INTERVENTIONS)
MODE_HELP = {
    "zero": "M = 0 everywhere.", "one": "M = 1 everywhere.", "constant": "M = the value of the slider everywhere.",
    "spatial_mean": "Each channel of M replaced by its mean over the positions: keeps *which* features, "
                    "removes *where*.",
    "from_image": "M taken from the same module on another image.",
    "randomise": "The convolution weights of the module's mask branch replaced by seeded random ones, each filter "
                 "keeping its trained norm; BatchNorm and its statistics kept, so the branch works at its trained "
                 "scale (Adebayo et al.'s model randomisation check, applied to one branch).",
}

app = state.current()
st.title("Switch a mask off")
trace = app.require_trace("intervene on its masks")
key, image, card = app.key(), app.image, app.entry.card
masked = [m.name for m in trace.modules if m.mask is not None]
if not masked:
    st.info("This checkpoint has no soft masks (attention 'none'), so there is no mask to switch off: choose an "
            "attention checkpoint in the sidebar.")
    st.stop()
analysed.use_settings("iv", "ivalue", "other", "seed", "later")
residual = card.residual
channel_attention = card.attention == "channel"

# ----------------------------------------------------------------------------- controls
row = st.columns([1.0, 3.2])
state.ensure_choice("module", masked, masked[0])
row[0].selectbox("Attention module", masked, key="module", help="The module whose mask is replaced.")
name = st.session_state["module"]
state.ensure_choice("iv", MODES, "zero")
row[1].radio("Replace its mask M by", MODES, key="iv", format_func=analysis.INTERVENTION_LABELS.get,
             horizontal=True, help=" ".join(f"**{analysis.INTERVENTION_LABELS[m]}**: {MODE_HELP[m]}" for m in MODES))
mode = st.session_state["iv"]
options = st.columns([1.6, 1.2, 1.2])
other_key, other_image, other_label = None, None, None
if mode == "constant":
    low = -1.0 if channel_attention else 0.0
    analysed.clamp_setting("ivalue", low, 1.0)
    options[0].slider("Constant value of M", low, 1.0, step=0.05, key="ivalue",
                      help="Channel attention's masks lie in [−1, 1], sigmoid masks in (0, 1).")
elif mode == "from_image":
    gallery = samples.choices()
    state.ensure_choice("other", list(gallery), "sample:astronaut")
    options[0].selectbox("Take the mask from", list(gallery), key="other", format_func=lambda i: gallery.get(i, i),
                         help="A second sample image; its mask of the same module replaces this image's.")
    other_image, other_sha = samples.load(st.session_state["other"])
    other_label = gallery.get(st.session_state["other"])
    other_key = cache.trace_key(app.entry, app.device, other_sha, app.input_size())
elif mode == "randomise":
    analysed.clamp_setting("seed", 0, 2**31 - 1)
    options[0].number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="seed",
                            help="The seed of the random initialisation: the same seed, the same branch.")
else:
    options[0].caption(MODE_HELP[mode])
state.ensure_choice("reduce", list(REDUCE_MODES), "mean")
options[1].selectbox("Channel reduction (maps)", list(REDUCE_MODES), key="reduce", format_func=REDUCTIONS.get)
later_options = masked[masked.index(name):]
state.ensure_choice("later", later_options, later_options[1] if len(later_options) > 1 else later_options[0])
options[2].selectbox("Show the masks of", later_options, key="later",
                     help="A module after the intervened one shows the knock-on effect; the intervened module "
                          "itself shows the replacement.")
analysed.sync_settings()
reduce, later = st.session_state["reduce"], st.session_state["later"]

# ----------------------------------------------------------------------------- compute
try:
    with st.spinner(f"Running the image with {analysis.INTERVENTION_LABELS[mode]} at {name}…"):
        result = analysed.intervention(key, image, name, mode, float(st.session_state["ivalue"]),
                                       int(st.session_state["seed"]), other_key, other_image, reduce,
                                       int(st.session_state.get("channel", 0)), int(st.session_state.get("k", 8)))
except ResattnError as exc:
    st.error(f"The intervention could not be run: {exc}")
    st.stop()

what = analysis.INTERVENTION_LABELS[mode] + (f" = {st.session_state['ivalue']:g}" if mode == "constant" else "") \
    + (f" ({other_label})" if mode == "from_image" else "") \
    + (f" (seed {st.session_state['seed']})" if mode == "randomise" else "")
before_best = max(result.top5, key=lambda r: r["before"])
after_best = max(result.top5, key=lambda r: r["after"])
st.subheader(f"{name}: {what}")
st.markdown(f"Prediction **{before_best['name']}** ({before_best['before']:.1%}) → "
            f"**{after_best['name']}** ({after_best['after']:.1%}).")

# The identity the paper's design promises, measured on this run.
ident = result.identity
if mode == "zero" and residual == "arl":
    st.info(f"**ARL: M = 0 gives H = (1 + 0)·T = T exactly**: the module becomes its trunk, a plain residual "
            f"stage. Measured at {name} on this run: max |H − T| = {ident['max_abs_H_minus_T']:.3g}.")
elif mode == "zero" and residual == "nal":
    st.info(f"**NAL: M = 0 gives H = 0·T = 0**: the module's output is switched off entirely, and everything "
            f"after it sees zeros. Measured at {name}: max |H| = {ident['max_abs_H']:.3g} "
            f"(max |T| = {ident['max_abs_T']:.3g}).")
else:
    st.caption(f"For comparison: with M = 0 an ARL module becomes its trunk exactly (H = (1 + 0)·T = T), while "
               f"a NAL module outputs 0 (H = 0·T). This checkpoint uses {str(residual).upper()}"
               + (f"; with M = 1, H = 2T here (measured max |H − 2T| = {ident['max_abs_H_minus_2T']:.3g})."
                  if mode == "one" and residual == "arl" else "."))

# A reference for the size of the change: the same module's mask taken from other images.
predicted = int(result.probabilities_before.argmax())
others = [(f"sample:{n}", samples.load(f"sample:{n}")) for n in samples.SKIMAGE_SAMPLES]
others = [(i, img, sha) for i, (img, sha) in others if sha != app.sha]
other_keys = tuple(cache.trace_key(app.entry, app.device, sha, app.input_size()) for _, _, sha in others)
try:
    swaps = analysed.mask_swap_changes(key, image, name, predicted, other_keys, tuple(img for _, img, _ in others))
except ResattnError as exc:
    swaps = []
    st.warning(f"The reference could not be computed: {exc}")
change = float(result.probabilities_after[predicted] - result.probabilities_before[predicted])
if swaps:
    low, high = min(swaps), max(swaps)
    where = {1: "larger than", -1: "a larger drop than", 0: "within"}[band_side(change, low, high)]
    st.markdown(f"The probability of **{trace.classes[predicted]}** changes by **{change:+.1%}**: {where} the range of "
                f"changes that the masks of {len(swaps)} other sample images cause at {name} ({low:+.1%} to "
                f"{high:+.1%}).")

left, right = st.columns([1.2, 1], gap="large")
with left:
    top5_fig = viz.top5_change_figure(result.top5, title="Top-5 classes before and after")
    st.plotly_chart(top5_fig, theme=None, key="top5_change")
    st.caption("The union of both runs' top-5 classes, ordered by the probability before.")
with right:
    change_fig = viz.mask_change_figure(result.mask_change, intervened=name, title="How much each mask changed")
    st.plotly_chart(change_fig, theme=None, key="mask_change")
    st.caption(f"Mean |M after − M before| over every value of each module's mask. Modules before {name} do not "
               f"change; {name} itself (grey) shows the replacement; later ones show the knock-on effect.")

# ----------------------------------------------------------------------------- maps of a later module
before_map, after_map = result.maps_before[later], result.maps_after[later]
panels = viz.before_after_panels(later, before_map, after_map, signed=channel_attention, value_name="M")
maps_fig = viz.panels_figure(panels, height=380)
st.plotly_chart(maps_fig, theme=None, key="later_maps")
st.caption(f"{REDUCTIONS[reduce].capitalize()} at the module's own resolution {before_map.shape[0]} × "
           f"{before_map.shape[1]}. Before and after share one colour scale; the difference is centred at 0.")

table = pd.DataFrame([{"class": r["name"], "before": r["before"], "after": r["after"], "change": r["change"]}
                      for r in result.top5])
changes = pd.DataFrame([{"module": m, "mean_abs_mask_change": v} for m, v in result.mask_change.items()])
with st.expander("The numbers"):
    st.dataframe(table, hide_index=True, width="stretch")
    st.dataframe(changes, hide_index=True, width="stretch")


# ----------------------------------------------------------------------------- over the dataset
st.subheader("Over many images (dataset report)")
causal = analysed.report_rows(app.entry.name, "causal.csv")
causal_table = pd.DataFrame()
if causal is None:
    st.info(analysed.report_note(app.entry.name))
else:
    chosen = [r for r in causal if r["module"] == name]
    causal_table = pd.DataFrame([{"replacement": r["replacement"], "images": int(r["n_images"]),
                                  "logit change": float(r["logit_change"]),
                                  "95 % CI": (f"{float(r['logit_change_low']):+.3f} to "
                                              f"{float(r['logit_change_high']):+.3f}"),
                                  "prediction changed": float(r["prediction_changed"]),
                                  "p (Holm)": float(r["p_holm"])} for r in chosen])
    st.dataframe(causal_table, hide_index=True, width="stretch", key="report_causal",
                 column_config={"logit change": st.column_config.NumberColumn(format="%+.3f"),
                                "prediction changed": st.column_config.NumberColumn(format="percent"),
                                "p (Holm)": st.column_config.NumberColumn(format="%.3g")})
    st.markdown("\n".join(f"- {causal_verdict(r)}" for r in chosen))
    sanity = analysed.report_rows(app.entry.name, "sanity.csv") or []
    rows = [r for r in sanity if r["module"] == name]
    if rows:
        st.markdown("**Sanity check** (Adebayo et al., 2018): the mask branches' weights randomised from the top "
                    "stage down, BatchNorm kept; how much of the trained mask survives (1 = unchanged).")
        st.dataframe(pd.DataFrame([{"randomised through": r["randomised_through"], "reduction": r["reduction"],
                                    "Spearman to trained": float(r["spearman_to_original"]),
                                    "SSIM to trained": float(r["ssim_to_original"])} for r in rows]),
                     hide_index=True, width="stretch", key="report_sanity")
    st.caption("From causal.csv and sanity.csv of `python -m resattn.report`: the explained class is each image's "
               "prediction; means over images with bootstrap intervals; p from a t-test of the logit change, "
               "Holm-corrected over the modules and replacements.")


def arrays() -> dict:
    out = {"probs_before": result.probabilities_before.numpy(), "probs_after": result.probabilities_after.numpy()}
    for module_name in result.maps_before:
        out[f"{module_name}/mask_{reduce}_before"] = result.maps_before[module_name].numpy()
        out[f"{module_name}/mask_{reduce}_after"] = result.maps_after[module_name].numpy()
    return out


analysed.downloads({"top5": top5_fig, "mask_change": change_fig, "maps": maps_fig},
                   f"intervention_{app.entry.name}_{name}_{mode}",
                   tables={"top5": table, "mask_change": changes, "dataset_causal": causal_table}, arrays=arrays,
                   key="intervention_export",
                   settings_json=app.settings_json(page="interventions", analysis=analysed.page_settings(),
                                                   identity=ident))
st.caption(f"{app.entry.name} ({describe(card)}) on {app.image_label}, on {app.device}.")
