"""The app section: a new image through every model of the zoo (as loaded and optimised),
and the explorer page's cached re-render, measured by the app's own probe (ui/bench_probe.py)
in a subprocess: resattn never imports streamlit, and a page's caches must not leak into the
other sections' timings."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..checkpoints import (
    ModelCard,
    as_card,
    list_checkpoints,
    load_checkpoint,
    model_card,
    save_checkpoint,
)
from ..images import load_image
from ..model import create_model
from ..model.fuse import optimise_for_inference
from ..trace import trace
from .measure import summarise, time_interleaved
from .plan import ROOT, SAMPLE_PHOTOS, ZOO_ARCH, ZOO_CLASSES, ZOO_INPUT_SIZE, ZOO_VARIANTS, ZOO_WIDTH, Plan


def zoo_models(folder: Path, device: torch.device) -> tuple[list[tuple[str, nn.Module, ModelCard]], str, float]:
    """The zoo as the app holds it: (name, eval model, card) per checkpoint, where they came
    from, and the seconds loading took. Random weights of the zoo's architectures if none."""
    start = time.perf_counter()
    found = list_checkpoints(folder)
    if found:
        models = []
        for stem, _ in found:
            model, card = load_checkpoint(stem.with_suffix(".safetensors"), device=device)
            models.append((stem.name, model, card))
        source = f"{folder.name}/" if folder.resolve().parent == ROOT else str(folder)
    else:
        models = []
        classes = [f"class {i}" for i in range(ZOO_CLASSES)]
        for attention, residual in ZOO_VARIANTS:
            torch.manual_seed(0)
            model = create_model(ZOO_ARCH, attention=attention, residual=residual, width=ZOO_WIDTH,
                                 num_classes=ZOO_CLASSES).to(device).eval()
            card = as_card(model_card(model, classes=classes, input_size=ZOO_INPUT_SIZE))
            models.append((f"{ZOO_ARCH}_{attention}" + ("" if attention == "none" else f"_{residual}"), model, card))
        source = "random weights (no checkpoints found)"
    return models, source, time.perf_counter() - start


def sample_jpegs() -> list[bytes]:
    """Bundled scikit-image photos as JPEG bytes, the way an upload reaches the app."""
    import skimage.data
    from PIL import Image

    out = []
    for name in SAMPLE_PHOTOS:
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def new_image_through(models: list[tuple[str, nn.Module, ModelCard]], data: bytes, device: torch.device, *,
                      channels_last: bool) -> dict[str, torch.Tensor]:
    """What the app does with a new image: decode, card.preprocess (once per input size and
    normalisation), trace every model, softmax, keep the records on the CPU. Returns the
    probabilities per model."""
    image = load_image(data)
    inputs: dict[tuple, torch.Tensor] = {}
    probabilities = {}
    for name, model, card in models:
        key = (card.input_size, card.mean, card.std)
        if key not in inputs:
            x = card.preprocess(image).to(device)
            inputs[key] = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        record = trace(model, inputs[key]).to("cpu")
        probabilities[name] = record.logits.softmax(dim=1)
    return probabilities


def run_app(plan: Plan, device: torch.device, *, checkpoints: Path, log: Callable[[str], None]) -> dict:
    models, source, load_s = zoo_models(checkpoints, device)
    start = time.perf_counter()
    optimised = [(name, optimise_for_inference(model), card) for name, model, card in models]
    optimise_s = time.perf_counter() - start
    photos = sample_jpegs()
    turn = {"loaded": 0, "optimised": 0}

    def case(kind: str, zoo, channels_last: bool) -> Callable[[], Any]:
        def run() -> None:
            # A different photo on every call: nothing can be served from a previous one.
            data = photos[turn[kind] % len(photos)]
            turn[kind] += 1
            new_image_through(zoo, data, device, channels_last=channels_last)
        return run

    cases = {"loaded": case("loaded", models, False), "optimised": case("optimised", optimised, True)}
    log(f"app: a new image through {len(models)} models x {plan.zoo_repeats} passes ({source})")
    seconds = time_interleaved(cases, repeats=plan.zoo_repeats, warmup=1, device=device)
    sizes = sorted({card.input_size for _, _, card in models})
    new_image = {"source": source, "models": [name for name, _, _ in models], "input_sizes": sizes,
                 "load_s": load_s, "optimise_s": optimise_s,
                 "loaded": summarise(seconds["loaded"]), "optimised": summarise(seconds["optimised"]),
                 "what": "JPEG bytes -> load_image -> preprocess -> trace -> softmax, every model, records to CPU"}
    log("app: cached re-render of the explorer page (subprocess)")
    if found_checkpoints(checkpoints):
        rerender = measure_rerender(ROOT, plan.app_reruns, plan.app_timeout_s, checkpoints=checkpoints)
    else:
        # Give the page something to show: the random-weight zoo, saved to a temporary folder.
        with tempfile.TemporaryDirectory(prefix="resattn-bench-") as folder:
            for name, model, card in models:
                save_checkpoint(Path(folder) / name, model, card)
            rerender = measure_rerender(ROOT, plan.app_reruns, plan.app_timeout_s, checkpoints=Path(folder))
        rerender["checkpoints"] = source
    return {"new_image": new_image, "rerender": rerender}


def found_checkpoints(folder: Path) -> bool:
    return bool(list_checkpoints(folder))


def measure_rerender(root: Path, reruns: int, timeout_s: int, *, checkpoints: Path | None = None) -> dict:
    """The explorer page's cached re-render time ("server time": the script run, no browser),
    with the app reading `checkpoints` (RESATTN_CHECKPOINTS) when given.
    Returns {"status": "measured", "cached_ms": ..., ...} or a status saying why not.

    The probe is the app's own module (`python -m ui.bench_probe ROOT RERUNS`, run in `root`):
    it imports streamlit, which resattn never does, and runs in a fresh interpreter so that a
    page's caches do not leak into the other sections' timings."""
    if not (root / "pages" / "explorer.py").is_file():
        return {"status": "not measured (app page not found)"}
    if not (root / "ui" / "bench_probe.py").is_file():
        return {"status": "not measured (the app's probe ui/bench_probe.py not found)"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    if checkpoints is not None:
        env["RESATTN_CHECKPOINTS"] = str(checkpoints)
    try:
        done = subprocess.run([sys.executable, "-m", "ui.bench_probe", str(root), str(reruns)], cwd=root, env=env,
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": f"not measured (timed out after {timeout_s} s)"}
    for line in done.stdout.splitlines():
        if line.startswith("RESATTN_BENCH "):
            return json.loads(line[len("RESATTN_BENCH "):])
    tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])[:500]
    return {"status": "failed", "error": tail or f"exit code {done.returncode}"}
