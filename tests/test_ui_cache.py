"""The UI caches library objects (issue 17, item 2): the trace the pages read is the
library's Trace, shared by every session, not a numpy copy; attributions are
resattn.analysis.Attribution; an intervention is cached as the library's
InterventionSummary, which reduces an InterventionResult (two full traces) to what a page
shows. Numpy appears where a figure or an export is made."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from conftest import build_tiny
from PIL import Image

import resattn
from resattn import analysis
from resattn.checkpoints import model_card
from resattn.trace import Trace

CLASSES = ["tench", "springer", "cassette", "chainsaw", "church", "horn", "truck", "pump", "golf", "parachute"]
PHOTO = Image.fromarray(skimage.data.astronaut())


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ui_cache_zoo")
    for seed, residual in enumerate(("arl", "nal")):
        model = build_tiny("attention56", attention="mixed", residual=residual, width=0.125,
                           num_classes=len(CLASSES), seed=seed)
        card = model_card(model, classes=CLASSES, input_size=64, train_size=64, weights="random weights, for tests",
                          metrics={}, recipe={"command": "tests/test_ui_cache.py", "epochs": 0})
        resattn.save_checkpoint(folder / f"attention56_mixed_{residual}", model, card)
    return folder


def key_of(folder, name: str, sha: str):
    from ui import cache

    entry = next(e for e in cache.list_entries(folder) if e.name == name)
    return cache.trace_key(entry, "cpu", sha, 64)


def test_the_cached_trace_is_shared_not_copied(zoo):
    """image_trace hands every caller the one cached object (st.cache_resource): a rerun
    copies no tensor. Its records are views of the library's trace, one image."""
    from ui import cache

    key = key_of(zoo, "attention56_mixed_arl", "ui-cache-shared")
    first, second = cache.image_trace(key, PHOTO), cache.image_trace(key, PHOTO)
    assert first is second
    record, module = first.trace.modules[0], first.modules[0]
    assert module.mask.shape == record.mask.shape[1:]
    assert module.mask.data_ptr() == record.mask.data_ptr()  # a view, not a copy
    np.testing.assert_allclose(first.probs, first.trace.logits[0].softmax(0).numpy())
    assert isinstance(first.trace, Trace)
    export = first.arrays()  # numpy only here, for the .npz
    assert all(isinstance(v, np.ndarray) for v in export.values())
    np.testing.assert_array_equal(export[f"{module.name}/mask"], record.mask[0].numpy())


@pytest.mark.parametrize("residual", ["arl", "nal"])
def test_an_intervention_summary_is_its_result_reduced(residual):
    model = build_tiny("attention56_cifar", attention="mixed", residual=residual, num_classes=4, seed=1)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    result = analysis.intervene(model, x, "stage2.1", "zero")
    summary = result.summary(1, classes=["a", "b", "c", "d"], reduce="channel", channel=3)
    assert torch.equal(summary.probabilities_before, result.probabilities_before[1])
    assert torch.equal(summary.probabilities_after, result.probabilities_after[1])
    assert summary.top5 == [{"name": "abcd"[r["class"]], **r} for r in result.top5_table(1)]
    assert summary.mask_change == result.mask_change()
    for name in result.before.names:
        assert torch.equal(summary.maps_before[name], result.before[name].mask[1, 3])
        assert torch.equal(summary.maps_after[name], result.after[name].mask[1, 3])
    # The identity the page quotes: with M = 0, ARL's H is T exactly and NAL's H is 0.
    ident = summary.identity
    assert ident["max_abs_T"] > 0
    if residual == "arl":
        assert ident["max_abs_H_minus_T"] == 0.0 and ident["max_abs_H"] == ident["max_abs_T"]
    else:
        assert ident["max_abs_H"] == 0.0 and ident["max_abs_H_minus_T"] == ident["max_abs_T"]
    assert not any(isinstance(v, Trace) for v in vars(summary).values())  # small: no trace kept


def test_the_app_caches_library_attributions_and_intervention_summaries(zoo):
    from ui import analysis_cache

    key = key_of(zoo, "attention56_mixed_arl", "ui-cache-analysis")
    ig = analysis_cache.attribution(key, PHOTO, "ig", 2, ig_steps=4)
    assert isinstance(ig, analysis.Attribution) and ig.method == "ig" and ig.target == 2 and ig.seconds > 0
    absolute = analysis_cache.attribution(key, PHOTO, "abs_ig", 2, ig_steps=4)
    assert absolute.method == "abs_ig" and torch.equal(absolute.map, ig.map.abs())
    summary = analysis_cache.intervention(key, PHOTO, "stage2.1", "one")
    assert isinstance(summary, analysis.InterventionSummary)
    assert {r["name"] for r in summary.top5} <= set(CLASSES)
    assert summary.identity["max_abs_H_minus_2T"] < 1e-5 * summary.identity["max_abs_T"]  # ARL, M = 1: H = 2T


@pytest.mark.parametrize("value, threads", [(None, 1), ("", 1), ("3", 3), (" 2 ", 2), ("0", 1), ("-2", 1),
                                            ("two", 1), ("1.5", 1)])
def test_torch_threads_come_from_the_environment_or_default_to_one(value, threads):
    from resattn.device import torch_threads, use_torch_threads

    environ = {} if value is None else {"RESATTN_TORCH_THREADS": value}
    assert torch_threads(environ) == threads
    before = torch.get_num_threads()
    try:
        assert use_torch_threads(environ) == threads == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
