"""The one hook helper (resattn.hooks.forward_hooks) and everything that looks inside a forward
pass through it: trace, the mask logits of the statistics, the tour's steps and mask
interventions leave no hook behind, also when the pass raises, and ignore other threads'
passes. Also: attention_modules is one list whichever way it is asked for, and the model
registry refuses a name twice."""
from __future__ import annotations

import threading

import pytest
import torch

import resattn
from resattn import ResattnError, stats, teaching
from resattn.analysis.interventions import mask_replacement, replaced_mask
from resattn.hooks import Hook, forward_hooks, model_lock
from resattn.model import attention_modules

# (name, call) for every library function that registers hooks; each gets a tiny model and
# a 1 x 3 x 32 x 32 input and must run one forward pass through `forward_hooks`.


def _intervened(model, x):
    with replaced_mask(model, "stage2.1", mask_replacement("zero")):
        return model(x)


HOOKED = {
    "trace": lambda model, x: resattn.trace(model, x),
    "trace_grad": lambda model, x: resattn.trace(model, x, grad=True),
    "mask_logits": stats.mask_logits,
    "stem_steps": teaching.stem_steps,
    "mask_branch_steps": lambda model, x: teaching.mask_branch_steps(model, x, "stage1.1"),
    "replaced_mask": _intervened,
}


@pytest.mark.parametrize("name", list(HOOKED))
def test_no_hook_is_left_after_a_pass(name, tiny_model, images, hooks):
    model = tiny_model()
    HOOKED[name](model, images(1))
    assert hooks(model) == 0


@pytest.mark.parametrize("name", list(HOOKED))
def test_no_hook_is_left_and_the_lock_is_free_when_the_pass_raises(name, tiny_model, images, hooks, monkeypatch):
    model = tiny_model()

    def broken(x):
        raise RuntimeError("boom in the classifier")

    monkeypatch.setattr(model.fc, "forward", broken)
    with pytest.raises(RuntimeError, match="boom"):
        HOOKED[name](model, images(1))
    assert hooks(model) == 0
    acquired = []
    worker = threading.Thread(target=lambda: acquired.append(model_lock(model).acquire(timeout=10)))
    worker.start()
    worker.join(timeout=30)
    assert acquired == [True]


def test_forward_hooks_acts_on_this_threads_passes_only(tiny_model, images):
    """A pass made by another thread while the block is open (a plain forward, as another
    session would make) neither calls the hook nor sees the output it replaces."""
    model = tiny_model()
    x = images(1)
    calls, plain = [], model(x).detach()

    def replace_output(module, args, out):
        calls.append(threading.get_ident())
        return torch.zeros_like(out)

    other = []
    with forward_hooks(model, [Hook(model.fc, replace_output)]):
        ours = model(x)
        worker = threading.Thread(target=lambda: other.append(model(x).detach()))
        worker.start()  # not blocked: a plain forward takes no lock
        worker.join(timeout=60)
    assert calls == [threading.get_ident()]
    assert torch.equal(ours, torch.zeros_like(ours))
    torch.testing.assert_close(other[0], plain)


def test_pre_hooks_see_the_input(tiny_model, images):
    model = tiny_model()
    x = images(1)
    seen = []
    with forward_hooks(model, [Hook(model, lambda module, args: seen.append(args[0]), pre=True)]):
        model(x)
    assert len(seen) == 1 and torch.equal(seen[0], x)


@pytest.mark.parametrize("name", ["attention56_cifar", "attention92_cifar"])
def test_attention_modules_is_one_list(name, tiny_model):
    """The function, the network's method and trace's re-export give the modules that
    named_modules lists, in its order."""
    from resattn.trace import attention_modules as from_trace

    model = tiny_model(name)
    expected = [(n, m) for n, m in model.named_modules() if isinstance(m, resattn.model.AttentionModule)]
    assert attention_modules(model) == model.attention_modules() == from_trace(model) == expected
    assert from_trace is attention_modules


def test_register_model_refuses_a_name_twice():
    from resattn.model import networks

    before = dict(networks._REGISTRY)
    with pytest.raises(ResattnError, match="already registered"):
        @networks.register_model(32)
        def attention56_cifar(**kwargs):  # noqa: F811 (the point: a second builder of that name)
            raise AssertionError("never built")
    assert networks._REGISTRY == before
    assert resattn.create_model("attention56_cifar", width=0.125).arch == "attention56_cifar"
