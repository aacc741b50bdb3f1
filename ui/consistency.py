"""The Compare page's "how different is different" panel (issue 19) and its seed toggle:
where the seeds are, their masks on the current image (cached like every other derived map),
the dataset table (read from the CSV the CLI wrote, re-read when the file changes), and the
panel's layout. The numbers come from resattn.consistency; nothing is computed here.

Seeds live in `<checkpoint folder>/seeds/` (or $RESATTN_SEEDS), so the sidebar's checkpoint
list stays the zoo; the dataset table is docs/consistency/consistency.csv (or
$RESATTN_CONSISTENCY)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import streamlit as st

from resattn import consistency
from resattn.analysis.reduce import ANALYSIS_REDUCTION_LABELS, ANALYSIS_REDUCTIONS
from resattn.errors import ResattnError

from . import cache

SEEDS_ENV = "RESATTN_SEEDS"
COMMAND = "python -m resattn.consistency --images pack --limit 200 --out docs/consistency"


def seeds_folder(folder: Path) -> Path:
    env = os.environ.get(SEEDS_ENV)
    return Path(env).expanduser() if env else Path(folder) / consistency.SEEDS_FOLDER


def networks(app) -> tuple[list[consistency.Network], dict]:
    """Every usable checkpoint of the zoo and of the seeds folder as a labelled
    resattn.consistency.Network, and the app's cache.Entry of each."""
    entries, seen = [], set()
    for entry in [*app.usable, *(e for e in cache.list_entries(seeds_folder(app.folder)) if e.ok)]:
        if entry.path not in seen:
            seen.add(entry.path)
            entries.append(entry)
    nets = consistency.labelled([consistency.Network(e.path, e.card) for e in entries])
    return nets, dict(zip(nets, entries))


def seed_column_label(network: consistency.Network, runs: list[consistency.Network]) -> str:
    """"seed 1" (with the checkpoint's name where two runs share a seed): a column header."""
    seed = "seed ?" if network.seed is None else f"seed {network.seed}"
    if sum(1 for n in runs if n.seed == network.seed) > 1:
        return f"{seed} ({network.name})"
    return seed


@st.cache_data(max_entries=cache.DERIVED_ENTRIES, ttl=cache.TRACE_TTL_S, show_spinner=False)
def image_maps(key: tuple, _image, reduction: str, target: int) -> dict:
    """The reduced mask of each stage's last module for the current image (`key`:
    AppState.key of the network), preprocessed as its card says (the traces' own path), on
    the model as trained, as `python -m resattn.consistency` computes them: the
    class-weighted reduction takes gradients, and the comparison ranks the maps (see the
    note at ui/analysis_cache.attribution)."""
    model, _card, x = cache.model_and_input(key, _image, eager=True)
    return consistency.stage_maps(model, x, reductions=[reduction], targets=[target], batch_size=1)


@st.cache_data(max_entries=4, show_spinner=False)
def _dataset_rows(path: str, stamp: tuple) -> list[dict]:
    return consistency.read_rows(path)


def dataset_rows() -> tuple[list[dict] | None, Path]:
    path = consistency.default_csv()
    if not path.is_file():
        return None, path
    st_ = path.stat()
    return _dataset_rows(str(path), (st_.st_size, st_.st_mtime_ns)), path


def _source(csv_path: Path) -> str:
    """"val images" when the run beside the CSV says it traced the pack, else "images"."""
    try:
        run = json.loads(csv_path.with_name("consistency_run.json").read_text())
    except (OSError, ValueError):
        return "images"
    return "val images" if str(run.get("images")) == "pack" or str(run.get("images")).endswith(".npz") else "images"


def _cell(similarity) -> str:
    return "—" if similarity is None else f"{similarity.text()} ({similarity.pairs} pair{'s' * (similarity.pairs > 1)})"


def _show(table: list[dict], comparisons, reference: str, others: list[str], key: str) -> None:
    frame = pd.DataFrame([{"stage": line["stage"], f"seeds of {consistency.type_label(reference)}": _cell(line["seeds"]),
                           **{f"vs {consistency.type_label(o)}": _cell(line[o]) for o in others}} for line in table])
    st.dataframe(frame, hide_index=True, width="stretch", key=key)
    sentences = [consistency.stage_sentence([c for c in comparisons if c.stage == line["stage"]]) for line in table]
    for sentence in filter(None, sentences):
        st.markdown(f"- {sentence}")


def panel(app, reference: str | None, seeds: dict, nets: list, entry_of: dict, set_kinds: list[str]) -> None:
    """Per stage, the seed-to-seed similarity of `reference` beside its similarity to the other
    types of the page's set, on the current image (live) and over the dataset (the CSV)."""
    st.header("How different is different?")
    if reference is None:
        kinds = ", ".join(consistency.type_label(k) for k in set_kinds if not k.endswith("/none/arl"))
        st.info(f"No seeds yet: none of {kinds} has two or more networks of one recipe in "
                f"`{seeds_folder(app.folder)}` or the checkpoint folder, so nothing shows how much two seeds of one "
                f"type differ (copy them there with `python scripts/export_fp16.py`, see checkpoints/README.md).")
        return
    reduction = st.selectbox("Channel reduction for the comparison", list(ANALYSIS_REDUCTIONS),
                             format_func=ANALYSIS_REDUCTION_LABELS.get, key="cmpconsred")
    others = [k for k in set_kinds if k != reference and not k.split("/")[1] == "none"]
    partners = consistency.partners(nets, seeds[reference], others)
    absent = [k for k in others if not partners[k]]
    others = [k for k in others if partners[k]]
    ref_label = consistency.type_label(reference)
    st.caption(f"Spearman ρ between the masks of two networks, per stage (the last attention module of each), "
               f"{ANALYSIS_REDUCTION_LABELS[reduction]}: 1 = the same ranking of positions, 0 = unrelated. "
               f"Seeds of {ref_label}: {', '.join(n.name for n in seeds[reference])}; every network here was "
               "trained with their recipe." + (f" Not trained with it: {', '.join(map(consistency.type_label, absent))}."
                                               if absent else ""))

    st.subheader("This image")
    current = app.trace(show_error=False)
    target = int(current.probs.argmax()) if current is not None else -1  # -1: each network's own top class
    maps, failed = {}, []
    for network in [*seeds[reference], *(n for k in others for n in partners[k])]:
        try:
            maps[network] = image_maps(app.key(entry_of[network]), app.image, reduction, target)
        except ResattnError as exc:
            failed.append(f"{network.name} ({exc})")
    if failed:
        st.warning(f"Left out: {'; '.join(failed)}")
    rows = consistency.image_rows(maps)
    table, comparisons = consistency.stage_table(rows, reference, others, reduction)
    _show(table, comparisons, reference, others, "consistency_image")
    st.caption("One image has no sampling interval: a single number is one pair; brackets give the range (lowest "
               "to highest) over the pairs (every two seeds; every seed with every network of the other type). "
               "\"More than that\": every pair of the two types is less alike than every pair of seeds."
               + (" The class-weighted reduction asks every network about the sidebar checkpoint's top class."
                  if reduction == "class_weighted" else ""))

    rows, path = dataset_rows()
    if rows is None:
        st.subheader("Over the dataset")
        st.info(f"No dataset table at `{path}` yet: `{COMMAND}` makes it (or set RESATTN_CONSISTENCY to one).")
        return
    n_images = min((r["n_images"] for r in rows), default=0)
    st.subheader(f"Over the dataset ({n_images} {_source(path)})")
    table, comparisons = consistency.stage_table(rows, reference, others, reduction)
    if not any(line["seeds"] for line in table):
        st.info(f"The dataset table `{path}` has no seeds of {ref_label} for this reduction: make it again with "
                f"`{COMMAND}` once they are in the seeds folder.")
        return
    _show(table, comparisons, reference, others, "consistency_dataset")
    st.caption(f"From `{path}`. Brackets: bootstrap 95 % interval over the images (resampled within classes); with "
               "several pairs, the mean of the pairs and the lowest low to the highest high of their intervals. "
               "\"More than that\": the types' interval lies wholly below the seeds' (a conservative reading).")
