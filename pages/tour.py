"""Guided tour: from the photo to the prediction in nine steps, each a short text and a live
figure of the current image and checkpoint (sizes and numbers are measured, never written
by hand). The step is in the URL (?step=N); Back / Next (or PageUp / PageDown, what
presentation clickers send) move through it; the last step opens the Compare page."""
import math

import streamlit as st

from resattn import viz
from ui import analysis_cache as analysed
from ui import cache, presenter, state, tour_data
from ui.cards import describe, pick_zoo

STEPS = ["The photo", "The stem", "What a trunk computes", "The soft mask branch: down, then up",
         "M: mixed, channel or spatial", "(1 + M)·T against M·T", "How the masks change across stages",
         "Switch a mask off", "Compare attention types"]

app = state.current()
st.title("Guided tour")
step = min(max(1, int(st.session_state.get("step") or 1)), len(STEPS))
st.session_state["step"] = step


def move(delta: int) -> None:
    st.session_state["step"] = min(max(1, int(st.session_state["step"]) + delta), len(STEPS))


def leave_for_compare() -> None:
    st.session_state["_tour_to_compare"] = True


if st.session_state.pop("_tour_to_compare", False):
    st.switch_page("pages/compare.py")

# ----------------------------------------------------------------------------- navigation
nav = st.columns([1.2, 4, 2.2], vertical_alignment="center")
nav[0].button("Back", key="tour_back", on_click=move, args=(-1,), icon=":material/arrow_back:", width="stretch",
              disabled=step == 1, shortcut="PageUp", help="The previous step (PageUp).")
dots = " ".join("●" if i <= step else "○" for i in range(1, len(STEPS) + 1))
nav[1].markdown(f"**Step {step} of {len(STEPS)}** &nbsp; {dots}",
                help=" · ".join(f"{i}. {title}" for i, title in enumerate(STEPS, 1)))
if step < len(STEPS):
    nav[2].button("Next step", key="tour_next", on_click=move, args=(1,), icon=":material/arrow_forward:",
                  icon_position="right", type="primary", width="stretch", shortcut="PageDown",
                  help="The next step (PageDown, or a presentation clicker).")
else:
    nav[2].button("Open Compare", key="tour_next", on_click=leave_for_compare, icon=":material/arrow_forward:",
                  icon_position="right", type="primary", width="stretch", shortcut="PageDown",
                  help="The tour ends on the Compare page (PageDown).")
if not presenter.active():
    st.button("Present this tour (presenter mode)", key="tour_present", on_click=presenter.set_active, args=(True,),
              icon=":material/co_present:", type="tertiary",
              help="Larger type, no sidebar, colour-blind-safe colour scales; the link gets present=1.")

trace = app.require_trace("take the tour on it")
key, image, card, size = app.key(), app.image, app.entry.card, app.input_size()
masked = [m for m in trace.modules if m.mask is not None]
first = masked[0] if masked else (trace.modules[0] if trace.modules else None)
st.header(f"{step} · {STEPS[step - 1]}")


def needs_masks() -> None:
    if not masked:
        st.info(f"**{app.entry.name}** has no soft masks (attention 'none'), so this step has nothing to show: "
                "choose an attention checkpoint in the sidebar, or go on to the next step.")
        st.stop()


def sizes(shape) -> str:
    return f"{shape[0]} × {shape[1]} × {shape[2]}"


# ----------------------------------------------------------------------------- 1: the photo
if step == 1:
    best, p = trace.top(1)[0]
    classes = trace.classes
    st.markdown(f"The network sees the photo as {size} × {size} pixels in 3 colour channels: "
                f"{3 * size * size:,} numbers. **{app.entry.name}** ({describe(card)}) was trained on "
                f"{len(classes)} classes ({', '.join(classes[:10])}{' …' if len(classes) > 10 else ''}) and "
                f"gives each a probability. For this photo: **{best}**, {p:.0%}.")
    left, right = st.columns([1, 1.6], gap="large")
    left.image(trace.image, caption=f"{app.image_label}, as the network sees it", width="stretch")
    with right:
        st.plotly_chart(viz.predictions_figure(classes, trace.probs, k=5, font_size=16), theme=None,
                        config={"displayModeBar": False}, key="tour_predictions")

# ----------------------------------------------------------------------------- 2: the stem
elif step == 2:
    steps = tour_data.stem(key, image)
    chain = f"photo **{sizes(steps[0].shape)}**" + "".join(f" → {s.label} → **{sizes(s.shape)}**"
                                                           for s in steps[1:])
    last = steps[-1]
    st.markdown(f"Before any attention module, the **stem** turns colours into features: {chain}. "
                f"Each of the {last.shape[0]} maps comes from one learned filter slid over the image; "
                f"the {len(last.indices)} below are those with the most energy (mean of squares) on this photo.")
    left, right = st.columns([1, 3], gap="large")
    left.image(trace.image, caption=f"{size} × {size} input", width="stretch")
    grid = viz.channel_grid_figure(last.channels, [f"ch {i}" for i in last.indices], signed=True,
                                   colorbar_title="value", value_name="value", cols=4,
                                   title=f"Stem output, {sizes(last.shape)}")
    right.plotly_chart(grid, theme=None, key="tour_stem")

# ----------------------------------------------------------------------------- 3: the trunk
elif step == 3:
    if first is None:
        st.info("This network has no attention modules.")
        st.stop()
    x_map = cache.reduced(key, image, first.name, "input", "mean")
    t_map = cache.reduced(key, image, first.name, "trunk", "mean")
    st.markdown(f"The first attention module, **{first.name}**, receives **{sizes(first.input.shape)}** features. "
                "Its **trunk** is t = 2 residual units; each adds a learned correction to what it receives, so "
                f"T(x) keeps the size: **{sizes(first.trunk.shape)}**. Trunks alone would make an ordinary "
                "residual network; the attention comes from a second branch beside each trunk.")
    panels = viz.panels_figure(viz.share_range([
        viz.map_panel(f"input x of {first.name}", x_map, signed=True, value_name="x"),
        viz.map_panel("trunk output T(x)", t_map, signed=True, value_name="T")]), height=380)
    st.plotly_chart(panels, theme=None, key="tour_trunk")
    st.caption("Means over the channels, one shared colour scale.")

# ----------------------------------------------------------------------------- 4: the mask branch
elif step == 4:
    needs_masks()
    steps = tour_data.mask_branch(key, image, first.name)
    path = " → ".join(f"{s.shape[1]}×{s.shape[2]}" for s in steps if not s.label.startswith("M ="))
    lowest = min(steps, key=lambda s: s.shape[1] * s.shape[2])
    st.markdown(f"Beside the trunk, the **soft mask branch** of {first.name} works on the same "
                f"{sizes(steps[0].shape)} input. Max-pooling shrinks it down to **{lowest.shape[1]} × "
                f"{lowest.shape[2]}**, where each value summarises a wide part of the photo (bottom-up); bilinear "
                "up-sampling with skip connections grows it back (top-down), and two 1×1 convolutions and an "
                f"activation f make the mask M, exactly T's size. On this photo: {path}.")
    shown = [s for s in steps if "mask logits" not in s.label]
    panels = []
    for s in shown:
        if s.label.startswith("M ="):
            panels.append(viz.map_panel(f"M: {s.shape[1]}×{s.shape[2]}", s.mean, signed=False, colorbar_title="",
                                        value_name="M"))
        else:
            title = s.label.split(":")[0].replace("input of the mask branch", "input")
            panels.append(viz.map_panel(f"{title}: {s.shape[1]}×{s.shape[2]}", s.mean, signed=True, colorbar_title="",
                                        value_name="value"))
    st.plotly_chart(viz.panels_figure(panels, height=300), theme=None, key="tour_branch")
    st.markdown("\n".join(f"- {s.label}: {sizes(s.shape)}" for s in steps))
    st.caption("Each map is the mean over its channels at its own resolution (each with its own colour scale); "
               "the sizes are those measured on this photo's forward pass.")

# ----------------------------------------------------------------------------- 5: activations
elif step == 5:
    needs_masks()
    demo = cache.activation_demo(key, image, first.name)
    st.markdown(f"The activation f decides what kind of attention the mask is. This network uses "
                f"**{card.attention}**. Here are the same mask logits of {first.name} through all three:")
    st.latex(r"f_{\text{mixed}} = \sigma(x_{i,c}) \qquad f_{\text{channel}} = \frac{x_{i,c}}{\lVert x_i \rVert}"
             r" \qquad f_{\text{spatial}} = \sigma\!\left(\frac{x_{i,c} - \mu_c}{\sigma_c}\right)")
    panels = [viz.map_panel(kind, d["map"], signed=kind == "channel", colorbar_title="", value_name="M")
              for kind, d in demo.items()]
    st.plotly_chart(viz.panels_figure(panels, height=330), theme=None, key="tour_activations")
    ch, sp, mx = demo["channel"], demo["spatial"], demo["mixed"]
    st.markdown(f"- **mixed**: a sigmoid per value; {mx['above_half']:.0%} of them are above 0.5 here.\n"
                f"- **channel**: each position's channel vector has length {ch['position_norm'][0]:.2f}–"
                f"{ch['position_norm'][1]:.2f}, the same everywhere: it picks *which* features, not where.\n"
                f"- **spatial**: every channel's mean is {sp['channel_mean'][0]:.2f}–{sp['channel_mean'][1]:.2f}: it "
                "picks *where*, not which feature.")

# ----------------------------------------------------------------------------- 6: ARL vs NAL
elif step == 6:
    needs_masks()
    combos = tour_data.combinations(key, image)
    mine = combos[first.name]
    t, arl, nal = mine["T"], mine["(1+M)·T"], mine["M·T"]
    st.markdown("How should M act on T? Multiplying, **M·T** (naive attention), can only shrink features where "
                "M < 1. The paper's **attention residual learning** adds T back: **(1 + M)·T**, so a mask in "
                f"[0, 1] can only amplify. On this photo at {first.name}: mean |T| = {t['size']:.3f}, "
                f"mean |(1+M)·T| = "
                f"{arl['size']:.3f} (× {arl['size'] / t['size']:.2f}), mean |M·T| = {nal['size']:.3f} "
                f"(× {nal['size'] / t['size']:.2f}).")
    panels = viz.panels_figure(viz.share_range([
        viz.map_panel("T", t["map"], signed=True, colorbar_title="", value_name="T"),
        viz.map_panel("(1 + M)·T  (ARL)", arl["map"], signed=True, colorbar_title="", value_name="H"),
        viz.map_panel("M·T  (NAL)", nal["map"], signed=True, colorbar_title="", value_name="H")]), height=360)
    st.plotly_chart(panels, theme=None, key="tour_arl")
    ratios = {name: [c[name]["size"] / c["T"]["size"] for c in combos.values()] for name in ("(1+M)·T", "M·T")}
    st.markdown(f"Over all {len(combos)} modules the ratios multiply to **{math.prod(ratios['(1+M)·T']):.2f}** for "
                f"(1+M)·T and **{math.prod(ratios['M·T']):.3f}** for M·T (both computed from this network's T and M "
                "on this photo): the smaller the product, the more stacked masks attenuate the features.")
    st.caption(f"This checkpoint itself uses {'(1 + M)·T' if card.residual == 'arl' else 'M·T'}. "
               "Means over the channels, one shared colour scale.")

# ----------------------------------------------------------------------------- 7: across stages
elif step == 7:
    needs_masks()
    panels = []
    for m in masked:
        z = cache.reduced(key, image, m.name, "mask", "mean")
        panels.append(viz.map_panel(f"{m.name}: {z.shape[0]}×{z.shape[1]}", z, signed=False, colorbar_title="",
                                    value_name="M"))
    stats = cache.stage_statistics(key, image)
    st.markdown("Every stage has its own attention modules, at its own resolution and with more channels. "
                + "; ".join(f"stage {s}: mean M {v['mean']:.2f}" for s, v in stats.items())
                + f". The first mask has {masked[0].mask.shape[1]} × {masked[0].mask.shape[2]} positions for "
                  f"{masked[0].mask.shape[0]} channels, the last {masked[-1].mask.shape[1]} × "
                  f"{masked[-1].mask.shape[2]} for {masked[-1].mask.shape[0]}: fine detail early, coarse regions late.")
    st.plotly_chart(viz.panels_figure(panels, height=320), theme=None, key="tour_stages")
    st.caption("Each module's mask, mean over channels, each with its own colour scale (from its minimum to its "
               "maximum). The module explorer shows every channel.")

# ----------------------------------------------------------------------------- 8: intervention
elif step == 8:
    needs_masks()
    result = analysed.intervention(key, image, first.name, "zero")
    best, p = trace.top(1)[0]
    after = float(result.probabilities_after[trace.classes.index(best)])
    new_best = trace.classes[int(result.probabilities_after.argmax())]
    st.markdown(f"What does a mask do for the answer? Set M = 0 in **{first.name}** and run the photo again: "
                + ("with (1 + M)·T that module passes T through unchanged" if card.residual == "arl"
                   else "with M·T that module's output becomes zero")
                + f". **{best}** goes from {p:.1%} to {after:.1%}"
                + (f"; the answer is still **{best}**." if new_best == best
                   else f"; the answer becomes **{new_best}**."))
    fig = viz.top5_change_figure(result.top5, labels={"before": "as trained", "after": f"M = 0 at {first.name}"},
                                 height=380)
    st.plotly_chart(fig, theme=None, key="tour_intervention")
    st.page_link("pages/interventions.py", label="Try other modules and replacements", icon=":material/toggle_off:")

# ----------------------------------------------------------------------------- 9: compare
else:
    zoo, missing = pick_zoo(app.usable, app.entry)
    last = trace.modules[-1].name if trace.modules else None
    panels, answers = [], []
    for label, entry in zoo:
        other = app.trace(entry, show_error=False)
        if other is None:
            continue
        best, p = other.top(1)[0]
        answers.append(f"{label}: **{best}** {p:.0%}")
        if last not in other.names or other.module(last).mask is None:
            continue
        z = cache.reduced(app.key(entry), image, last, "mask", "mean")
        panels.append(viz.map_panel(label, z, signed=entry.card.attention == "channel", colorbar_title="",
                                    value_name="M"))
    st.markdown("The same photo through networks that differ in the activation f or in how M meets T (each "
                f"card in the sidebar says how it was trained). Below: the mask of {last} in each. Their answers: "
                + "; ".join(answers) + ". The Compare page puts every module of these networks side by side.")
    if panels:
        st.plotly_chart(viz.panels_figure(panels, height=340), theme=None, key="tour_compare")
    if missing:
        st.caption(f"Not in the checkpoint folder: {', '.join(missing)}.")
    st.page_link("pages/compare.py", label="Open the Compare page", icon=":material/compare:")
