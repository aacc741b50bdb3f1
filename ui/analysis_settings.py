"""The analysis pages' own settings (methods, k, steps, ...) and the controls they share.

The settings are read from the URL the first time a session needs them, kept in session
state (with a shadow copy, as in ui/state.py, so that visiting another page does not drop
them) and written back to the URL by `sync_settings`, so a copied link reopens the same
view. Settings shared with the other pages ("module", "reduce", "channel", "k") stay in
ui/state.py.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from resattn import analysis

from . import cache

# --------------------------------------------------------------------------- page settings

# name -> (type, default); list settings travel as comma-separated text, booleans as 1 / 0.
ANALYSIS_SETTINGS: dict[str, tuple[type, Any]] = {
    "target": (str, "pred"),  # "pred" or a class index
    "methods": (list, ["abs_ig", "ig", "gradcam", "occlusion"]),
    "areduce": (str, "mean"),  # the report's reductions (analysis.ANALYSIS_REDUCTIONS)
    "camlayer": (str, ""),  # Grad-CAM layer; "" = resattn.analysis.default_gradcam_layer
    "igsteps": (int, 32),
    "topk": (int, 20),  # top-k % for IoU and the pointing game
    "normalise": (bool, False),
    "iv": (str, "zero"),  # intervention mode
    "ivalue": (float, 0.5),
    "other": (str, "sample:astronaut"),
    "seed": (int, 0),
    "later": (str, ""),
    "steps": (int, 32),
    "baseline": (str, "blur"),
    "nulls": (int, 10),  # random orders of each kind on the faithfulness page
    "source": (str, "pack"),
    "folder": (str, ""),
    "limit": (int, 100),
    "select": (str, "all"),
    "groupby": (str, "label"),
}
_SHADOW_KEY = "_resattn_analysis_settings"
_USED_KEY = "_resattn_analysis_used"


def _parse(kind: type, raw: str | None, default):
    if raw is None:
        return default
    try:
        if kind is list:
            return [part for part in raw.split(",") if part]
        if kind is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return kind(raw)
    except (TypeError, ValueError):
        return default


def _text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def use_settings(*names: str) -> None:
    """Before a page draws its widgets: give each setting a value (session state, else the
    shadow copy, else the URL, else the default) and make it plain session state, so it
    survives runs of pages that do not draw its widget."""
    ss = st.session_state
    shadow = ss.setdefault(_SHADOW_KEY, {})
    for name in names:
        kind, default = ANALYSIS_SETTINGS[name]
        if name not in ss:
            ss[name] = shadow[name] if name in shadow else _parse(kind, st.query_params.get(name), default)
        ss[name] = ss[name]
        shadow[name] = ss[name]
    ss[_USED_KEY] = list(names)


def sync_settings() -> None:
    """After the widgets: write this page's settings into the URL (only those that changed)."""
    ss = st.session_state
    shadow = ss.setdefault(_SHADOW_KEY, {})
    for name in ss.get(_USED_KEY, []):
        if name not in ss:
            continue
        shadow[name] = ss[name]
        text = _text(ss[name])
        if st.query_params.get(name) != text:
            st.query_params[name] = text


def page_settings() -> dict:
    """This page's settings as JSON-able values (for the settings export)."""
    ss = st.session_state
    return {name: ss.get(name) for name in ss.get(_USED_KEY, [])}


def clamp_setting(name: str, low, high) -> None:
    """Keep a numeric setting inside its widget's range (a value from a link may not be)."""
    value = st.session_state.get(name, ANALYSIS_SETTINGS[name][1])
    st.session_state[name] = type(low)(min(max(value, low), high))


def keep_options(name: str, options: list, default: list | None = None) -> None:
    """Keep only known options in a list setting (for a multiselect)."""
    value = [v for v in st.session_state.get(name) or [] if v in options]
    st.session_state[name] = value if value or default is None else [d for d in default if d in options]



def gradcam_layers(key: tuple, image) -> tuple[list[str], str]:
    """(the layers Grad-CAM may use, its default): the attention modules, then the final units."""
    model, _, _ = cache.model_and_input(key, image)
    default = analysis.default_gradcam_layer(model)
    names = [name for name, _ in model.attention_modules()]
    if hasattr(model, "final_units"):
        names.append("final_units")
    return (names if default in names else [default] + names), default


# --------------------------------------------------------------------------- shared controls

def class_picker(slot, trace: cache.ImageTrace, label: str, help: str) -> int:
    """The "target" selectbox in `slot` (the predicted class or any class, with its
    probability); returns the chosen class index."""
    from . import state

    classes, probs = trace.classes, trace.probs
    predicted = int(probs.argmax())
    options = ["pred"] + [str(i) for i in range(len(classes))]
    state.ensure_choice("target", options, "pred")
    slot.selectbox(label, options, key="target", help=help,
                   format_func=lambda t: (f"predicted: {classes[predicted]} ({probs[predicted]:.0%})"
                                          if t == "pred" else f"{classes[int(t)]} ({probs[int(t)]:.1%})"))
    return predicted if st.session_state["target"] == "pred" else int(st.session_state["target"])


def attribution_controls(slots, key: tuple, image) -> tuple[list[str], str, int]:
    """Methods multiselect, Grad-CAM layer and IG steps in three slots; returns
    (methods, Grad-CAM layer, IG steps)."""
    from . import state

    keep_options("methods", list(analysis.METHODS))
    slots[0].multiselect("Attribution methods", list(analysis.METHODS), key="methods",
                         format_func=analysis.METHOD_LABELS.get)
    methods = list(st.session_state["methods"])
    layers, default_layer = gradcam_layers(key, image)
    state.ensure_choice("camlayer", layers, default_layer)
    slots[1].selectbox("Grad-CAM layer", layers, key="camlayer", disabled="gradcam" not in methods,
                       help=f"Default {default_layer}: the last attention module, the deepest layer at a mask's "
                            "resolution.")
    clamp_setting("igsteps", 2, 128)
    slots[2].number_input("IG steps", min_value=2, max_value=128, step=2, key="igsteps",
                          disabled="ig" not in methods,
                          help="Points on the straight path from the baseline (the mean colour) to the image.")
    return methods, st.session_state["camlayer"], int(st.session_state["igsteps"])


