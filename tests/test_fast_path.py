"""The app's fast path (issue 17, item 8): the app traces each checkpoint's inference model
(ui.cache.inference_model: resattn.model.fuse.optimise_for_inference, every BatchNorm
folded, channels_last), not the model as loaded, and replaces masks on it; attributions
and the "randomise" check stay on the model as trained (tested below, reasons in
ui/analysis_cache.py).

What it shows must be what the model as trained computes: the trace the app caches
(ui.cache.image_trace) is compared with resattn.trace of the eager NCHW model from
resattn.load_checkpoint, tensor by tensor (the logits, and every attention module's input
X, trunk T, mask M and output H), for every attention type and residual mode on tiny
models and for every shipped checkpoint. The tolerance is relative to the tensor's own
scale: max |optimised - eager| <= TOLERANCE * max |eager|. Folding changes the order of
float32 operations, nothing else; measured on the skimage photo used here (2-core CPU,
1 thread): tiny models (random weights with randomised BatchNorm, which amplify rounding)
at most 6.0e-5, the shipped checkpoints at most 2.8e-6 (max abs 1.1e-5, logits 2.5e-6).
A wrong fold is of another order: one BatchNorm off by 2 % already fails (tested below).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from conftest import build_tiny
from PIL import Image
from torch import nn

import resattn
from resattn import analysis
from resattn.checkpoints import model_card
from resattn.errors import ResattnError
from resattn.model.fuse import optimise_for_inference
from resattn.trace import Trace

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.with_suffix("") for p in (ROOT / "checkpoints").glob("*.safetensors"))
VARIANTS = [(attention, residual) for attention in ("mixed", "channel", "spatial", "none")
            for residual in ("arl", "nal")]
CLASSES = ["tench", "springer", "cassette", "chainsaw", "church", "horn", "truck", "pump", "golf", "parachute"]
FIELDS = ("input", "trunk", "mask", "output")
TOLERANCE = {"tiny": 2e-4, "shipped": 2e-5}  # max |optimised - eager| / max |eager|, per tensor
PHOTO = Image.fromarray(skimage.data.chelsea())


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> Path:
    """Every attention type and residual mode as a tiny checkpoint (64 px)."""
    folder = tmp_path_factory.mktemp("fast_path_zoo")
    for seed, (attention, residual) in enumerate(VARIANTS):
        model = build_tiny("attention56", attention=attention, residual=residual, width=0.125,
                           num_classes=len(CLASSES), seed=seed)
        card = model_card(model, classes=CLASSES, input_size=64, train_size=64, weights="random weights, for tests",
                          metrics={}, recipe={"command": "tests/test_fast_path.py", "epochs": 0})
        resattn.save_checkpoint(folder / f"attention56_{attention}_{residual}", model, card)
    return folder


def entry_of(folder: Path, name: str):
    from ui import cache

    return next(e for e in cache.list_entries(folder) if e.name == name)


def eager_trace(stem: Path) -> Trace:
    model, card = resattn.load_checkpoint(stem)
    return resattn.trace(model, card.preprocess(PHOTO))


def relative_differences(eager: Trace, fast: Trace) -> dict[str, float]:
    """{tensor: max |fast - eager| / max |eager|} for the logits and every module's X, T, M, H;
    the two traces must record the same modules and the same tensors."""
    assert fast.names == eager.names
    pairs = [("logits", eager.logits, fast.logits)]
    for a, b in zip(eager.modules, fast.modules):
        assert (a.name, a.stage) == (b.name, b.stage)
        for field in FIELDS:
            ta, tb = getattr(a, field), getattr(b, field)
            assert (ta is None) == (tb is None), (a.name, field)
            if ta is not None:
                assert tb.shape == ta.shape and tb.dtype == ta.dtype, (a.name, field)
                pairs.append((f"{a.name}.{field}", ta, tb))
    return {what: float((tb.cpu() - ta.cpu()).abs().max() / ta.abs().max().clamp_min(1e-12))
            for what, ta, tb in pairs}


def app_trace(folder: Path, name: str):
    """The trace the app shows for PHOTO through checkpoint `name`, and the model it traced."""
    from ui import cache

    entry = entry_of(folder, name)
    key = cache.trace_key(entry, "cpu", f"fast-path-{name}", entry.card.input_size)
    return cache.image_trace(key, PHOTO), cache.inference_model(entry.path, entry.stamp, "cpu")


def assert_is_the_fast_path(model: nn.Module, trace: Trace) -> None:
    """The app traced the optimised model: no BatchNorm left, channels_last tensors."""
    assert getattr(model, "fused_for_inference", False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    trunk = trace.modules[0].trunk
    assert trunk.is_contiguous(memory_format=torch.channels_last) and not trunk.is_contiguous()


@pytest.mark.parametrize("attention,residual", VARIANTS)
def test_the_app_traces_the_optimised_model_as_the_eager_one_tiny(tiny_zoo, attention, residual):
    name = f"attention56_{attention}_{residual}"
    shown, model = app_trace(tiny_zoo, name)
    assert_is_the_fast_path(model, shown.trace)
    differences = relative_differences(eager_trace(tiny_zoo / name), shown.trace)
    worst = max(differences, key=differences.get)
    assert differences[worst] <= TOLERANCE["tiny"], (worst, differences[worst])


@pytest.mark.skipif(not SHIPPED, reason="no shipped checkpoints in checkpoints/")
@pytest.mark.parametrize("stem", SHIPPED, ids=[s.name for s in SHIPPED])
def test_the_app_traces_each_shipped_checkpoint_as_the_eager_one(stem):
    shown, model = app_trace(stem.parent, stem.name)
    assert_is_the_fast_path(model, shown.trace)
    differences = relative_differences(eager_trace(stem), shown.trace)
    worst = max(differences, key=differences.get)
    assert differences[worst] <= TOLERANCE["shipped"], (worst, differences[worst])
    eager = eager_trace(stem)
    assert int(shown.trace.logits.argmax()) == int(eager.logits.argmax())


def test_the_comparison_catches_a_wrong_fold(tiny_zoo):
    """The same measurement on an optimised model whose one BatchNorm was 2 % off before
    folding (a fold with a wrong statistic) exceeds the tolerance: the check can fail."""
    model, card = resattn.load_checkpoint(tiny_zoo / "attention56_mixed_arl")
    x = card.preprocess(PHOTO)
    eager = resattn.trace(model, x)
    broken = resattn.load_checkpoint(tiny_zoo / "attention56_mixed_arl")[0]
    bn = next(m for m in broken.stage2.modules() if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        bn.running_var.mul_(1.02)
    wrong = optimise_for_inference(broken)
    differences = relative_differences(eager, resattn.trace(wrong, x.contiguous(memory_format=torch.channels_last)))
    assert max(differences.values()) > TOLERANCE["tiny"]


def test_attributions_are_the_library_maps_of_the_model_as_trained(tiny_zoo):
    """The app's attributions (and report reductions) run on the model as trained, exactly
    as `python -m resattn.report` computes them: through the folded model a ReLU gate within
    rounding of its threshold may switch, which moved Integrated Gradients by up to 8.6e-4 of
    the map's maximum (see ui/analysis_cache.py); the agreement numbers rank these maps."""
    from ui import analysis_cache, cache

    entry = entry_of(tiny_zoo, "attention56_mixed_arl")
    key = cache.trace_key(entry, "cpu", "fast-path-attribution", 64)
    eager, _, x = cache.model_and_input(key, PHOTO, eager=True)
    target = int(eager(x).argmax())
    for method, options in (("ig", {"n_steps": 8}), ("gradcam", {"layer": "stage2.1"}), ("occlusion", {})):
        shown = analysis_cache.attribution(key, PHOTO, method, target, layer=options.get("layer"), ig_steps=8)
        assert torch.equal(shown.map, analysis.attribute(eager, x, method, target, **options).map), method
    mask, gradient = analysis.mask_gradients(eager, x, target)["stage2.1"]
    weights = analysis.channel_weights(mask, "class_weighted", gradient=gradient)
    np.testing.assert_array_equal(analysis_cache.report_mask(key, PHOTO, "stage2.1", "class_weighted", target).map,
                                  analysis.weighted_map(mask, weights).numpy())


def test_mask_interventions_run_on_the_fast_model_and_randomise_on_the_trained_one(tiny_zoo):
    """Replacing M acts on the model the app traces (its soft mask branches give the same M);
    "randomise" needs the BatchNorm layers folding removes, so the app runs it on the model as
    trained (exactly the library's result there) and the library refuses a folded model."""
    from ui import analysis_cache, cache

    entry = entry_of(tiny_zoo, "attention56_mixed_arl")
    key = cache.trace_key(entry, "cpu", "fast-path-intervention", 64)
    eager, card, x = cache.model_and_input(key, PHOTO, eager=True)
    fast = cache.inference_model(entry.path, entry.stamp, "cpu")

    with pytest.raises(ResattnError, match="BatchNorm"):
        analysis.randomise_mask_branches(fast, ["stage2.1"])
    shown = analysis_cache.intervention(key, PHOTO, "stage2.1", "randomise", seed=3)
    library = analysis.intervene(eager, x, "stage2.1", "randomise", seed=3).summary(classes=card.classes)
    assert torch.equal(shown.probabilities_after, library.probabilities_after)
    assert torch.equal(shown.probabilities_before, library.probabilities_before)

    shown = analysis_cache.intervention(key, PHOTO, "stage2.1", "zero")
    library = analysis.intervene(eager, x, "stage2.1", "zero").summary(classes=card.classes)
    for a, b in ((library.probabilities_after, shown.probabilities_after),
                 *((library.maps_after[m], shown.maps_after[m]) for m in library.maps_after)):
        assert float((a - b).abs().max() / a.abs().max().clamp_min(1e-12)) <= TOLERANCE["tiny"]
    assert shown.identity["max_abs_H_minus_T"] == 0.0  # ARL with M = 0: H = T exactly, on the folded model too
    assert [r["name"] for r in shown.top5] == [r["name"] for r in library.top5]
