"""The benchmark command (`python -m resattn.bench --quick`: the harness, no thresholds) and the
inference optimisations it times: BN folding (`fuse_for_inference`) and channels_last must
leave the logits and every traced record as they were, for every attention type and
residual mode, and gradients through a traced fused model must agree too."""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import resattn
from resattn import ResattnError
from resattn.bench import (
    SECTIONS,
    TARGETS,
    Plan,
    evaluate_targets,
    measure_rerender,
    summarise,
    time_interleaved,
)
from resattn.bench import (
    main as bench_main,
)
from resattn.model import AttentionModule, AttentionResidual, SoftMaskBranch
from resattn.model.fuse import (
    FusedResidualUnit,
    PreActivationClamp,
    _preactivation,
    fuse_for_inference,
    optimise_for_inference,
)

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("input", "trunk", "mask", "output")
VARIANTS = [(attention, residual) for attention in ("mixed", "channel", "spatial", "none")
            for residual in ("arl", "nal")]


def positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


# ------------------------------------------------------------------ the quick run (subprocess)

@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "resattn.bench", "--quick", "--json", str(out / "run.json"),
                           "--markdown", str(out / "run.md")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    return done, out


@pytest.mark.slow
def test_quick_run_exits_cleanly_and_writes_json(quick_run):
    done, out = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "run.json").read_text())
    assert result["quick"] is True and result["errors"] == {}
    assert set(SECTIONS) <= result.keys()
    machine = result["machine"]
    for key in ("cpu", "logical_cpus", "torch_threads", "torch", "torchvision", "device", "commit"):
        assert machine[key] not in (None, ""), key
    assert result["command"].startswith("python -m resattn.bench --quick")

    rows = result["latency"]["rows"]
    plan = result["plan"]
    expected = {(m, v, b) for m in ("attention56", "attention92", "resnet50", "resnet101")
                for v in ("eager", "fused") for b in plan["batches"]}
    assert {(r["model"], r["variant"], r["batch"]) for r in rows} == expected
    for r in rows:
        for key in ("median_ms", "q1_ms", "q3_ms", "min_ms", "ratio_to_resnet50", "ratio_to_resnet50_eager",
                    "min_ratio_to_resnet50", "mac_ratio", "macs"):
            assert positive_finite(r[key]), (key, r)
        assert r["min_ms"] <= r["median_ms"] and r["q1_ms"] <= r["median_ms"] <= r["q3_ms"]
        assert isinstance(r["page_faults"], int) and r["page_faults"] >= 0
        if r["model"] == "resnet50":
            assert r["ratio_to_resnet50"] == r["min_ratio_to_resnet50"] == r["mac_ratio"] == 1.0
    # MACs are counted, not copied: the deeper network of each family costs more.
    macs = {r["model"]: r["macs"] for r in rows}
    assert macs["attention92"] > macs["attention56"] and macs["resnet101"] > macs["resnet50"]

    for r in result["trace"]["rows"]:
        assert positive_finite(r["ratio"]) and positive_finite(r["forward_ms"]) and positive_finite(r["trace_ms"])
    assert {r["variant"] for r in result["trace"]["rows"]} == {"eager", "fused"}
    assert positive_finite(result["training"]["img_per_s"])

    new_image = result["app"]["new_image"]
    has_checkpoints = any((ROOT / "checkpoints").glob("*.safetensors"))
    assert new_image["source"] == ("checkpoints/" if has_checkpoints else "random weights (no checkpoints found)")
    assert len(new_image["models"]) >= 1 and positive_finite(new_image["load_s"])
    for kind in ("loaded", "optimised"):
        assert positive_finite(new_image[kind]["median_ms"])
    rerender = result["app"]["rerender"]
    assert rerender["status"] == "measured" or rerender["status"].startswith(("not measured", "failed")), rerender
    if rerender["status"] == "measured":
        assert positive_finite(rerender["cached_ms"])

    for section in SECTIONS:
        assert positive_finite(result["memory"][section]["rss_peak_mb"])
    targets = result["targets"]
    assert [t["key"] for t in targets] == [key for key, *_ in TARGETS]
    assert not any(t["applies"] for t in targets)  # a quick run is never held to the targets
    for t in targets:
        assert t["measured"] is None or positive_finite(t["measured"])

    markdown = (out / "run.md").read_text()
    assert markdown.startswith("# Benchmarks") and result["command"] in markdown
    assert "| attention56 | fused | 1 |" in markdown and "GPU: not measured" in markdown
    assert "Inference latency" in done.stdout  # the table is printed too


@pytest.mark.slow
def test_markdown_is_rendered_again_from_json(quick_run, tmp_path):
    done, out = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    target = tmp_path / "benchmarks.md"
    assert bench_main(["--from-json", str(out / "run.json"), "--markdown", str(target)]) == 0
    assert target.read_text() == (out / "run.md").read_text()


@pytest.mark.slow
def test_several_runs_get_a_table_of_targets_and_the_notes(quick_run, tmp_path):
    import json

    done, out = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    run["quick"] = False  # a stand-in for full runs: the summary covers full runs only
    runs = []
    for i, ratio in enumerate((1.4, 1.6)):
        run["targets"][0]["measured"], run["targets"][0]["met"] = ratio, ratio <= run["targets"][0]["limit"]
        runs.append(tmp_path / f"run{i}.json")
        runs[-1].write_text(json.dumps(run))
    notes = tmp_path / "notes.md"
    notes.write_text("**What the runs show.** A sentence of the reader's own.\n")
    target = tmp_path / "benchmarks.md"
    assert bench_main(["--from-json", *map(str, runs), "--notes", str(notes), "--markdown", str(target)]) == 0
    text = target.read_text()
    assert text.index("A sentence of the reader's own.") < text.index("## Targets across the runs below")
    row = next(line for line in text.splitlines() if line.startswith(f"| {run['targets'][0]['what']} | ≤"))
    assert "| 1.400× | 1.600× | 1 of 2 |" in row
    assert bench_main(["--from-json", str(runs[0]), "--notes", str(tmp_path / "missing.md")]) == 2


def test_bad_arguments_fail_with_a_message(capsys, tmp_path):
    assert bench_main(["--only", "latency,nonsense"]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert bench_main(["--from-json", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_importing_the_bench_does_not_import_streamlit():
    code = "import sys, resattn.bench; sys.exit('streamlit' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------ harness pieces (in-process)

def test_time_interleaved_alternates_order_and_counts_passes():
    calls = []
    cases = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    cases["touch"] = lambda: bytearray(64 * 2**20)  # 64 MiB, above glibc's mmap threshold: fresh pages
    faults: dict = {}
    seconds = time_interleaved(cases, repeats=3, warmup=1, device=torch.device("cpu"), page_faults=faults)
    assert calls == list("abc") + list("abc") + list("cba") + list("abc")
    assert {k: len(v) for k, v in seconds.items()} == {"a": 3, "b": 3, "c": 3, "touch": 3}
    assert all(s >= 0 for v in seconds.values() for s in v)
    if sys.platform.startswith("linux"):  # >= 32 faults even if the kernel maps it in 2 MiB huge pages
        assert min(faults["touch"]) >= 16 and min(faults["touch"]) > max(faults["a"])


def test_summarise_reports_median_quartiles_and_minimum():
    s = summarise([0.004, 0.001, 0.003, 0.002, 0.005])
    assert s == {"median_ms": 3.0, "q1_ms": 2.0, "q3_ms": 4.0, "min_ms": 1.0, "n": 5}
    assert summarise([0.002])["q1_ms"] == 2.0


def test_targets_are_judged_only_where_they_apply():
    rows = [{"model": "attention56", "variant": v, "batch": 1, "ratio_to_resnet50": r, "ratio_to_resnet50_eager": e}
            for v, r, e in (("eager", 1.6, 1.6), ("fused", 1.55, 1.4))]
    result = {"quick": False, "machine": {"device": "cpu", "torch_threads": 2},
              "latency": {"rows": rows},
              "trace": {"rows": [{"variant": "eager", "ratio": 1.01}, {"variant": "fused", "ratio": 1.2}]},
              "app": {"new_image": {"input_sizes": [128], "loaded": {"median_ms": 1200.0},
                                    "optimised": {"median_ms": 800.0}},
                      "rerender": {"status": "not measured (app page not found)"}}}
    got = {t["key"]: (t["measured"], t["met"], t["applies"]) for t in evaluate_targets(result)}
    assert got["a56_r50_fused_vs_eager"] == (1.4, True, True)
    assert got["a56_r50_fused_vs_fused"] == (1.55, False, True)
    assert got["a56_r50_eager_vs_eager"] == (1.6, False, True)
    assert got["trace_eager"][1] is True and got["trace_fused"][1] is False
    assert got["rerender"] == (None, None, True)
    assert got["new_image_optimised"][1] is True and got["new_image_loaded"][1] is False
    result["machine"]["torch_threads"] = 4
    assert not any(t["applies"] for t in evaluate_targets(result))


def test_rerender_without_an_app_page_says_so(tmp_path):
    assert measure_rerender(tmp_path, reruns=1, timeout_s=120) == {"status": "not measured (app page not found)"}


def test_quick_plan_is_smaller_than_the_full_one():
    from resattn.bench import FULL, QUICK

    assert isinstance(QUICK, Plan) and QUICK.image_size < FULL.image_size and sum(QUICK.repeats) < sum(FULL.repeats)
    assert len(FULL.batches) == len(FULL.repeats) and len(QUICK.batches) == len(QUICK.repeats)


# ------------------------------------------------------------------ the optimisations keep results

def harden_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give some BN channels a negative or zero scale (besides conftest's positive ones), so
    that every branch of the folding is exercised: clamp from below, from above, constant."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                sign = torch.where(torch.rand(bn.num_features, generator=generator) < 0.25, -1.0, 1.0)
                bn.weight.mul_(sign)
                bn.weight[0] = 0.0
    return model


def relative_error(tensor: torch.Tensor, truth: torch.Tensor) -> float:
    return float((tensor.double() - truth).abs().max() / truth.abs().max().clamp_min(1e-12))


def assert_same_trace(reference, other, truth, *, rtol=1e-3, slack=4.0, floor=2e-5):
    """`other` (an optimised model's trace) records what `reference` (the float32 original)
    does: close to it, and no further from the float64 `truth` than float32 rounding puts the
    original itself (within `slack` times, or `floor`). Channel attention with NAL divides by
    small norms and amplifies rounding, so a fixed 1e-4 would fail on the original too."""
    assert other.names == reference.names == truth.names
    pairs = [("logits", reference.logits, other.logits, truth.logits)]
    for a, b, t in zip(reference.modules, other.modules, truth.modules):
        assert (a.name, a.stage) == (b.name, b.stage)
        for field in FIELDS:
            ta, tb, tt = getattr(a, field), getattr(b, field), getattr(t, field)
            assert (ta is None) == (tb is None), (a.name, field)
            if ta is not None:
                pairs.append((f"{a.name}.{field}", ta, tb, tt))
    for what, ta, tb, tt in pairs:
        assert tb.shape == ta.shape and tb.dtype == ta.dtype, what
        torch.testing.assert_close(tb, ta, rtol=rtol, atol=rtol * max(float(ta.abs().max()), 1e-6),
                                   msg=lambda m: f"{what}: {m}")
        assert relative_error(tb, tt) <= slack * relative_error(ta, tt) + floor, what


@pytest.mark.parametrize("name,size", [("attention56", 64), ("attention56_cifar", 32)])
@pytest.mark.parametrize("attention,residual", VARIANTS)
def test_fused_and_channels_last_models_trace_the_same(tiny_model, images, name, size, attention, residual):
    model = harden_batchnorms(tiny_model(name, attention=attention, residual=residual))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = images(2, size)
    reference = resattn.trace(model, x)
    truth = resattn.trace(copy.deepcopy(model).double(), x.double())

    fused = fuse_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert not fused.training
    assert [n for n, _ in fused.attention_modules()] == reference.names
    for _, module in fused.attention_modules():
        assert isinstance(module, AttentionModule)
        assert (module.soft_mask_branch is None) == (attention == "none")
        if module.soft_mask_branch is not None:
            assert isinstance(module.soft_mask_branch, SoftMaskBranch)
            assert isinstance(module.attention_residual, AttentionResidual)
            assert module.attention_residual.mode == residual
    assert_same_trace(reference, resattn.trace(fused, x), truth)

    for fuse, channels_last in ((True, True), (False, True)):
        optimised = optimise_for_inference(model, fuse=fuse, channels_last=channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        assert_same_trace(reference, resattn.trace(optimised, x_cl), truth)
    # The original is untouched, and still computes what it did.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(resattn.trace(model, x).logits, reference.logits)


def test_gradients_through_a_traced_fused_model_agree(tiny_model, images):
    model = harden_batchnorms(tiny_model("attention56_cifar", attention="spatial"))
    fused = fuse_for_inference(model)
    grads = []
    for m in (model, fused):
        x = images(2, 32).requires_grad_(True)
        tr = resattn.trace(m, x, grad=True)
        (tr.logits[:, 1].sum() + tr["stage2.1"].mask.mean()).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-4 * grads[0].abs().max())


@pytest.mark.parametrize("seed", range(4))
def test_preactivation_clamp_equals_relu_of_batchnorm(seed):
    generator = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(16).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.randn(16, generator=generator))
        bn.weight[:2] = 0.0  # constant channels
        bn.weight[2] = 1e-38  # a scale so small its threshold overflows: treated as constant
        bn.bias.copy_(torch.randn(16, generator=generator))
        bn.running_mean.copy_(torch.randn(16, generator=generator))
        bn.running_var.copy_(torch.rand(16, generator=generator) + 0.1)
    clamp, scale, const = _preactivation(bn)
    assert isinstance(clamp, PreActivationClamp) and clamp.hi is not None  # some scales are negative
    x = torch.randn(3, 16, 5, 5, generator=generator) * 3
    folded = scale.float().view(1, -1, 1, 1) * clamp(x) + const.float().view(1, -1, 1, 1)
    torch.testing.assert_close(folded, torch.relu(bn(x)), rtol=1e-5, atol=1e-5)


def test_fused_unit_keeps_its_input_intact_and_matches(tiny_model):
    model = harden_batchnorms(tiny_model("attention56_cifar"))
    unit = model.stage2[0][0]  # the transition unit: stride 2 and a projection shortcut
    fused = FusedResidualUnit(unit)
    x = torch.randn(2, unit.bn1.num_features, 16, 16)
    kept = x.clone()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), unit(x), rtol=1e-4, atol=1e-4)
    assert torch.equal(x, kept)


def test_fuse_rejects_other_models_and_is_idempotent(tiny_model, images):
    with pytest.raises(ResattnError, match="ResidualAttentionNetwork"):
        fuse_for_inference(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))
    fused = fuse_for_inference(tiny_model())
    again = fuse_for_inference(fused)
    assert again is not fused
    x = images(1, 32)
    assert torch.equal(resattn.trace(again, x).logits, resattn.trace(fused, x).logits)


def test_targets_across_runs_count_only_the_runs_that_measured_a_target():
    """A run made with --only leaves some targets unmeasured ("—"): they count neither as met
    nor as missed."""
    from resattn.bench.markdown import targets_across_runs

    def run(measured, met):
        return {"targets": [{"what": "re-render", "unit": "ms", "limit": 0.15, "measured": measured, "met": met}]}

    rows = targets_across_runs([run(0.09, True), run(None, False), run(0.2, False)])
    row = next(r for r in rows if r.startswith("| re-render"))
    assert row.endswith("| 1 of 2 |") and "| — |" in row
