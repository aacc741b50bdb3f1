"""Compare attention types: the same image through mixed, channel, spatial, NAL and the
no-attention baseline at once (or, as the second set, ARL and NAL at depth 56 and 92), one
row per module and one column per model, plus mask statistics per model and stage. Networks
of different depth share the page: rows follow the stages, and a network without a module
at some row shows "no such module" there. A toggle puts the seeds of one type (other training
runs, from the seeds folder) in place of the types, and a panel below the grid sets how much two
seeds differ beside how much the types differ, on this image and over the dataset (issue 19).
Large fonts: made to be read off a projector."""
import pandas as pd
import streamlit as st

from resattn import consistency, stats, viz
from resattn.analysis.reduce import REDUCE_LABELS as REDUCTIONS
from resattn.analysis.reduce import REDUCE_MODES
from resattn.trace import module_order
from ui import cache, export, state
from ui import consistency as consistency_ui
from ui.cards import describe, pick_depth, pick_zoo

SHOW = {"mask": "soft mask M", "output": "output H", "trunk": "trunk T"}
SETS = {"types": "attention types (mixed, channel, spatial, NAL, none)",
        "depth": "depth: ARL and NAL at 56 and 92 layers"}
MASK_SCALES = viz.MASK_SCALES  # how the grid colours masks (resattn.viz.compare_axes)
FONT = viz.PROJECTOR_FONT_SIZE

app = state.current()
st.title("Compare attention types")
if app.entry is None or app.image is None:
    st.info("Choose a checkpoint and an image in the sidebar to compare attention types.")
    st.stop()
state.ensure_choice("cmpset", list(SETS), "types")
st.radio("Networks", list(SETS), key="cmpset", format_func=SETS.get, horizontal=True)
zoo, missing = (pick_zoo if st.session_state["cmpset"] == "types" else pick_depth)(app.usable, app.entry)

# Seeds (issue 19): networks of one type trained with other seeds (the seeds folder beside the
# zoo). The toggle puts the seeds of one type in place of the types; the panel below the grid
# sets their spread beside the differences between the types.
nets, entry_of = consistency_ui.networks(app)
seeds = consistency.seed_sets(nets)
set_kinds = [consistency.type_of(consistency.config_label(entry.card)) for _, entry in zoo]
seeded = [kind for kind in set_kinds if kind in seeds]
current_kind = consistency.type_of(consistency.config_label(app.entry.card)) if app.entry.card else None
state.ensure_choice("cmpcols", ["types", "seeds"], "types")
seed_controls = st.columns([2.0, 1.7, 1.3])
seed_controls[0].toggle("Seeds of one type in place of the types",
                        value=bool(seeded) and st.session_state["cmpcols"] == "seeds",
                        key="_cmpseeds", disabled=not seeded,
                        on_change=lambda: st.session_state.update(cmpcols="seeds" if st.session_state["_cmpseeds"]
                                                                  else "types"),
                        help="Two networks of one type trained with different seeds differ too. Side by side, they "
                             "show how much of a difference between types could be the seed.")
reference = None
if seeded:
    state.ensure_choice("cmpseedtype", seeded, current_kind)
    seed_controls[1].selectbox("Type whose seeds are compared", seeded, key="cmpseedtype",
                               format_func=consistency.type_label)
    reference = st.session_state["cmpseedtype"]
showing_seeds = reference is not None and st.session_state["cmpcols"] == "seeds"
if showing_seeds:
    runs = seeds[reference]
    zoo, missing = [(consistency_ui.seed_column_label(n, runs), entry_of[n]) for n in runs], []
if missing:
    st.info(f"Not in the checkpoint folder: **{', '.join(missing)}**. Train them with "
            "`python -m resattn.sweep plans/zoo_v2.toml` (or point `RESATTN_CHECKPOINTS` at a folder that has "
            "them); the page shows the others.")
if not showing_seeds and app.entry is not None and all(entry.name != app.entry.name for _, entry in zoo):
    st.caption(f"The sidebar's checkpoint **{app.entry.name}** was trained with another recipe than this set; "
               "the page shows networks trained alike, so that they differ only in what the columns name.")

controls = st.columns([1.2, 1.2, 2.0, 1.0])
state.ensure_choice("show", list(SHOW), "mask")
controls[0].radio("Show", list(SHOW), key="show", format_func=SHOW.get, horizontal=True)
state.ensure_choice("reduce", list(REDUCE_MODES), "mean")
controls[1].selectbox("Channel reduction", list(REDUCE_MODES), key="reduce", format_func=REDUCTIONS.get)
state.ensure_choice("cmpscale", list(MASK_SCALES), "row")
show = st.session_state["show"]
if show == "mask":
    controls[2].radio("Mask colour scale", list(MASK_SCALES), key="cmpscale", format_func=MASK_SCALES.get,
                      help="Mixed and spatial attention end in a sigmoid, so M is in (0, 1). Channel attention "
                           "divides each position's channel vector by its length, so M is in [−1, 1] and its "
                           "values are not comparable to a sigmoid's: it gets its own scale. Per module (the "
                           "default), every row spans the values of that module's masks, so each module's "
                           "pattern shows even where its values lie in a narrow band; the colour bars beside "
                           "the rows give the ranges. Fixed: the activation's whole range.")
else:
    controls[2].caption("Features have no fixed range: each row (module) shares one symmetric colour scale "
                        "across the models.")
controls[3].slider("Overlay opacity", 0.0, 1.0, step=0.05, key="opacity")
mode, opacity = st.session_state["reduce"], float(st.session_state["opacity"])

# ----------------------------------------------------------------------------- traces
progress = st.progress(0.0, text="Running the image through each model…")
traces = {}
for i, (label, entry) in enumerate(zoo):
    trace = app.trace(entry, show_error=False)
    if trace is None:
        st.error(f"**{entry.name}** ({label}) could not be used: "
                 f"{state.failed_checkpoints().get(entry.name, (None, 'unknown error'))[1]}")
    else:
        traces[label] = (entry, trace)
    progress.progress((i + 1) / max(1, len(zoo)), text=f"{entry.name}: done")
progress.empty()
if not traces:
    st.stop()

display_size = max(app.input_size(entry) for entry, _ in traces.values())
# Rows in network order (stage, then position in the stage), whichever network has them.
modules = sorted({name for _, trace in traces.values() for name in trace.names}, key=module_order)
first_trace = next(iter(traces.values()))[1]
image = first_trace.image if first_trace.image.shape[0] == display_size else \
    cache.network_view(app.image, display_size)


def column_maps(entry, trace):
    key = app.key(entry)
    maps = {}
    for name in modules:
        if name not in trace.names:
            continue  # drawn as "no such module"
        if getattr(trace.module(name), show) is None:
            maps[name] = None  # the baseline's mask
            continue
        maps[name] = cache.reduced(key, app.image, name, show, mode, int(st.session_state["channel"]) if
                                   mode == "channel" else 0, int(st.session_state["k"]), display_size)
    return maps


all_maps = {label: column_maps(entry, trace) for label, (entry, trace) in traces.items()}
coloraxes, axes_of = viz.compare_axes(all_maps, modules, show=show, mask_scale=st.session_state["cmpscale"],
                                      attention={label: entry.card.attention for label, (entry, _) in traces.items()})
columns = []
for label, (entry, trace) in traces.items():
    best, p = trace.top(1)[0]
    columns.append(viz.CompareColumn(label, f"{best}<br>{p:.0%}", all_maps[label], axes_of[label]))

grid = viz.compare_figure(columns, modules, coloraxes, image=image, opacity=opacity, font_size=FONT,
                          value_name={"mask": "M", "output": "H", "trunk": "T"}[show],
                          empty_text="no mask<br>(baseline)" if show == "mask" else "—")
st.plotly_chart(grid, theme=None, key="compare_grid", config={"displayModeBar": False})
scale_note = (f" Colour scale: {MASK_SCALES[st.session_state['cmpscale']]}." if show == "mask" else
              " Colour scale: one symmetric scale per row.")
st.caption(f"{SHOW[show].capitalize()}, {REDUCTIONS[mode]}, resized to {display_size} × {display_size} and laid "
           f"over the image (opacity {opacity:.2f}). Each column is headed by that model's top prediction."
           f"{scale_note} Hover a cell for raw values.")

consistency_ui.panel(app, reference, seeds, nets, entry_of, set_kinds)

# ----------------------------------------------------------------------------- statistics
st.header("Mask statistics per model and stage")
rows = []
for label, (entry, trace) in traces.items():
    for stage, values in cache.stage_statistics(app.key(entry), app.image).items():
        rows.append({"model": label, "stage": stage, **values})
if rows:
    stat_names = list(stats.MASK_STATS)
    stats_fig = viz.stats_figure(rows, stat_names, stats.MASK_STAT_LABELS, cols=3, font_size=FONT)
    st.plotly_chart(stats_fig, theme=None, key="stats", config={"displayModeBar": False})
    st.caption(f"Over every value of the stage's masks: mean, standard deviation, fraction below {stats.NEAR:g} "
               f"in magnitude and above {1 - stats.NEAR:g}; decision entropy = mean binary entropy of |M| "
               "(1 bit: all 0.5, undecided; 0: all exactly 0 or 1); spatial entropy = entropy of the "
               "channel-mean |M| as a distribution over positions (1: spread evenly, lower: concentrated). "
               "Channel attention's values are in [−1, 1]: their magnitude counts.")
else:
    stats_fig = None
    st.info("None of these models has attention masks.")

summary = pd.DataFrame([{
    "model": label, "checkpoint": entry.name, "card": describe(entry.card),
    "prediction": f"{trace.top(1)[0][0]} ({trace.top(1)[0][1]:.1%})",
} for label, (entry, trace) in traces.items()])
st.dataframe(summary, hide_index=True, width="stretch")
if rows:
    with st.expander("The statistics as a table"):
        st.dataframe(pd.DataFrame(rows).round(4), hide_index=True, width="stretch")


def shown_arrays():
    out = {"image": image}
    for label, maps in all_maps.items():
        for name, z in maps.items():
            if z is not None:
                out[f"{traces[label][0].name}/{name}/{show}_{mode}"] = z
    return out


figures_out = {"grid": grid}
if stats_fig is not None:
    figures_out["statistics"] = stats_fig
export.downloads(figures_out, "compare", arrays=shown_arrays,
                 settings_json=app.settings_json(page="compare", models={lab: e.name for lab, (e, _) in traces.items()}),
                 key="compare_export")
