"""Masks across a dataset: every image of a set through the checkpoint, the mean mask per
class and module, how concentrated each mask is, and the images whose masks are the most
and the least concentrated; for all images or only the correctly / wrongly classified ones;
and, class by class, the misclassified images with their masks. Computed on request (a
button), cached on disk by resattn.analysis.dataset."""
import numpy as np
import pandas as pd
import streamlit as st

from resattn import viz
from resattn.analysis import reduce as reduce_maps
from resattn.analysis.dataset import SELECTIONS
from resattn.data import PACK_NAME, pack_available
from resattn.errors import ResattnError
from ui import analysis_cache as analysed
from ui import state
from ui.cards import describe

SOURCES = {"pack": "Imagenette val split (the pack)", "folder": "A folder of images"}
SELECTION_LABELS = {"all": "all images", "correct": "correctly classified", "wrong": "misclassified"}
GROUPS = {"label": "true class", "prediction": "predicted class"}
THUMBNAILS = 8

app = state.current()
st.title("Masks across a dataset")
st.markdown("One image says little about what a mask does. Here every image of a set goes through the network: "
            "the **mean mask** of each class at each module, and how **concentrated** each mask is "
            "(0 = spread evenly over the image, 1 = all on one position).")
if app.entry is None:
    st.info("Choose a checkpoint in the sidebar to compute its masks over a dataset.")
    st.stop()
card, size = app.entry.card, app.input_size()
analysed.use_settings("source", "folder", "limit", "select", "groupby")
have_pack = pack_available()
sources = list(SOURCES) if have_pack else ["folder"]
state.ensure_choice("source", sources, sources[0])

# ----------------------------------------------------------------------------- source
row = st.columns([1.4, 2.4, 1.2], vertical_alignment="bottom")
row[0].radio("Images from", sources, key="source", format_func=SOURCES.get)
source = st.session_state["source"]
if source == "folder":
    row[1].text_input("Folder", key="folder", placeholder="/path/to/images  or  /path/to/val (with class folders)",
                      help="An ImageFolder tree <folder>/<class>/<images> (folder names matching the checkpoint's "
                           "classes give accuracy), or a plain folder of images (labels unknown).")
else:
    row[1].caption(f"The validation images of the Imagenette pack ({PACK_NAME}), read at run time, spread evenly "
                   "over the classes.")
analysed.clamp_setting("limit", 10, 500)
row[2].slider("Images (at most)", 10, 500, step=10, key="limit",
              help="This many images, spread evenly over the set (all of them when the set is smaller).")
analysed.sync_settings()
limit = int(st.session_state["limit"])
spec = "pack" if source == "pack" else st.session_state["folder"].strip()
if not spec:
    st.info("Type the path of an image folder above: an ImageFolder tree `<folder>/<class>/<images>` whose class "
            f"folders are named like the checkpoint's classes ({', '.join(card.classes[:4])}, …) gives "
            "accuracy and per-class means; a plain folder of images works too (labels unknown). "
            + ("" if have_pack else f"To use the Imagenette validation split instead, set the environment "
               f"variable `RESATTN_DATA` to the folder holding `{PACK_NAME}` and restart the app."))
    st.stop()
if card.attention == "none":
    st.info("This checkpoint has no soft masks (attention 'none'), so there are no mask statistics to compute: "
            "choose an attention checkpoint in the sidebar.")
    st.stop()

try:
    with st.spinner("Reading the images…"):
        images, images_sha = analysed.dataset_images(spec, limit, size, list(card.classes))
except ResattnError as exc:
    st.error(f"The images could not be read: {exc}")
    st.stop()

stats = analysed.cached_statistics(app.entry, images_sha, size)
row = st.columns([1, 4], vertical_alignment="center")
clicked = row[0].button("Compute", key="ds_compute", type="primary", icon=":material/play_arrow:",
                        disabled=stats is not None, width="stretch",
                        help="Trace every image through the checkpoint; the result is cached on disk.")
if stats is None and clicked:
    bar = st.progress(0.0, text=f"Tracing {len(images)} images…")
    try:
        stats = analysed.compute_statistics(app.entry, app.device, images, size,
                                            progress=lambda f: bar.progress(min(1.0, f),
                                                                            text=f"{f:.0%} of {len(images)} images"))
    except ResattnError as exc:
        st.error(f"The statistics could not be computed: {exc}")
        st.stop()
    finally:
        bar.empty()
if stats is None:
    row[1].info(f"{len(images)} images ready at {size} × {size} px. Press **Compute** to trace them through "
                f"**{app.entry.name}** on {app.device}; the result is cached, so it is shown at once next time.")
    st.stop()
row[1].caption(f"{len(stats)} images through **{app.entry.name}** ({describe(card)}), cached in "
               f"`{analysed.statistics_path(app.entry, images_sha, size).parent}`.")

# ----------------------------------------------------------------------------- summary and filters
known = stats.labels >= 0
metrics = st.columns(2 + len(stats.modules))
metrics[0].metric("Images", f"{len(stats)}")
metrics[1].metric("Top-1 accuracy", f"{stats.accuracy():.1%}" if known.any() else "labels unknown",
                  help=f"Over the {int(known.sum())} images whose true class is known.")
for i, module in enumerate(stats.modules):
    metrics[2 + i].metric(f"Concentration {module}", f"{stats.concentration[:, i].mean():.3g}",
                          help="Mean over the images: 1 − entropy of the channel-mean |M| / log(positions).")
row = st.columns([1.8, 1.4, 1.0])
state.ensure_choice("select", list(SELECTIONS), "all")
row[0].radio("Images", list(SELECTIONS), key="select", format_func=SELECTION_LABELS.get, horizontal=True,
             disabled=not known.any(), help="Correct / wrong need the true classes (class folders).")
state.ensure_choice("groupby", list(GROUPS), "label")
row[1].radio("Group by", list(GROUPS), key="groupby", format_func=GROUPS.get, horizontal=True)
state.ensure_choice("module", stats.modules, stats.modules[-1])
row[2].selectbox("Rank images at module", stats.modules, key="module")
analysed.sync_settings()
which = st.session_state["select"] if known.any() else "all"
group_by, module = st.session_state["groupby"], st.session_state["module"]
chosen = stats.select(which)
if len(chosen) == 0:
    st.info(f"No {SELECTION_LABELS[which]} images in this set; choose another selection.")
    st.stop()

# ----------------------------------------------------------------------------- mean masks
st.subheader(f"Mean mask per {GROUPS[group_by]} and module ({SELECTION_LABELS[which]}, {len(chosen)})")
means, counts = stats.mean_maps(which, group_by)
if counts.sum() == 0:
    st.info("None of these images has a known class to group by: the mean over all of them is shown.")
    means, counts = stats.maps[chosen].mean(axis=0, keepdims=True), np.array([len(chosen)])
    class_names = ["all images"]
else:
    class_names = list(stats.classes)
means_fig = viz.class_means_figure(means, counts, class_names, stats.modules)
st.plotly_chart(means_fig, theme=None, key="class_means")
st.caption(f"Each image's mask averaged over channels and resized to {stats.maps.shape[-1]} × "
           f"{stats.maps.shape[-1]}, then averaged over the images of each column. One colour bar per module "
           "(row), over its own range; channel attention's signed masks use a scale centred at 0.")

groups = {"correct": stats.correct, "wrong": stats.wrong} if known.any() else {"all": np.ones(len(stats), bool)}
conc_fig = viz.concentration_figure(stats.concentration, stats.modules, groups)
st.plotly_chart(conc_fig, theme=None, key="concentration")

# ----------------------------------------------------------------------------- extremes
m = stats.module_index(module)


def gallery(indices, title: str) -> None:
    st.markdown(f"**{title}**")
    cols = st.columns(THUMBNAILS)
    for col, i in zip(cols, indices):
        truth = stats.classes[stats.labels[i]] if stats.labels[i] >= 0 else "?"
        guess = stats.classes[stats.predictions[i]]
        mark = "" if stats.labels[i] < 0 else (" ✓" if stats.labels[i] == stats.predictions[i] else " ✗")
        with col:
            st.image(images.images[int(i)].numpy(), width="stretch",
                     caption=f"{stats.concentration[i, m]:.3g} · {truth} → {guess}{mark}")


st.subheader(f"Images whose mask at {module} is the most and the least concentrated")
gallery(stats.ranked(module, THUMBNAILS, most=True, which=which), "Most concentrated")
gallery(stats.ranked(module, THUMBNAILS, most=False, which=which), "Least concentrated")
st.caption("Caption: concentration · true class → predicted class. Images are read from the source at run time.")

# ----------------------------------------------------------------------------- misclassified, per class
if known.any():
    st.subheader(f"Misclassified images of each class, with their mask at {module}")
    wrong_of = {c: np.flatnonzero(stats.wrong & (stats.labels == i)) for i, c in enumerate(stats.classes)}
    total_of = {c: int((stats.labels == i).sum()) for i, c in enumerate(stats.classes)}
    with_errors = [c for c, idx in wrong_of.items() if len(idx)]
    if not with_errors:
        st.info("Every image whose class is known is classified correctly: there is nothing to show here.")
    else:
        shown_class = st.selectbox("True class", with_errors, key="_wrong_class",
                                   format_func=lambda c: f"{c}: {len(wrong_of[c])} of {total_of[c]} misclassified")
        chosen_wrong = wrong_of[shown_class][:THUMBNAILS]
        side = int(images.images.shape[1])
        masks_at = reduce_maps.to_image_size(stats.maps[chosen_wrong, m], side)
        pictures, (lo, hi) = viz.blend_maps([images.images[int(i)].numpy() for i in chosen_wrong], masks_at,
                                            signed=card.attention == "channel", opacity=0.55)
        cols = st.columns(THUMBNAILS)
        for col, i, picture in zip(cols, chosen_wrong, pictures):
            col.image(picture, width="stretch",
                      caption=f"taken for {stats.classes[stats.predictions[i]]} ({stats.probabilities[i]:.0%})")
        st.caption(f"The first {len(chosen_wrong)} of the {len(wrong_of[shown_class])} misclassified "
                   f"{shown_class} images (in the set's order), each with its mask at {module} (mean over "
                   f"channels, from {stats.maps.shape[-1]} × {stats.maps.shape[-1]} resized to the image), one colour "
                   f"scale from {lo:.3g} (dark) to {hi:.3g} (bright); caption: the predicted class (its probability). "
                   "Images are read from the source at run time.")

per_image = pd.DataFrame({
    "name": stats.names,
    "true_class": [stats.classes[truth] if truth >= 0 else "" for truth in stats.labels],
    "predicted_class": [stats.classes[p] for p in stats.predictions],
    "probability": stats.probabilities,
    "correct": [bool(c) if truth >= 0 else None for c, truth in zip(stats.correct, stats.labels)],
    **{f"concentration_{name}": stats.concentration[:, i] for i, name in enumerate(stats.modules)},
})
with st.expander("Every image"):
    st.dataframe(per_image, hide_index=True, width="stretch")

analysed.downloads({"class_means": means_fig, "concentration": conc_fig}, f"dataset_{app.entry.name}",
                   tables={"images": per_image}, key="dataset_export",
                   arrays=lambda: {"maps": stats.maps, "mean_maps": means, "counts": counts,
                                   "concentration": stats.concentration, "labels": stats.labels,
                                   "predictions": stats.predictions},
                   settings_json=app.settings_json(page="dataset", analysis=analysed.page_settings(),
                                                   images=len(stats), source=spec))
