"""How it works: the paper's idea in a few paragraphs and formulas, each illustrated live on
the current image and checkpoint (measured on the traced tensors, not drawn by hand)."""
import math

import streamlit as st

from resattn import viz
from ui import cache, export, state
from ui.cards import model_label, pick_zoo

app = state.current()
st.title("How a Residual Attention Network works")
st.markdown(
    "F. Wang et al., *Residual Attention Network for Image Classification* (CVPR 2017), stack **attention "
    "modules** in an ordinary residual network. Each module looks at its input *x* twice: a **trunk branch** "
    "processes the features, and a **soft mask branch** decides, for every channel and position, how much of "
    "the trunk's output to let through.")

st.header("1 · Trunk and soft mask")
st.markdown("The trunk is *t* = 2 ordinary residual units. The mask branch shrinks the feature map with "
            "max-pooling down to the stage's coarsest resolution (bottom-up: a wide view of the image), then "
            "grows it back with bilinear up-sampling (top-down) and ends in two 1×1 convolutions and an "
            "activation *f*; so the mask has exactly the trunk's shape.")
st.latex(r"T(x) = \text{trunk}(x) \qquad M(x) = f\big(\,s(x)\,\big) \qquad "
         r"s = \text{conv}_{1\times1}\circ\text{conv}_{1\times1}\circ \text{up}\circ\text{down}")

st.header("2 · Combining them: (1 + M)·T, not M·T")
st.markdown("Naively multiplying, **H = M·T** (naive attention learning, NAL), can only shrink features, since "
            "|M| ≤ 1 (and channel attention, whose M can be negative, can also flip their sign). Stack many modules "
            "and the features fade away, and with them the gradient. The paper's **attention residual learning** "
            "(ARL) adds the trunk back, like a residual connection, and M = 0 leaves the features as they were. "
            "With a sigmoid mask (mixed and spatial attention, M in (0, 1)) the factor 1 + M lies between 1 and 2: "
            "the mask can only keep or amplify. Channel attention's M lies in [−1, 1], so 1 + M lies between 0 "
            "and 2: it can also attenuate a feature, down to 0, but never flip its sign.")
st.latex(r"H_{\text{NAL}}(x) = M(x)\cdot T(x) \qquad\qquad H_{\text{ARL}}(x) = \big(1 + M(x)\big)\cdot T(x)")

st.header("3 · Three activations, three kinds of attention")
st.markdown("With *x* the mask logits at position *i* and channel *c*:")
st.latex(r"f_{\text{mixed}}(x_{i,c}) = \frac{1}{1 + e^{-x_{i,c}}} \qquad "
         r"f_{\text{channel}}(x_{i,c}) = \frac{x_{i,c}}{\lVert x_i \rVert} \qquad "
         r"f_{\text{spatial}}(x_{i,c}) = \frac{1}{1 + e^{-(x_{i,c} - \mu_c)/\sigma_c}}")
st.markdown("**Mixed** squashes every value on its own. **Channel** attention normalises the vector of channels "
            "at each position to length 1, so every position gets the same total: it cannot prefer one place "
            "over another. **Spatial** attention normalises each channel over the positions (mean μ_c, "
            "standard deviation σ_c), so every channel is centred: it says *where*, not *which feature*. "
            "The paper found mixed attention best on CIFAR-10 (5.52 % error vs 6.24 % channel, 6.33 % spatial).")

trace = app.require_trace("see each idea measured on a real network")
key, card = app.key(), app.entry.card
names = trace.names
if not names:
    st.warning("This network has no attention modules.")
    st.stop()
state.ensure_choice("module", names)
figures_out = {}

st.divider()
st.header(f"Live, on {app.image_label} through {app.entry.name}")
st.selectbox("Attention module", names, key="module")
name = st.session_state["module"]
module = trace.module(name)

# ----------------------------------------------------------------------------- 1: T, M, H
st.subheader("T, M and H of one module")
t_map = cache.reduced(key, app.image, name, "trunk", "mean")
h_map = cache.reduced(key, app.image, name, "output", "mean")
panels = [viz.map_panel("trunk T", t_map, signed=True, range_of=[t_map, h_map], value_name="T")]  # T, H: one scale
if module.mask is not None:
    m_map = cache.reduced(key, app.image, name, "mask", "mean")
    panels.append(viz.map_panel("soft mask M", m_map, signed=False, value_name="M"))
combination = {"arl": "H = (1+M)·T", "nal": "H = M·T"}.get(card.residual, "H")
if module.mask is None:
    combination = "H = T (no mask)"
panels.append(viz.map_panel(f"output {combination}", h_map, signed=True, range_of=[t_map, h_map], value_name="H"))
tmh = viz.panels_figure(panels, height=330)
st.plotly_chart(tmh, theme=None, key="tmh")
figures_out["T_M_H"] = tmh
profile = {row["name"]: row for row in cache.magnitudes(key, app.image)}
row = profile[name]
if module.mask is not None:
    st.caption(f"Means over channels; T and H share one colour scale. Measured on this image: mean M = "
               f"{float(module.mask.mean()):.3f}, mean |T| = {row['trunk']:.3f}, mean |H| = {row['output']:.3f}, "
               f"so this module's combination scales the features by {row['gain']:.3f}.")
else:
    st.caption("This checkpoint has no mask branch: H is the trunk's output.")

# ----------------------------------------------------------------------------- 2: ARL vs NAL
st.subheader("Stacking modules: ARL keeps features, NAL shrinks them")
zoo, _ = pick_zoo(app.usable, app.entry)
profiles, models = {}, []
for label, entry in zoo:
    if entry.card.attention == "none" or not (entry.card.attention == "mixed"
                                                     or entry.name == app.entry.name):
        continue
    if app.trace(entry, show_error=False) is None:
        continue
    profiles[label] = cache.magnitudes(app.key(entry), app.image)
    models.append(label)
if not profiles and module.mask is not None:
    profiles[model_label(card)] = list(profile.values())
if profiles:
    gain = viz.gain_figure(profiles, height=420)
    st.plotly_chart(gain, theme=None, key="gain")
    figures_out["gain"] = gain
    lines = []
    for label, rows in profiles.items():
        gains = [r["gain"] for r in rows]
        factors = " × ".join(f"{g:.2f}" for g in gains)
        lines.append(f"**{label}**: {factors} = {math.prod(gains):.2f}")
    st.markdown("Measured gains mean|H| / mean|T| of each module on this image, and their product:  \n"
                + "  \n".join(lines))
    if not any(label.endswith("NAL") for label in profiles):
        st.info("A mixed-attention NAL checkpoint (H = M·T) is not in the checkpoint folder, so only ARL is "
                "shown; train one with `scripts/train_zoo.sh` to see the contrast.")
    st.caption("The product multiplies only the combinations' gains; the residual units between modules "
               "change magnitudes too, so it illustrates the compounding rather than measuring H itself.")
else:
    st.info("This network has no masks, so there is nothing to compare; choose an attention checkpoint.")

# ----------------------------------------------------------------------------- 3: activations
st.subheader("The same mask logits through the three activations")
demo = cache.activation_demo(key, app.image, name) if module.mask is not None else None
if demo is None:
    st.info("This checkpoint has no mask branch, so there are no mask logits to show.")
else:
    st.markdown(f"The logits of **{name}**'s mask branch (what {model_label(card)} feeds its own activation), "
                "passed through each of the three activations:")
    act_maps = viz.panels_figure([viz.map_panel(f"{kind}: mean over channels", d["map"], signed=kind == "channel",
                                                value_name="M") for kind, d in demo.items()], height=330)
    st.plotly_chart(act_maps, theme=None, key="activation_maps")
    hists = viz.histograms_figure({kind: (d["counts"], d["edges"]) for kind, d in demo.items()},
                                  x_titles={kind: "M" for kind in demo}, height=320)
    st.plotly_chart(hists, theme=None, key="activation_histograms")
    figures_out["activation_maps"] = act_maps
    figures_out["activation_histograms"] = hists
    ch, sp, mx = demo["channel"], demo["spatial"], demo["mixed"]
    st.markdown(
        f"- **channel**: the length of the channel vector at every position is between "
        f"{ch['position_norm'][0]:.3f} and {ch['position_norm'][1]:.3f}: the same everywhere, so no position "
        "is preferred.\n"
        f"- **spatial**: every channel's mean over the positions is between {sp['channel_mean'][0]:.3f} and "
        f"{sp['channel_mean'][1]:.3f}: each channel is centred, so the mask says where rather than which "
        "feature.\n"
        f"- **mixed**: {mx['above_half']:.1%} of the values are above 0.5; nothing is normalised, so the "
        "mask can prefer both positions and channels.")

export.downloads(figures_out, f"how_it_works_{app.entry.name}", arrays=trace.arrays,
                 settings_json=app.settings_json(page="how_it_works"), key="how_export")
