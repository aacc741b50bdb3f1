"""resattn.trace: what it records, that the records are what the modules computed, that no
hook survives (also on failure), grad / inference modes, and thread safety."""
from __future__ import annotations

import threading

import pytest
import torch

import resattn
from resattn import ResattnError
from resattn.model.mask import spatial_normalise
from resattn.trace import Trace, attention_modules, model_lock

FIELDS = ("input", "trunk", "mask", "output")


def same_records(a: Trace, b: Trace) -> bool:
    if a.names != b.names or not torch.equal(a.logits, b.logits):
        return False
    for ra, rb in zip(a.modules, b.modules):
        if ra.stage != rb.stage:
            return False
        for field in FIELDS:
            ta, tb = getattr(ra, field), getattr(rb, field)
            if (ta is None) != (tb is None) or (ta is not None and not torch.equal(ta, tb)):
                return False
    return True


def test_records_every_module_in_order(tiny_model, images):
    model = tiny_model("attention92_cifar")
    tr = resattn.trace(model, images(2))
    expected = ["stage1.1", "stage1.2", "stage2.1", "stage2.2", "stage3.1", "stage3.2"]
    assert tr.names == expected == [name for name, _ in attention_modules(model)]
    assert [r.stage for r in tr.modules] == [1, 1, 2, 2, 3, 3]
    assert [r.index for r in tr.modules] == [1, 2, 1, 2, 1, 2]
    assert tr["stage2.2"] is tr.modules[3]
    with pytest.raises(KeyError, match="stage4.1"):
        tr["stage4.1"]
    for record, size, channels in zip(tr.modules, (32, 32, 16, 16, 8, 8), (64, 64, 128, 128, 256, 256)):
        scaled = channels // 8  # width 0.125
        for field in FIELDS:
            assert getattr(record, field).shape == (2, scaled, size, size), (record.name, field)


@pytest.mark.parametrize("attention", ["mixed", "channel", "spatial"])
def test_arl_output_is_one_plus_mask_times_trunk(attention, tiny_model, images):
    tr = resattn.trace(tiny_model(attention=attention, residual="arl"), images(2))
    for r in tr.modules:
        torch.testing.assert_close(r.output, (1 + r.mask) * r.trunk)
        assert not torch.allclose(r.output, r.trunk)  # the mask did something


@pytest.mark.parametrize("attention", ["mixed", "channel", "spatial"])
def test_nal_output_is_mask_times_trunk(attention, tiny_model, images):
    tr = resattn.trace(tiny_model(attention=attention, residual="nal"), images(2))
    for r in tr.modules:
        torch.testing.assert_close(r.output, r.mask * r.trunk)


def test_no_attention_records_the_trunk_as_output(tiny_model, images):
    tr = resattn.trace(tiny_model(attention="none"), images(2))
    assert len(tr.modules) == 3
    for r in tr.modules:
        assert r.mask is None
        assert r.trunk is not None and torch.equal(r.output, r.trunk)


@pytest.mark.parametrize("attention", ["mixed", "spatial", "none"])
def test_records_are_what_the_modules_compute(attention, tiny_model, images):
    """Recompute every module from its recorded input: the trunk and mask must match, and the
    module's output must feed the next module's input (through the stage's first unit)."""
    model = tiny_model("attention92_cifar", attention=attention)
    tr = resattn.trace(model, images(2, seed=5))
    modules = dict(attention_modules(model))
    with torch.inference_mode():
        for r in tr.modules:
            module = modules[r.name]
            pre = module.pre(r.input)
            torch.testing.assert_close(module.trunk(pre), r.trunk)
            if attention != "none":
                torch.testing.assert_close(module.soft_mask_branch(pre), r.mask)
                torch.testing.assert_close(module.attention_residual(r.trunk, r.mask), r.output)
        # Within a stage, module k's full output is module k+1's input.
        for a, b in zip(tr.modules, tr.modules[1:]):
            if a.stage == b.stage:
                torch.testing.assert_close(modules[a.name].post(a.output), b.input)


def test_logits_equal_a_plain_forward_pass(tiny_model, images):
    model = tiny_model()
    x = images(3, seed=1)
    tr = resattn.trace(model, x)
    with torch.inference_mode():
        expected = model(x)
    assert torch.equal(tr.logits, expected)
    assert tr.logits.shape == (3, 4)


@pytest.mark.parametrize("name,size", [("attention56", 64), ("attention56_cifar", 40)])
def test_trace_at_other_sizes(name, size, tiny_model, images):
    tr = resattn.trace(tiny_model(name), images(1, size))
    for r in tr.modules:
        assert r.mask.shape == r.trunk.shape == r.input.shape == r.output.shape


# ------------------------------------------------------------------ mask properties on traces

def test_traced_mixed_masks_lie_in_the_open_unit_interval(tiny_model, images):
    model = tiny_model(attention="mixed")
    tr = resattn.trace(model, images(2))
    for r in tr.modules:
        # float32's sigmoid rounds to exactly 1.0 above ~17: closed interval here ...
        assert ((r.mask >= 0) & (r.mask <= 1)).all()
        assert r.mask.std() > 0.01  # not a constant mask
    # ... and strictly inside (0, 1) in float64, where sigmoid only saturates above ~37.
    tr64 = resattn.trace(model.double(), images(2).double())
    for r in tr64.modules:
        assert ((r.mask > 0) & (r.mask < 1)).all()


def test_traced_channel_masks_have_unit_norm_at_every_position(tiny_model, images):
    tr = resattn.trace(tiny_model(attention="channel"), images(2))
    for r in tr.modules:
        norms = r.mask.norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms))


def test_traced_spatial_masks_are_normalised_per_channel(tiny_model, images):
    model = tiny_model(attention="spatial")
    # The pre-sigmoid values are the head's output, normalised: capture the head's output.
    heads, handles = {}, []
    for name, module in attention_modules(model):
        handles.append(module.soft_mask_branch.head.register_forward_hook(
            lambda m, a, out, name=name: heads.__setitem__(name, out)))
    try:
        tr = resattn.trace(model, images(2))
    finally:
        for handle in handles:
            handle.remove()
    for r in tr.modules:
        z = spatial_normalise(heads[r.name])
        torch.testing.assert_close(torch.sigmoid(z), r.mask)
        assert ((r.mask > 0) & (r.mask < 1)).all()  # |z| <= sqrt(h*w - 1): no saturation
        torch.testing.assert_close(z.mean(dim=(2, 3)), torch.zeros(z.shape[:2]), atol=1e-5, rtol=0)
        torch.testing.assert_close(z.std(dim=(2, 3), correction=0), torch.ones(z.shape[:2]), atol=1e-3, rtol=0)


# ------------------------------------------------------------------ hooks

def test_no_hooks_left_after_success(tiny_model, images, hooks):
    model = tiny_model()
    before = hooks(model)
    resattn.trace(model, images(1))
    resattn.trace(model, images(1), grad=True)
    assert hooks(model) == before == 0


def test_no_hooks_left_when_the_forward_pass_raises(tiny_model, images, hooks, monkeypatch):
    model = tiny_model("attention92_cifar")
    post = attention_modules(model)[3][1].post

    def broken(x):
        raise RuntimeError("boom in stage2.2")

    monkeypatch.setattr(post, "forward", broken)
    with pytest.raises(RuntimeError, match="boom"):
        resattn.trace(model, images(1))
    assert hooks(model) == 0
    monkeypatch.undo()
    # The lock was released too: another thread can trace at once.
    result = []
    worker = threading.Thread(target=lambda: result.append(resattn.trace(model, images(1))))
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive() and len(result[0].modules) == 6


@pytest.mark.parametrize("bad", [
    torch.zeros(1, 3, 32, 32, dtype=torch.int64),  # conv refuses integer input
    torch.zeros(1, 3, 0, 0),  # empty image
])
def test_no_hooks_left_when_the_model_rejects_the_input(bad, tiny_model, hooks):
    model = tiny_model()
    with pytest.raises(RuntimeError):
        resattn.trace(model, bad)
    assert hooks(model) == 0


@pytest.mark.parametrize("bad", [torch.zeros(3, 32, 32), torch.zeros(1, 1, 32, 32), torch.zeros(1, 4, 8, 8),
                                 [[0.0]], None])
def test_rejects_images_that_are_not_n_x_3_x_h_x_w(bad, tiny_model, hooks):
    model = tiny_model()
    with pytest.raises(ResattnError, match="N x 3 x H x W"):
        resattn.trace(model, bad)
    assert hooks(model) == 0


# ------------------------------------------------------------------ autograd

def test_inference_mode_by_default(tiny_model, images):
    x = images(1).requires_grad_(True)
    tr = resattn.trace(tiny_model(), x)
    assert tr.logits.is_inference() and not tr.logits.requires_grad
    for r in tr.modules:
        for field in FIELDS:
            tensor = getattr(r, field)
            assert tensor.is_inference() and not tensor.requires_grad


def test_grad_mode_lets_gradients_flow(tiny_model, images):
    model = tiny_model()
    x = images(2).requires_grad_(True)
    tr = resattn.trace(model, x, grad=True)
    assert not tr.logits.is_inference() and tr.logits.requires_grad
    for r in tr.modules:
        assert r.mask.requires_grad and r.output.requires_grad
    # Gradient of one logit with respect to a traced mask and to the input image.
    record = tr["stage2.1"]
    (mask_grad,) = torch.autograd.grad(tr.logits[0, 1], record.mask, retain_graph=True)
    assert mask_grad.shape == record.mask.shape and mask_grad[0].abs().sum() > 0
    assert mask_grad[1].abs().sum() == 0  # image 1 does not affect image 0's logit
    tr.logits[0, 1].backward()
    assert x.grad is not None and x.grad[0].abs().sum() > 0 and x.grad[1].abs().sum() == 0


def test_trace_to_copies_every_tensor(tiny_model, images):
    tr = resattn.trace(tiny_model(attention="none"), images(1))
    moved = tr.to("cpu")
    assert moved is not tr and moved.names == tr.names
    assert same_records(moved, tr)
    assert moved.modules[0].mask is None


# ------------------------------------------------------------------ threads

def test_concurrent_traces_equal_serial_traces(tiny_model, images, hooks, reliability):
    model = tiny_model("attention92_cifar")
    inputs = [images(2, seed=100 + i) for i in range(8)]
    serial = [resattn.trace(model, x) for x in inputs]
    assert not same_records(serial[0], serial[1])  # different inputs give different records
    results: list = [None] * 8
    errors: list = []
    barrier = threading.Barrier(8)

    def work(i):
        try:
            barrier.wait(timeout=30)
            for _ in range(2):
                results[i] = resattn.trace(model, inputs[i])
        except Exception as exc:  # reported below; a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    same = sum(results[i] is not None and same_records(results[i], serial[i]) for i in range(8))
    reliability("concurrency", "8 threads calling resattn.trace on one model, 8 inputs",
                "every record equals the serial trace; no hook left",
                f"{same}/8 equal to serial; {len(errors)} errors; hooks left: {hooks(model)}")
    assert not errors and not any(t.is_alive() for t in threads)
    for i in range(8):
        assert same_records(results[i], serial[i]), f"thread {i} got another input's records"
    assert hooks(model) == 0


def test_plain_forward_from_another_thread_does_not_pollute_records(tiny_model, images, hooks):
    """While trace's hooks are installed, another thread runs the same model with another
    input (deterministically: from inside the traced pass, after every attention module has
    been recorded). Its pass fires the hooks too; the records must not take its tensors."""
    model = tiny_model()
    x, other = images(1, seed=1), images(1, seed=2)
    expected = resattn.trace(model, x)
    with torch.inference_mode():
        other_logits = model(other)
    seen = []

    def run_other_thread(module, args, out):
        if threading.current_thread() is threading.main_thread():
            def plain():
                with torch.inference_mode():
                    seen.append(model(other))
            worker = threading.Thread(target=plain)
            worker.start()
            worker.join(timeout=60)

    handle = model.fc.register_forward_hook(run_other_thread)
    try:
        polluted = resattn.trace(model, x)
    finally:
        handle.remove()
    assert len(seen) == 1 and torch.equal(seen[0], other_logits)
    assert same_records(polluted, expected)
    assert hooks(model) == 0


def test_model_lock_is_one_reentrant_lock_per_model(tiny_model):
    a, b = tiny_model(), tiny_model()
    assert model_lock(a) is model_lock(a) and model_lock(a) is not model_lock(b)
    with model_lock(a):
        with model_lock(a):  # re-entrant: interventions may trace while holding it
            pass
