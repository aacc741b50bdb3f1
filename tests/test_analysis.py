"""resattn.analysis: reductions, agreement metrics, interventions, attributions,
faithfulness curves and dataset statistics, on tiny models and hand-made maps."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import resattn
from resattn.analysis import (
    agreement,
    faithfulness,
    grad_cam,
    image_sets,
    integrated_gradients,
    intervene,
    mask_map,
    occlusion,
    pointing_game,
    reduce_channels,
    replaced_mask,
    spearman,
    to_image_size,
    top_region,
    topk_iou,
)
from resattn.analysis import dataset as ds
from resattn.analysis.faithfulness import pixel_ranks
from resattn.analysis.interventions import cascade_steps, randomise_mask_branches, randomised_copy
from resattn.checkpoints import model_card, save_checkpoint
from resattn.data import ImageSet

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(attention="mixed", residual="arl", classes=4, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    model = resattn.create_model("attention56_cifar", attention=attention, residual=residual, width=0.125,
                                 num_classes=classes)
    # Non-trivial BatchNorm statistics, so masks and outputs are not degenerate.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def images(n=2, seed=1) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


# --------------------------------------------------------------------------- reduce

@pytest.mark.parametrize("mode", ["mean", "max", "channel", "topk", "pca"])
def test_reduce_modes_shapes(mode):
    batch = torch.rand(3, 6, 5, 7)
    assert reduce_channels(batch, mode).shape == (3, 5, 7)
    assert reduce_channels(batch[0], mode).shape == (5, 7)
    torch.testing.assert_close(reduce_channels(batch[1], mode), reduce_channels(batch, mode)[1])


def test_reduce_values():
    batch = torch.rand(2, 4, 3, 3)
    torch.testing.assert_close(reduce_channels(batch, "mean"), batch.mean(1))
    torch.testing.assert_close(reduce_channels(batch, "max"), batch.amax(1))
    torch.testing.assert_close(reduce_channels(batch, "channel", channel=2), batch[:, 2])
    strong = batch.clone()
    strong[0, 3] += 5  # image 0: channel 3 has the most energy
    strong[1, 1] -= 5  # image 1: channel 1 (negative values count by their squares)
    top = reduce_channels(strong, "topk", k=1)
    torch.testing.assert_close(top[0], strong[0, 3])
    torch.testing.assert_close(top[1], strong[1, 1])
    torch.testing.assert_close(reduce_channels(strong, "topk", k=99), strong.mean(1))  # k clipped to C
    with pytest.raises(resattn.ResattnError):
        reduce_channels(batch, "channel", channel=4)
    with pytest.raises(resattn.ResattnError):
        reduce_channels(batch, "median")


def test_pca_sign_follows_the_mean_map():
    g = torch.Generator().manual_seed(0)
    pattern = torch.rand(6, 6, generator=g)
    loadings = torch.tensor([1.0, 0.8, 1.2, 0.5])
    tensor = loadings[:, None, None] * pattern + 0.01 * torch.randn(4, 6, 6, generator=g)
    for sign in (1.0, -1.0):
        x = sign * tensor
        component = reduce_channels(x, "pca")
        mean_map = x.mean(0)
        corr = np.corrcoef(component.flatten().numpy(), mean_map.flatten().numpy())[0, 1]
        assert corr > 0.99, (sign, corr)
    # The first component of one dominant direction is that direction: the map is the
    # pattern, centred and scaled by the loadings' norm.
    expected = (pattern - pattern.mean()) * loadings.norm()
    torch.testing.assert_close(reduce_channels(tensor, "pca"), expected, atol=0.05, rtol=0)


def test_to_image_size_keeps_layout_and_values():
    assert to_image_size(torch.rand(4, 4), 16).shape == (16, 16)
    assert to_image_size(torch.rand(2, 4, 4), (8, 12)).shape == (2, 8, 12)
    assert to_image_size(torch.rand(2, 1, 4, 4), (8, 8)).shape == (2, 1, 8, 8)
    constant = torch.full((5, 5), 0.7)
    torch.testing.assert_close(to_image_size(constant, 20), torch.full((20, 20), 0.7))  # not rescaled
    torch.testing.assert_close(to_image_size(torch.full((40, 40), 2.0), 10), torch.full((10, 10), 2.0))
    assert mask_map(torch.rand(1, 8, 4, 4), (32, 32)).shape == (1, 32, 32)


def test_to_image_size_of_a_numpy_map_is_the_tensor_path_as_numpy():
    grid = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(0))
    resized = to_image_size(grid.numpy(), 24)
    assert isinstance(resized, np.ndarray) and resized.dtype == np.float32 and resized.shape == (2, 24, 24)
    np.testing.assert_array_equal(resized, to_image_size(grid, 24).numpy())
    # a non-contiguous view (a page's fancy-indexed slice) gives the same as its copy
    np.testing.assert_array_equal(to_image_size(grid.numpy()[:, ::-1], 12), to_image_size(grid.numpy()[:, ::-1].copy(), 12))


# --------------------------------------------------------------------------- agreement

def distinct_map(seed=0, shape=(10, 10)) -> torch.Tensor:
    return torch.randperm(shape[0] * shape[1], generator=torch.Generator().manual_seed(seed)).float().reshape(shape)


def test_agreement_identical_maps():
    m = distinct_map()
    result = agreement(m, m.clone())
    assert result.spearman == pytest.approx(1.0)
    assert result.iou == 1.0
    assert result.pointing is True
    # Agreement is about ranks: a monotone transform changes nothing.
    assert spearman(m, torch.exp(m / 10)) == pytest.approx(1.0)


def test_agreement_inverted_map():
    m = distinct_map()
    assert spearman(m, -m) == pytest.approx(-1.0)
    assert topk_iou(m, -m) == 0.0
    assert pointing_game(m, -m) is False


def test_topk_iou_and_pointing_on_hand_made_regions():
    a = torch.zeros(10, 10)
    a[:2] = 1.0 + torch.arange(20).reshape(2, 10) / 100  # top 20 %: rows 0-1
    b = torch.zeros(10, 10)
    b[1:3] = 1.0 + torch.arange(20).reshape(2, 10) / 100  # top 20 %: rows 1-2
    assert top_region(a).sum() == 20
    assert topk_iou(a, b) == pytest.approx(10 / 30)
    mask = torch.zeros(10, 10)
    mask[2, 5] = 1.0  # peak in row 2: inside b's region, outside a's
    assert pointing_game(mask, b) is True
    assert pointing_game(mask, a) is False


def test_ties_are_broken_at_random_with_a_fixed_seed():
    flat = torch.zeros(10, 10)
    flat[0, 0] = 1.0
    region = top_region(flat, 0.2)  # one clear pixel, then a tie at 0 broken at random
    assert region.sum() == 20 and region[0, 0]
    assert np.array_equal(region, top_region(flat, 0.2))  # the same seed, the same region
    assert not np.array_equal(region, top_region(flat, 0.2, seed=1))
    # Not by position: the tied pixels chosen are not the first ones in memory order.
    assert region.ravel()[1:20].sum() < 19
    # A constant map has no ranking: its pixels are ranked at random, never dropped.
    value = spearman(torch.ones(10, 10), distinct_map())
    assert math.isfinite(value) and abs(value) < 0.5
    with pytest.raises(resattn.ResattnError):
        agreement(torch.rand(4, 4), torch.rand(5, 5))


# --------------------------------------------------------------------------- interventions

def test_arl_zero_mask_gives_the_trunk_exactly():
    model = tiny_model(residual="arl")
    x = images()
    for name in [n for n, _ in model.attention_modules()]:
        result = intervene(model, x, name, "zero")
        record = result.after[name]
        assert torch.count_nonzero(record.mask) == 0
        assert torch.equal(record.output, record.trunk)
        assert not torch.equal(result.before[name].output, result.before[name].trunk)


def test_nal_zero_mask_zeroes_the_module():
    model = tiny_model(residual="nal")
    x = images()
    result = intervene(model, x, "stage2.1", "zero")
    assert torch.count_nonzero(result.after["stage2.1"].output) == 0
    assert torch.count_nonzero(result.before["stage2.1"].output) > 0


def test_interventions_change_only_later_modules():
    model = tiny_model()
    x = images()
    result = intervene(model, x, "stage2.1", "one")
    change = result.mask_change()
    assert change["stage1.1"] == 0.0
    assert change["stage2.1"] > 0 and change["stage3.1"] > 0
    assert torch.all(result.after["stage2.1"].mask == 1)
    probs, classes = result.top5("after")
    assert probs.shape == classes.shape == (2, 4)
    table = result.top5_table(0)
    assert {r["class"] for r in table} == set(range(4))
    assert sum(r["after"] for r in table) == pytest.approx(1.0, abs=1e-5)


def test_constant_spatial_mean_and_from_image():
    model = tiny_model()
    x = images()
    constant = intervene(model, x, "stage1.1", "constant", value=0.25).after["stage1.1"].mask
    assert torch.all(constant == 0.25)
    before = resattn.trace(model, x)
    spatial = intervene(model, x, "stage1.1", "spatial_mean", before=before).after["stage1.1"].mask
    torch.testing.assert_close(spatial, before["stage1.1"].mask.mean(dim=(2, 3), keepdim=True).expand_as(spatial))
    # Another image's mask, traced at a different size, is resized to this module's size.
    other = resattn.trace(model, torch.randn(1, 3, 2 * SIZE, 2 * SIZE))["stage2.1"].mask
    taken = intervene(model, x, "stage2.1", "from_image", mask=other[0]).after["stage2.1"].mask
    assert taken.shape == before["stage2.1"].mask.shape
    torch.testing.assert_close(taken[0], taken[1])
    same_size = resattn.trace(model, images(1, seed=5))["stage2.1"].mask
    torch.testing.assert_close(intervene(model, x, "stage2.1", "from_image", mask=same_size).after["stage2.1"].mask,
                               same_size.expand(2, -1, -1, -1))
    with pytest.raises(resattn.ResattnError):
        intervene(model, x, "stage2.1", "from_image", mask=before["stage1.1"].mask)  # wrong channel count
    with pytest.raises(resattn.ResattnError):
        intervene(model, x, "stage9.1", "zero")
    with pytest.raises(resattn.ResattnError):
        intervene(tiny_model(attention="none"), x, "stage1.1", "zero")


def test_randomise_leaves_the_callers_model_alone():
    model = tiny_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = images()
    first = intervene(model, x, "stage2.1", "randomise", seed=3)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all_hooks(model) == 0
    assert not torch.equal(first.after["stage2.1"].mask, first.before["stage2.1"].mask)
    torch.testing.assert_close(first.after["stage1.1"].mask, first.before["stage1.1"].mask)
    again = intervene(model, x, "stage2.1", "randomise", seed=3)
    assert torch.equal(first.after.logits, again.after.logits)  # the seed fixes the new weights
    clone = randomised_copy(model, "stage2.1", seed=3)
    changed = [k for k, v in clone.state_dict().items() if not torch.equal(v, state[k])]
    assert changed and all(k.startswith("stage2.1.soft_mask_branch.") for k in changed)
    # Only convolution weights change, each filter keeping its trained norm; every BatchNorm
    # parameter and running statistic is kept.
    assert all(k.endswith(".weight") and clone.state_dict()[k].ndim == 4 for k in changed)
    for k in changed:
        torch.testing.assert_close(clone.state_dict()[k].flatten(1).norm(dim=1), state[k].flatten(1).norm(dim=1))


def test_cascading_randomisation_goes_from_the_top_stage_down():
    model = tiny_model()
    steps = cascade_steps(model)
    assert steps == [("stage3", ["stage3.1"]), ("stage2", ["stage2.1", "stage3.1"]),
                     ("stage1", ["stage1.1", "stage2.1", "stage3.1"])]
    x = images()
    before = resattn.trace(model, x)
    for label, modules in steps:
        after = resattn.trace(randomise_mask_branches(model, modules, seed=0), x)
        for record in before.modules:
            same = torch.equal(after[record.name].mask, record.mask)
            assert same == (record.name not in modules), (label, record.name)
    # The same module gets the same random weights whatever is randomised with it.
    one = randomise_mask_branches(model, ["stage3.1"], seed=0).state_dict()
    all_ = randomise_mask_branches(model, ["stage1.1", "stage3.1"], seed=0).state_dict()
    assert all(torch.equal(one[k], all_[k]) for k in one if k.startswith("stage3.1."))


def test_hooks_are_removed_also_on_exceptions():
    model = tiny_model()
    x = images()
    intervene(model, x, "stage1.1", "zero")
    assert all_hooks(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with replaced_mask(model, "stage1.1", torch.zeros_like):
            assert all_hooks(model) == 1
            raise RuntimeError("boom")
    assert all_hooks(model) == 0

    def broken(mask):
        raise RuntimeError("replacement failed")

    with pytest.raises(RuntimeError, match="replacement failed"):
        with replaced_mask(model, "stage1.1", broken):
            resattn.trace(model, x)
    assert all_hooks(model) == 0
    # And the model runs normally again.
    torch.testing.assert_close(resattn.trace(model, x).logits, intervene(model, x, "stage1.1", "zero").before.logits)


# --------------------------------------------------------------------------- attribution

def test_integrated_gradients_is_complete_and_unnormalised():
    model = tiny_model()
    x = images(1)
    target = 2
    attr = integrated_gradients(model, x, target, n_steps=64)
    assert attr.map.shape == (SIZE, SIZE) and attr.target == target and attr.method == "ig"
    with torch.no_grad():
        gap = float(model(x)[0, target] - model(torch.zeros_like(x))[0, target])
    # Completeness: the attributions sum to the change of the target logit (not to 1).
    assert float(attr.map.sum()) == pytest.approx(gap, rel=0.05, abs=0.05)
    assert all_hooks(model) == 0


def test_occlusion_is_the_logit_drop():
    model = tiny_model()
    x = images(1)
    # One window covering the whole image: every pixel gets logit(x) - logit(mean colour).
    attr = occlusion(model, x, 1, window=SIZE, stride=SIZE)
    with torch.no_grad():
        drop = float(model(x)[0, 1] - model(torch.zeros_like(x))[0, 1])
    torch.testing.assert_close(attr.map, torch.full((SIZE, SIZE), drop), atol=1e-4, rtol=1e-4)
    default = occlusion(model, x)
    assert default.map.shape == (SIZE, SIZE) and default.params == {"window": 4, "stride": 4}
    with torch.no_grad():
        assert default.target == int(model(x).argmax())


def test_grad_cam_layers_and_inference_mode():
    model = tiny_model()
    x = images(1)
    cam = grad_cam(model, x, 0)
    assert cam.map.shape == (SIZE, SIZE) and float(cam.map.min()) >= 0
    assert cam.params["layer"] == "stage3.1" and cam.params["layer_size"] == (8, 8)
    with torch.inference_mode():  # e.g. called from inside a cached trace
        late = grad_cam(model, x, 0, layer="final_units", relu=False)
    assert late.map.shape == (SIZE, SIZE) and late.params["layer_size"] == (8, 8)
    assert all_hooks(model) == 0
    with pytest.raises(resattn.ResattnError):
        grad_cam(model, x, 0, layer="no.such.layer")
    with pytest.raises(resattn.ResattnError):
        grad_cam(model, images(2), 0)


# --------------------------------------------------------------------------- faithfulness

class LeftHalfModel(nn.Module):
    """Logits (s, -s) with s = 4 * mean of channel 0 over the left half: only the left half
    of the image matters, so a map that ranks it first is the faithful one."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(4.0))

    def forward(self, x):
        s = self.scale * x[:, 0, :, : x.shape[-1] // 2].mean(dim=(1, 2))
        return torch.stack([s, -s], dim=1)


def test_faithfulness_batches_and_end_points():
    model = tiny_model()
    x = images(1)
    calls = []
    handle = model.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    try:
        curves = faithfulness(model, x, {"map": torch.rand(8, 8)}, 1, steps=32, batch_size=16,
                              include_random=False)
    finally:
        handle.remove()
    # 31 interior steps per curve, 2 curves, plus the image and the baseline: 64 images.
    assert calls == [16, 16, 16, 16]
    curve = curves["map"]
    assert len(curve.fractions) == 33 and curve.fractions[0] == 0 and curve.fractions[-1] == 1
    from resattn.analysis.faithfulness import blurred
    with torch.no_grad():
        p_image = float(model(x).softmax(1)[0, 1])
        p_base = float(model(blurred(x)).softmax(1)[0, 1])
    assert curve.deletion[0] == pytest.approx(p_image, abs=1e-5)
    assert curve.insertion[-1] == pytest.approx(p_image, abs=1e-5)
    assert curve.deletion[-1] == pytest.approx(p_base, abs=1e-5)
    assert curve.insertion[0] == pytest.approx(p_base, abs=1e-5)
    assert curve.deletion_auc == pytest.approx(np.trapezoid(curve.deletion, curve.fractions))
    # With the random order: 2 + 2 maps x 2 curves x 31 = 126 images -> 8 batches of 16.
    calls.clear()
    handle = model.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    try:
        faithfulness(model, x, {"map": torch.rand(8, 8)}, 1, steps=32, batch_size=16)
    finally:
        handle.remove()
    assert len(calls) == 8 and sum(calls) == 126


def test_faithful_map_beats_random_on_a_known_model():
    model = LeftHalfModel()
    x = torch.ones(1, 3, 16, 16)
    left = torch.zeros(16, 16)
    left[:, :8] = 1 + torch.rand(16, 8)
    right = 1 - left
    curves = faithfulness(model, x, {"left": left, "right": right}, 0, steps=16, batch_size=20, baseline="zeros")
    assert curves["left"].deletion_auc < curves["random"].deletion_auc < curves["right"].deletion_auc
    assert curves["left"].insertion_auc > curves["random"].insertion_auc > curves["right"].insertion_auc
    # Deleting the left half first reaches the baseline's probability (0.5) half way.
    assert curves["left"].deletion[8] == pytest.approx(0.5)
    assert curves["right"].deletion[8] == pytest.approx(curves["right"].deletion[0])
    again = faithfulness(model, x, {}, 0, steps=16, baseline="zeros")
    np.testing.assert_array_equal(again["random"].deletion, curves["random"].deletion)  # seeded


def test_pixel_ranks_order_and_ties():
    ranks = pixel_ranks(torch.tensor([[0.1, 0.9], [0.5, 0.5]]), (2, 2))
    assert ranks[0].tolist() == [3, 0] and sorted(ranks[1].tolist()) == [1, 2]
    assert torch.equal(ranks, pixel_ranks(torch.tensor([[0.1, 0.9], [0.5, 0.5]]), (2, 2)))  # seeded
    # Ties are broken at random, not by position: a map that is 0 over its lower half does
    # not delete that half top to bottom.
    half = torch.zeros(16, 16)
    half[:8] = torch.arange(128, dtype=torch.float32).reshape(8, 16) + 1
    tied = pixel_ranks(half, (16, 16))[8:]
    assert tied[:4].float().mean() > 128 + 40 and tied[4:].float().mean() < 256 - 40
    with pytest.raises(resattn.ResattnError):
        pixel_ranks(torch.tensor([[float("nan"), 1.0]]), (1, 2))


# --------------------------------------------------------------------------- dataset

def test_shard_indices_partition_the_set():
    for total in (0, 1, 7, 10):
        for world in (1, 2, 3, 4):
            shards = [ds.shard_indices(total, r, world) for r in range(world)]
            assert sorted(np.concatenate(shards).tolist()) == list(range(total))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert ds.shard_indices(7, 1, 3).tolist() == [1, 4]
    with pytest.raises(ValueError):
        ds.shard_indices(5, 2, 2)


def test_concentration_extremes():
    flat = torch.ones(1, 3, 4, 4)
    peak = torch.zeros(1, 3, 4, 4)
    peak[0, :, 1, 2] = 0.9
    values = ds.concentration(torch.cat([flat, peak, 0.5 * peak + 0.1]))
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert values[1] == pytest.approx(1.0, abs=1e-6)
    assert 0 < values[2] < 1


def synthetic_images(n=6) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet((torch.rand(n, SIZE, SIZE, 3, generator=g) * 255).to(torch.uint8),
                    torch.tensor([0, 1, 2, 3, 0, -1][:n]), ["a", "b", "c", "d"], [f"img{i}" for i in range(n)])


def test_mask_statistics_and_cache(tmp_path, monkeypatch):
    model = tiny_model()
    card = model_card(model, classes=["a", "b", "c", "d"], input_size=SIZE)
    data = synthetic_images()
    fractions = []
    stats = ds.mask_statistics(model, card, data, batch_size=4, map_size=8, cache_folder=tmp_path,
                               progress=fractions.append, show_progress=False)
    assert fractions == [0.5, 1.0]
    assert stats.modules == ["stage1.1", "stage2.1", "stage3.1"]
    assert stats.maps.shape == (6, 3, 8, 8) and stats.concentration.shape == (6, 3)
    assert np.all((stats.concentration >= 0) & (stats.concentration <= 1))
    tr = resattn.trace(model, image_sets.normalise_batch(data.images, SIZE))
    assert stats.predictions.tolist() == tr.logits.argmax(1).tolist()
    expected = to_image_size(tr["stage3.1"].mask.mean(1), (8, 8)).numpy()
    np.testing.assert_allclose(stats.maps[:, 2], expected, atol=1e-5)
    assert stats.correct.sum() + stats.wrong.sum() == 5  # image 5 has no label
    means, counts = stats.mean_maps()
    assert counts.tolist() == [2, 1, 1, 1]
    np.testing.assert_allclose(means[0], stats.maps[[0, 4]].mean(0), atol=1e-6)
    most = stats.ranked("stage2.1", 3)
    assert np.all(np.diff(stats.concentration[most, 1]) <= 0)
    assert set(stats.ranked("stage2.1", 10, which="wrong")) == set(np.flatnonzero(stats.wrong))
    # A second call reads the cache without tracing anything.
    files = list(tmp_path.glob("mask-stats-*.npz"))
    assert len(files) == 1
    monkeypatch.setattr(ds, "trace", lambda *a, **k: pytest.fail("traced although cached"))
    cached = ds.mask_statistics(model, card, data, batch_size=4, map_size=8, cache_folder=tmp_path,
                                show_progress=False)
    np.testing.assert_array_equal(cached.maps, stats.maps)
    assert cached.names == stats.names and cached.classes == stats.classes
    # Other settings or other weights are other keys.
    with pytest.raises(pytest.fail.Exception):
        ds.mask_statistics(model, card, data, map_size=4, cache_folder=tmp_path, show_progress=False)
    with pytest.raises(resattn.ResattnError):
        ds.mask_statistics(tiny_model(attention="none"), card, data, cache=False, show_progress=False)


def write_tree(root: Path, classes=("a", "b"), per_class=3) -> None:
    g = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray((g.random((20, 24, 3)) * 255).astype(np.uint8)).save(root / c / f"{c}{i}.png")


def test_load_images_folders(tmp_path):
    write_tree(tmp_path / "tree", ("b", "zzz"))
    tree = image_sets.load_images(tmp_path / "tree", classes=["a", "b"], size=16)
    assert tree.images.shape == (6, 16, 16, 3)
    assert tree.labels.tolist() == [1, 1, 1, -1, -1, -1]  # "zzz" is not a class of the checkpoint
    assert tree.names[0] == "b/b0.png"
    limited = image_sets.load_images(tmp_path / "tree", size=16, limit=2)
    assert limited.names == ["b/b0.png", "zzz/zzz2.png"]  # spread over the set
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in (tmp_path / "tree" / "b").iterdir():
        f.rename(flat / f.name)
    loose = image_sets.load_images(flat, classes=["a"], size=16)
    assert loose.labels.tolist() == [-1, -1, -1] and loose.names == ["b0.png", "b1.png", "b2.png"]
    with pytest.raises(resattn.ResattnError):
        image_sets.load_images(tmp_path / "missing")
    (flat / "bad.png").write_bytes(b"not an image")
    with pytest.raises(resattn.ResattnError, match="bad.png"):
        image_sets.load_images(flat)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    model = tiny_model(classes=2)
    card = model_card(model, classes=["a", "b"], input_size=SIZE)
    checkpoint = save_checkpoint(tmp_path / "tiny", model, card)
    write_tree(tmp_path / "images", ("a", "b"), per_class=3)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                           "resattn.analysis.dataset", "--checkpoint", str(checkpoint), "--images",
                           str(tmp_path / "images"), "--batch-size", "2", "--cache", str(tmp_path / "cache"),
                           "--save", str(tmp_path / "two.npz")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = ds.MaskStatistics.load(tmp_path / "two.npz")
    loaded, _ = resattn.load_checkpoint(checkpoint)
    one = ds.mask_statistics(loaded, card, image_sets.load_images(tmp_path / "images", classes=["a", "b"], size=SIZE),
                             cache=False, show_progress=False)
    assert two.names == one.names
    np.testing.assert_array_equal(two.predictions, one.predictions)
    np.testing.assert_allclose(two.maps, one.maps, atol=1e-5)
    np.testing.assert_allclose(two.concentration, one.concentration, atol=1e-5)
    assert len(list((tmp_path / "cache").glob("mask-stats-*.npz"))) == 1  # rank 0 wrote the cache


# --------------------------------------------------------------------------- trained checkpoint

TRAINED = ROOT / "checkpoints" / "attention56_mixed_arl.safetensors"


@pytest.mark.slow
def test_grad_cam_deletes_faster_than_random_on_a_trained_checkpoint():
    from resattn.data import pack_available

    if not TRAINED.is_file():
        pytest.skip(f"needs the trained checkpoint {TRAINED.relative_to(ROOT)}, which is not there")
    if not pack_available():
        pytest.skip("needs the Imagenette pack (set RESATTN_DATA), which was not found")
    model, card = resattn.load_checkpoint(TRAINED)
    size = int(card["input_size"])
    val = image_sets.load_images("pack", classes=card["classes"], size=size, limit=16)  # fixed: spread over the split
    gradcam, random = [], []
    for i in range(len(val)):
        x = image_sets.normalise_batch(val.images[i:i + 1], size, card["mean"], card["std"])
        with torch.inference_mode():
            target = int(model(x).argmax())
        curves = faithfulness(model, x, {"gradcam": grad_cam(model, x, target).map}, target, steps=16,
                              batch_size=34)
        gradcam.append(curves["gradcam"].deletion_auc)
        random.append(curves["random"].deletion_auc)
    assert np.mean(gradcam) < np.mean(random), (np.mean(gradcam), np.mean(random))
