"""Deletion & insertion (Petsiuk et al., 2018): does a map order the pixels by how much the
model needs them? Deleting a faithful map's top pixels first makes the class probability
fall fast; inserting them first makes it rise fast. The module's mask, each attribution
method and two kinds of random order (pixel noise, and blobs as smooth as the mask) on one
chart; every area under a curve beside the band of the random orders, and, when the
checkpoint has a dataset report, the corrected tests over many images."""
import numpy as np
import pandas as pd
import streamlit as st

from resattn import analysis, viz
from resattn.analysis.reduce import ANALYSIS_REDUCTION_LABELS as REDUCTIONS
from resattn.analysis.significance import band_verdict, difference_verdict
from resattn.analysis.study import order_label
from resattn.errors import ResattnError
from ui import analysis_cache as analysed
from ui import state
from ui.cards import describe

BASELINES = {"blur": "blurred image", "zeros": "zeros (the mean colour)",
             "impute": "imputed from the kept pixels (ROAD's idea)"}

app = state.current()
st.title("Deletion & insertion")
st.markdown("Rank the pixels by a map, highest first. **Deletion** replaces the top pixels by a fill, step by "
            "step: if the map is faithful the class probability collapses early (small area under the curve). "
            "**Insertion** pastes the top pixels into the fill: the probability should recover early (large "
            "area). Random orders are the reference every map should beat: pixel noise, and random blobs as "
            "smooth as the mask (deleting blobs differs from deleting scattered pixels, whatever the blobs mean).")
trace = app.require_trace("draw its deletion and insertion curves")
key, image, size, card = app.key(), app.image, app.input_size(), app.entry.card
analysed.use_settings("target", "methods", "camlayer", "igsteps", "steps", "baseline", "areduce", "nulls")
masked = [m.name for m in trace.modules if m.mask is not None]
classes = trace.classes

# ----------------------------------------------------------------------------- controls
row = st.columns([1.0, 1.3, 1.6, 1.0, 1.6], vertical_alignment="bottom")
reductions = list(analysis.ANALYSIS_REDUCTIONS)
if masked:
    state.ensure_choice("module", masked, masked[-1])
    row[0].selectbox("Attention module", masked, key="module")
    state.ensure_choice("areduce", reductions, "mean")
    row[1].selectbox("Mask reduction", reductions, key="areduce", format_func=REDUCTIONS.get)
else:
    row[0].caption("No soft masks in this checkpoint: attributions and random orders only.")
target = analysed.class_picker(row[2], trace, "Class",
                               "The curves follow this class's probability; the attributions explain it.")
analysed.clamp_setting("steps", 4, 64)
row[3].slider("Steps", 4, 64, step=4, key="steps", help="Points on each curve after the start: the pixels are "
                                                         "deleted / inserted in this many equal chunks.")
state.ensure_choice("baseline", list(BASELINES), "blur")
row[4].radio("Fill", list(BASELINES), key="baseline", format_func=BASELINES.get, horizontal=True,
             help="What deleted pixels become and what insertion starts from. Blur (sigma = 1/16 of the side) "
                  "removes detail without the sharp edges a constant patch adds; the imputed fill takes every "
                  "missing pixel from the kept pixels around it (plus a little noise), so the fill itself does not "
                  "show the model where pixels were removed.")
row = st.columns([2.2, 1.2, 1.0, 1.1], vertical_alignment="bottom")
methods, layer, ig_steps = analysed.attribution_controls(row[:3], key, image)
analysed.clamp_setting("nulls", 2, 50)
row[3].number_input("Random orders", 2, 50, key="nulls",
                    help="How many random orders of each kind (pixel noise; smooth) make the reference band.")
analysed.sync_settings()
steps, baseline, draws = int(st.session_state["steps"]), st.session_state["baseline"], int(st.session_state["nulls"])

# ----------------------------------------------------------------------------- compute
specs = {}
module = st.session_state.get("module") if masked else None
reduction = st.session_state.get("areduce", "mean")
if module:
    specs[f"mask:{module}"] = ("mask", module, reduction)
for method in methods:
    options = {"abs_ig": (("ig_steps", ig_steps),), "ig": (("ig_steps", ig_steps),), "gradcam": (("layer", layer),),
               "occlusion": ()}[method]
    specs[method] = ("attribution", method) + options
references = {f"random:{seed}": ("random", seed) for seed in range(draws)}
if module:
    references.update({f"random_smooth:{seed}": ("random_smooth", module, seed) for seed in range(draws)})
labels = {name: (f"mask M of {name[5:]} ({REDUCTIONS[reduction]})" if name.startswith("mask:") else
                 analysis.METHOD_LABELS[name]) for name in specs}
curves, reference_curves = {}, {}
try:
    with st.status("Computing the curves…", expanded=False) as status:
        bar = st.progress(0.0)
        jobs = list(specs.items()) + list(references.items())
        for i, (name, spec) in enumerate(jobs):
            status.update(label=f"{labels.get(name, 'random orders')} ({i + 1} of {len(jobs)})…")
            curve = analysed.faithfulness_curve(key, image, spec, target, steps=steps, baseline=baseline)
            (curves if name in specs else reference_curves)[name] = curve
            bar.progress((i + 1) / len(jobs))
        bar.empty()  # a finished progress bar would read as work still going on
        status.update(label=f"{len(jobs)} pairs of curves, {steps} steps, {BASELINES[baseline]}", state="complete")
except ResattnError as exc:
    st.error(f"The curves could not be computed: {exc}")
    st.stop()


def band(kind: str, curve: str) -> tuple[float, float, float]:
    """(mean, 2.5 %, 97.5 %) of the AUC over the random orders of one kind."""
    values = [getattr(c, f"{curve}_auc") for n, c in reference_curves.items() if n.split(":")[0] == kind]
    low, high = np.percentile(values, [2.5, 97.5])
    return float(np.mean(values)), float(low), float(high)


kinds = {"random": "random order (pixel noise)"}
plural = {"random": "random orders (pixel noise)", "random_smooth": "random smooth orders (like the mask)"}
if module:
    kinds["random_smooth"] = "random smooth order (like the mask)"
shown = dict(curves)
for kind, label in kinds.items():  # one representative of each kind on the chart
    shown[kind] = reference_curves[f"{kind}:0"]
    labels[kind] = label + " (seed 0)"

st.subheader(f"Probability of **{classes[target]}** as pixels are deleted or inserted")
curves_fig = viz.curves_figure({name: (c.fractions, c.deletion, c.insertion) for name, c in shown.items()},
                               labels=labels, y_title=f"p({classes[target]})")
st.plotly_chart(curves_fig, theme=None, key="curves")

rows = []
for name, c in curves.items():
    rows.append({"map": labels[name], "deletion AUC (lower is better)": c.deletion_auc,
                 "insertion AUC (higher is better)": c.insertion_auc})
for kind, label in kinds.items():
    rows.append({"map": f"{label}: mean of {draws}", "deletion AUC (lower is better)": band(kind, "deletion")[0],
                 "insertion AUC (higher is better)": band(kind, "insertion")[0]})
table = pd.DataFrame(rows)
bands = pd.DataFrame([{"reference": label, "curve": curve, "2.5 %": band(kind, curve)[1],
                       "97.5 %": band(kind, curve)[2]} for kind, label in kinds.items()
                      for curve in ("deletion", "insertion")])
st.dataframe(table, hide_index=True, width="stretch", key="auc",
             column_config={c: st.column_config.NumberColumn(format="%.4f") for c in table.columns[1:]})
st.dataframe(bands, hide_index=True, width="stretch", key="auc_bands",
             column_config={c: st.column_config.NumberColumn(format="%.4f") for c in ("2.5 %", "97.5 %")})
verdicts = []
for name, c in curves.items():
    kind = "random_smooth" if name.startswith("mask:") and module else "random"
    for curve, better in (("deletion", "lower"), ("insertion", "higher")):
        _, low, high = band(kind, curve)
        verdicts.append(band_verdict(labels[name], f"{curve} AUC", getattr(c, f"{curve}_auc"), low, high,
                                     better=better, reference=f"{draws} {plural[kind]}"))
st.markdown("\n".join(f"- {v}" for v in verdicts))
first = next(iter(shown.values()))
st.caption(f"{size} × {size} = {size * size:,} pixels, ranked by each map resized bilinearly to the image (ties "
           f"broken at random, seeded); {steps} equal chunks. All curves start at p = {first.deletion[0]:.4f} (the "
           f"image) and end at p = {first.deletion[-1]:.4f} (the fill alone). Area: trapezoid rule over the "
           f"fraction of pixels (0…1). Bands: the central 95 % of {draws} random orders of each kind (with few "
           "orders, close to their range). A mask is judged against orders as smooth as itself, an attribution "
           "against pixel noise.")

# ----------------------------------------------------------------------------- over the dataset
tests_table = pd.DataFrame()
st.subheader("Over many images (dataset report)")
file = "faithfulness.csv" if baseline == "blur" else f"faithfulness_{baseline}.csv"
report = analysed.report_rows(app.entry.name, file)
tests = analysed.report_rows(app.entry.name, "faithfulness_tests.csv")
if report is None:
    st.info(analysed.report_note(app.entry.name) if baseline in ("blur", "impute") else
            "The dataset report uses the blurred and the imputed fills; choose one of them to see it.")
else:
    wanted = {"abs_ig", "ig", "grad_cam", "occlusion", "random_pixel"}
    if module:
        wanted |= {f"mask:{module}:{reduction}", f"random_smooth:{module}"}
    chosen = [r for r in report if r["order"] in wanted]
    tests_table = pd.DataFrame([{"order": order_label(r["order"]), "images": int(r["n_images"]),
                                 "deletion AUC": float(r["deletion_auc"]), "deletion 95 % CI": (
                                     f"{float(r['deletion_low']):.3f} to {float(r['deletion_high']):.3f}"),
                                 "insertion AUC": float(r["insertion_auc"]), "insertion 95 % CI": (
                                     f"{float(r['insertion_low']):.3f} to {float(r['insertion_high']):.3f}")}
                                for r in chosen])
    st.dataframe(tests_table, hide_index=True, width="stretch", key="report_auc",
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("deletion AUC", "insertion AUC")})
    lines = []
    for r in tests or []:
        if r["fill"] == baseline and r["order"] in wanted:
            better = "lower" if r["curve"] == "deletion" else "higher"
            name = order_label(r["order"])
            lines.append(difference_verdict(name[:1].upper() + name[1:], order_label(r["reference"]),
                                            f"{r['curve']} AUC", float(r["difference"]),
                                            float(r["low"]), float(r["high"]), float(r["p_holm"]), better=better,
                                            n_images=int(r["n_images"])))
    st.markdown("\n".join(f"- {line}" for line in lines))
    st.caption(f"From {file} and faithfulness_tests.csv of `python -m resattn.report`: means over images with "
               "bootstrap intervals; each difference is paired (the same images), its p from a t-test, "
               "Holm-corrected over every comparison of the checkpoint.")


def arrays() -> dict:
    out = {"fractions": first.fractions}
    for name, c in {**curves, **reference_curves}.items():
        out[f"{name}/deletion"] = c.deletion
        out[f"{name}/insertion"] = c.insertion
    return out


curve_rows = pd.DataFrame([{"map": labels.get(name, name), "fraction": f, "deletion": d, "insertion": ins}
                           for name, c in {**curves, **reference_curves}.items()
                           for f, d, ins in zip(c.fractions, c.deletion, c.insertion)])
analysed.downloads({"curves": curves_fig}, f"faithfulness_{app.entry.name}",
                   tables={"auc": table, "bands": bands, "curves": curve_rows, "dataset": tests_table},
                   arrays=arrays, key="faithfulness_export",
                   settings_json=app.settings_json(page="faithfulness", target_class=classes[target],
                                                   analysis=analysed.page_settings()))
st.caption(f"{app.entry.name} ({describe(card)}) on {app.image_label}, on {app.device}.")
