"""The shared sidebar: checkpoint, device and image. Drawn once per run by app.py."""
from __future__ import annotations

import streamlit as st

from resattn.device import available_devices
from resattn.errors import ImageError

from . import cache, samples, state
from .cards import describe, provenance, untrained

UPLOAD_TYPES = ["png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp", "ppm", "pgm", "ico"]
SOURCES = ("Sample gallery", "Upload", "Camera")


def _checkpoint_picker(app: state.AppState) -> None:
    folder = app.folder
    if not folder.is_dir():
        st.error(f"No checkpoint folder at `{folder}`. Train the zoo with `scripts/train_zoo.sh` (it fills "
                 "`checkpoints/`), or point the environment variable `RESATTN_CHECKPOINTS` at a folder of "
                 "`.safetensors` checkpoints with their `.json` cards, then reload.")
        return
    usable = app.usable
    if not usable:
        st.error(f"No usable checkpoint in `{folder}`. Train the zoo with `scripts/train_zoo.sh`, copy trained "
                 "`.safetensors` + `.json` pairs there, or set `RESATTN_CHECKPOINTS` to another folder.")
    else:
        by_name = {e.name: e for e in usable}
        names = list(by_name)
        state.ensure_choice("ckpt", names, state.default_checkpoint(names))
        st.selectbox("Checkpoint", names, key="ckpt",
                     format_func=lambda n: f"{n} — {describe(by_name[n].card)}",
                     help="Every checkpoint in the checkpoint folder whose card and weights read. "
                          f"Folder: {folder} (set RESATTN_CHECKPOINTS to use another).")
        app.entry = by_name[st.session_state["ckpt"]]
        card = app.entry.card
        st.caption(f"**{describe(card)}** · {card.arch} width {card.width} · "
                   f"{card.input_size} px input  \nWeights: {provenance(card)}")
        if untrained(card):
            st.warning("These weights are **not trained**: the masks show an untrained network.")
    failed = state.failed_checkpoints()
    broken = [(e.name, e.error) for e in app.entries if not e.ok]
    broken += [(name, reason) for name, (stamp, reason) in failed.items()
               if any(e.name == name and e.stamp == stamp for e in app.entries)]
    if broken:
        with st.expander(f"⚠ {len(broken)} checkpoint(s) unavailable", expanded=not usable):
            for name, reason in broken:
                st.error(f"**{name}**: {reason}")


def _device_picker(app: state.AppState) -> None:
    devices = available_devices()
    state.ensure_choice("device", devices, devices[0])
    st.selectbox("Device", devices, key="device",
                 help="Devices this machine has (CUDA, then Apple MPS, then CPU); the best one is the default.")
    app.device = st.session_state["device"]


def _use_gallery(app: state.AppState, image_id: str) -> None:
    app.image, app.sha = samples.load(image_id)
    app.image_id = image_id
    app.image_label = samples.label(image_id)


def _image_picker(app: state.AppState) -> None:
    gallery = samples.choices(list(app.entry.card.classes) if app.entry else None)
    ids = list(gallery)
    if st.session_state.get("_gallery") not in ids:  # a first visit, or a link to a photo that is not here
        st.session_state["_gallery"] = samples.default_image(app.entry, app.device)
    st.radio("Image", SOURCES, key="_source", horizontal=True)
    source = st.session_state["_source"]
    if source == "Sample gallery":
        st.selectbox("Sample photo", ids, key="_gallery", format_func=lambda i: gallery.get(i, i),
                     help="Photos shipped with scikit-image; Imagenette validation photos when the pack "
                          "is present (read at run time, never copied).")
        _use_gallery(app, st.session_state["_gallery"])
        st.session_state["img"] = app.image_id
        return
    if source == "Upload":
        upload = st.file_uploader("Image file", type=UPLOAD_TYPES, key="_upload",
                                  help="PNG, JPEG, GIF, BMP, TIFF, WebP, …; EXIF rotation is applied.")
        data, what = (upload.getvalue(), upload.name) if upload is not None else (None, None)
    else:
        shot = st.camera_input("Take a photo", key="_camera")
        data, what = (shot.getvalue(), "camera photo") if shot is not None else (None, None)
    st.caption("Uploaded and camera images cannot travel in a link: a copied link keeps every other "
               "setting and opens the default sample photo.")
    fallback = st.session_state["_gallery"]
    if data is None:
        st.info(f"No image yet: showing **{gallery.get(fallback, fallback)}** meanwhile.")
        _use_gallery(app, fallback)
        return
    sha = cache.image_sha(data)
    try:
        app.image = cache.decode_upload(sha, data)
    except ImageError as exc:
        st.error(f"{what}: {exc}")
        st.info(f"Showing **{gallery.get(fallback, fallback)}** instead.")
        _use_gallery(app, fallback)
        return
    app.sha, app.image_label = sha, what
    app.image_id = "upload" if source == "Upload" else "camera"
    st.session_state["img"] = app.image_id


def render() -> state.AppState:
    """Draw the sidebar and return (and store for the pages) the AppState of this run."""
    state.init_session()
    folder = cache.checkpoint_folder()
    app = state.AppState(folder=folder, entries=cache.list_entries(folder), entry=None, device="cpu",
                         image=None, image_id="", image_label="", sha=None)
    with st.sidebar:
        st.page_link("pages/tour.py", label="New here? Take the guided tour", icon=":material/tour:")
        note = st.session_state.pop("_link_note", None)
        if note:
            st.info(note)
        _checkpoint_picker(app)
        _device_picker(app)
        _image_picker(app)
        if app.image is not None:
            st.image(cache.preview(app.sha, app.image), caption=app.image_label, width="stretch")
            outside = samples.outside_note(app.image_id, list(app.entry.card.classes)) if app.entry else None
            if outside:
                st.info(outside, icon=":material/info:")
    state.save(app)
    return app
