"""Module explorer: one attention module's input, trunk T, mask M and output H side by side,
the mask over the image, its histogram, individual channels, and the paper's Figure 1 live
(the mask channels with the most energy, each above the trunk feature it scales)."""
import numpy as np
import streamlit as st

from resattn import viz
from resattn.analysis.reduce import REDUCE_LABELS as REDUCTIONS
from resattn.analysis.reduce import REDUCE_MODES, channel_energy
from ui import cache, export, state
from ui.cards import describe

SCALES = {"map": "per map", "stage": "per stage", "global": "global"}
TENSOR_NAMES = {"mask": "mask M", "trunk": "trunk T", "output": "output H", "input": "input X"}
GRID_CHANNELS = 16
FIGURE1_CHANNELS = 4  # "the few" channels of the paper's Figure 1
KEYS_SCRIPT = """
<script>
(function () {
  const doc = window.parent ? window.parent.document : document;
  if (doc.__resattnArrowKeys) return;
  doc.__resattnArrowKeys = true;
  doc.addEventListener("keydown", function (event) {
    const target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.isContentEditable
        || target.getAttribute("role") === "slider")) return;
    const key = event.key === "ArrowLeft" ? "prev_module" : event.key === "ArrowRight" ? "next_module" : null;
    if (!key) return;
    const button = doc.querySelector(".st-key-" + key + " button");
    if (button && !button.disabled) { button.click(); event.preventDefault(); }
  });
})();
</script>
"""

app = state.current()
st.title("Module explorer")
trace = app.require_trace("explore its attention modules")
key, image, size = app.key(), app.image, app.input_size()
card = app.entry.card
names = trace.names
if not names:
    st.warning("This network has no attention modules to explore.")
    st.stop()
state.ensure_choice("module", names)


def step(delta: int) -> None:
    i = names.index(st.session_state["module"]) if st.session_state.get("module") in names else 0
    st.session_state["module"] = names[(i + delta) % len(names)]


# ----------------------------------------------------------------------------- controls
nav = st.columns([1.3, 6, 1.3], vertical_alignment="bottom")
nav[0].button("Previous", key="prev_module", on_click=step, args=(-1,), icon=":material/arrow_back:",
              width="stretch")
nav[1].select_slider("Attention module", options=names, key="module",
                     help="Step through the modules with this slider, the buttons, or the ← → arrow keys.")
nav[2].button("Next", key="next_module", on_click=step, args=(1,), icon=":material/arrow_forward:",
              width="stretch")
st.html(KEYS_SCRIPT, unsafe_allow_javascript=True)

name = st.session_state["module"]
module = trace.module(name)
has_mask = module.mask is not None
channels = int(module.mask.shape[0] if has_mask else module.trunk.shape[0])

controls = st.columns([2.6, 1.0, 1.7, 1.4])
state.ensure_choice("reduce", list(REDUCE_MODES), "mean")
controls[0].radio("Channel reduction", list(REDUCE_MODES), key="reduce", format_func=REDUCTIONS.get,
                  horizontal=True, help="How the C channels of each tensor become one map.")
mode = st.session_state["reduce"]
if mode == "channel":
    st.session_state["channel"] = int(min(max(0, st.session_state.get("channel", 0)), channels - 1))
    controls[1].number_input("Channel", min_value=0, max_value=channels - 1, step=1, key="channel")
elif mode == "topk" and channels > 1:
    st.session_state["k"] = int(min(max(1, st.session_state.get("k", 8)), channels))
    controls[1].slider("k", min_value=1, max_value=channels, key="k",
                       help="The k channels with the largest mask energy (mean of squares), averaged.")
else:
    controls[1].caption(f"{channels} channels")
state.ensure_choice("scale", list(SCALES), "stage")
controls[2].radio("Colour scale locked", list(SCALES), key="scale", format_func=SCALES.get, horizontal=True,
                  help="Per map: each map spans its own range. Per stage: the same range for every module of "
                       "this stage. Global: the same range for every module of the network. Features (X, T, H) "
                       "share one range; the mask has its own.")
controls[3].slider("Overlay opacity", 0.0, 1.0, step=0.05, key="opacity")
channel, k, scale, opacity = int(st.session_state["channel"]), int(st.session_state["k"]), \
    st.session_state["scale"], float(st.session_state["opacity"])

# ----------------------------------------------------------------------------- maps and ranges


def maps_of(module_name: str, which: str, at_size: bool = False):
    mod = trace.module(module_name)
    ch = min(channel, getattr(mod, which).shape[0] - 1) if getattr(mod, which) is not None else 0
    return cache.reduced(key, image, module_name, which, mode, ch, k, size if at_size else None)


scope = {"map": [name], "stage": [m.name for m in trace.modules if m.stage == module.stage],
         "global": names}[scale]
feature_maps = {w: maps_of(name, w) for w in ("input", "trunk", "output")}
mask_map = maps_of(name, "mask") if has_mask else None
# Colour ranges: each map its own (per map), or one for the features and one for the masks
# of every module in the stage / network.
feature_scope = None if scale == "map" else [maps_of(n, w) for n in scope for w in ("input", "trunk", "output")]
mask_scope = None if scale == "map" or not has_mask else \
    [maps_of(n, "mask") for n in scope if trace.module(n).mask is not None]

residual = card.residual
combination = "H = T (no mask)" if not has_mask else ("H = (1+M)·T" if residual == "arl" else "H = M·T")
panels = [viz.map_panel("input X", feature_maps["input"], signed=True, range_of=feature_scope, value_name="X"),
          viz.map_panel("trunk T", feature_maps["trunk"], signed=True, range_of=feature_scope, value_name="T")]
if has_mask:
    panels.append(viz.map_panel("soft mask M", mask_map, signed=False, range_of=mask_scope, value_name="M"))
panels.append(viz.map_panel(f"output {combination}", feature_maps["output"], signed=True, range_of=feature_scope,
                            value_name="H"))
h, w = module.trunk.shape[1:]
st.subheader(f"{name} · stage {module.stage} · {channels} channels at {h} × {w}")
st.caption(f"{app.entry.name} ({describe(card)}); reduction: {REDUCTIONS[mode]}"
           f"{f' {channel}' if mode == 'channel' else f' (k = {k})' if mode == 'topk' else ''}; "
           f"colour scale {SCALES[scale]}. Hover a map for its raw values.")
panels_fig = viz.panels_figure(panels, height=330)
st.plotly_chart(panels_fig, theme=None, key="panels")

# ----------------------------------------------------------------------------- overlay, histogram
left, right = st.columns([1.1, 1], gap="large")
overlay_which = "mask" if has_mask else "trunk"
overlay_map = maps_of(name, overlay_which, at_size=True)
if has_mask:
    overlay_fig = viz.overlay_figure(trace.image, overlay_map, opacity=opacity, range_of=mask_scope,
                                     title=f"Mask M of {name} over the image")
else:
    overlay_fig = viz.overlay_figure(trace.image, overlay_map, opacity=opacity, signed=True, colorbar_title="T",
                                     value_name="T", title=f"Trunk T of {name} over the image (this model has no mask)")
with left:
    st.plotly_chart(overlay_fig, theme=None, key="overlay")
    st.caption(f"The reduced map resized bilinearly from {h} × {w} to the input's {size} × {size} pixels.")
with right:
    hist_which = "mask" if has_mask else "trunk"
    hist_range = (-1.0, 1.0) if card.attention == "channel" else ((0.0, 1.0) if has_mask else None)
    counts, edges = cache.histogram(key, image, name, hist_which, 60, hist_range)
    hist_fig = viz.histogram_figure(counts, edges, title=f"All values of {TENSOR_NAMES[hist_which]} in {name}",
                                    x_title=TENSOR_NAMES[hist_which], height=440)
    st.plotly_chart(hist_fig, theme=None, key="histogram")
    if has_mask:
        values = module.mask.numpy()
        st.caption(f"{values.size:,} values · mean {values.mean():.3f} · std {values.std():.3f} · "
                   f"min {values.min():.3f} · max {values.max():.3f}"
                   + (" · channel attention normalises each position's channel vector to unit length, so "
                      "values lie in [−1, 1]" if card.attention == "channel" else ""))

# ----------------------------------------------------------------------------- channel grid
st.subheader("Individual channels")
grid_options = [t for t in ("mask", "trunk", "output", "input") if getattr(module, t) is not None]
state.ensure_choice("tensor", grid_options, "mask")
st.radio("Tensor", grid_options, key="tensor", format_func=TENSOR_NAMES.get, horizontal=True)
which = st.session_state["tensor"]
selection = cache.channel_selection(key, image, name, which, GRID_CHANNELS, "energy")
grid_maps, indices = selection
grid_fig = viz.channel_grid_figure(grid_maps, [f"ch {i}" for i in indices], signed=which != "mask",
                                   colorbar_title=which[0].upper() if which != "input" else "X",
                                   value_name=TENSOR_NAMES[which], cols=8)
st.plotly_chart(grid_fig, theme=None, key="grid")
shrunk = grid_maps.shape[-1] != getattr(module, which).shape[-1]
st.caption(f"{TENSOR_NAMES[which].capitalize()} in the {len(indices)} channels where the mask has the most energy "
           f"(mean of M² over the positions){'' if has_mask else ' (no mask here: the trunk’s energy)'}, the same "
           f"channels for every tensor; one shared colour scale{'; shrunk to 32 × 32 for display' if shrunk else ''}.")

# ----------------------------------------------------------------------------- the paper's Figure 1, live
figure1 = {}
st.subheader("The strongest mask channels and the features they scale")
if not has_mask:
    st.caption("This checkpoint has no soft masks, so there are no mask channels to compare.")
else:
    top = cache.ranked_channels(key, image, name)[:FIGURE1_CHANNELS]
    st.markdown(f"The paper's Figure 1, live: the {len(top)} channels of {name}'s mask with the most energy on this "
                "photo (mean of M² over the positions), each over the image, above the trunk feature T it scales "
                "and the result H.")
    masks_at_size = [cache.reduced(key, image, name, "mask", "channel", c, size=size) for c in top]
    blended, (m_lo, m_hi) = viz.blend_maps(trace.image, masks_at_size, opacity=0.65)
    energies = channel_energy(module.mask).tolist()
    columns = st.columns(len(top))
    for column, c, picture in zip(columns, top, blended):
        energy = energies[c]
        column.image(picture, width="stretch",
                     caption=f"mask channel {c} · energy {energy:.3f}")
    st.caption(f"Mask channels resized to {size} × {size} over the image, one colour scale from {m_lo:.3f} "
               f"(dark) to {m_hi:.3f} (bright) in {viz.MASK_SCALE.lower()}.")
    pair = [module.trunk[top], module.output[top]]  # T and H on one colour scale
    labels = [f"ch {c}" for c in top]
    for which, title in (("trunk", "Trunk T of these channels: what each mask scales"),
                         ("output", f"Output H = {'(1 + M)·T' if card.residual == 'arl' else 'M·T'}")):
        maps = getattr(module, which)[top]
        figure1[which] = viz.channel_grid_figure(maps, labels, signed=True, range_of=pair, cols=len(top), title=title,
                                                 colorbar_title=which[0].upper(), value_name=which[0].upper(),
                                                 tile_px=150)
        st.plotly_chart(figure1[which], theme=None, key=f"figure1_{which}")
    st.caption("T and H share one colour scale, so what the mask amplifies shows as stronger colour in H.")


def module_arrays() -> dict[str, np.ndarray]:
    out = {f"{name}/{w}": getattr(module, w).numpy() for w in ("input", "trunk", "mask", "output")
           if getattr(module, w) is not None}
    out.update({f"{name}/{w}_reduced_{mode}": z for w, z in feature_maps.items()})
    if mask_map is not None:
        out[f"{name}/mask_reduced_{mode}"] = mask_map
    out["image"] = trace.image
    return out


export.downloads({"maps": panels_fig, "overlay": overlay_fig, "histogram": hist_fig, "channels": grid_fig,
                  **{f"figure1_{which}": fig for which, fig in figure1.items()}},
                 f"{app.entry.name}_{name}", arrays=module_arrays,
                 settings_json=app.settings_json(page="explorer"), key="explorer_export")
