"""The pieces of the dataset study: the three reductions and the variance they keep, the
class weights against captum's Grad-CAM, the imputed fill, the smooth random order, the
stratified sample, the causal mask replacements."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import resattn
from resattn.analysis import study
from resattn.analysis.attribution import mask_gradients, report_attributions
from resattn.analysis.faithfulness import faithfulness, impute_fill, smooth_random_map
from resattn.analysis.image_sets import stratified_indices
from resattn.analysis.reduce import (
    border_fraction,
    channel_weights,
    peak_on_border,
    variance_kept,
    weighted_map,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def pattern_mask() -> torch.Tensor:
    """4 channels: 2 x pattern p, 1 x -p, 1 constant 30 (no spatial variance, most energy)."""
    p = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    p = p - p.mean()
    return torch.stack([p, p, -p, torch.full((4, 4), 30.0)])


def test_variance_kept_is_the_share_along_the_reduction():
    mask = pattern_mask()
    same = torch.stack([mask[0]] * 4)
    assert float(variance_kept(same, channel_weights(same, "mean"))) == pytest.approx(1.0)
    # The mean of p, p, -p, constant keeps p / 4: a quarter of the variance along (1,1,1,1)/2.
    kept = float(variance_kept(mask, channel_weights(mask, "mean")))
    total = 3 * float(mask[0].pow(2).sum())
    along = float((mask[:3].sum(0) / 2).pow(2).sum())
    assert kept == pytest.approx(along / total)
    # p and -p cancel exactly in the mean of channels 1 and 2: nothing kept.
    cancel = mask[1:3]
    assert float(variance_kept(cancel, channel_weights(cancel, "mean"))) == pytest.approx(0.0, abs=1e-12)
    # The best direction keeps everything: weights (1, 1, -1, 0) follow the pattern.
    assert float(variance_kept(mask, torch.tensor([1.0, 1.0, -1.0, 0.0]))) == pytest.approx(1.0)
    assert torch.isnan(variance_kept(torch.ones(2, 3, 3), torch.ones(2)))


def test_the_three_reductions():
    mask = pattern_mask().abs()
    gradient = torch.zeros(4, 4, 4)
    gradient[1] = 2.0
    weighted = weighted_map(mask, channel_weights(mask, "class_weighted", gradient=gradient))
    torch.testing.assert_close(weighted, 2.0 * mask[1])
    top = channel_weights(mask, "top_channels", k=1)
    assert top.tolist() == [0.0, 0.0, 0.0, 1.0]  # the constant 30 has the most energy
    torch.testing.assert_close(weighted_map(mask, channel_weights(mask, "mean")), mask.mean(0))
    with pytest.raises(resattn.ResattnError):
        channel_weights(mask, "class_weighted")
    with pytest.raises(resattn.ResattnError):
        channel_weights(mask, "median")


def test_peak_on_the_border():
    m = torch.zeros(8, 8)
    m[0, 3] = 1
    assert bool(peak_on_border(m))
    m[0, 3], m[4, 4] = 0, 1
    assert not bool(peak_on_border(m))
    assert not bool(peak_on_border(torch.ones(8, 8)))  # a flat map has interior peaks
    assert border_fraction((8, 8)) == pytest.approx(28 / 64)


def test_class_weights_are_grad_cam_weights(tiny_model, images):
    """The class-weighted reduction's weights, applied to H instead of M, give captum's
    Grad-CAM (without ReLU) at the layer that outputs H."""
    from captum.attr import LayerGradCam

    model = tiny_model()
    x = images(1, seed=4)
    target = 2
    grads = mask_gradients(model, x, target)
    assert set(grads) == {"stage1.1", "stage2.1", "stage3.1"}
    name = "stage2.1"
    module = dict(model.attention_modules())[name]
    h = resattn.trace(model, x)[name].output[0]
    cam = LayerGradCam(model, module.attention_residual).attribute(x, target=target, relu_attributions=False)[0, 0]
    mask, gradient = grads[name]
    weights = channel_weights(mask, "class_weighted", gradient=gradient)
    # captum sums the weighted channels; ours is the same sum.
    torch.testing.assert_close(weighted_map(h, weights), cam.detach(), rtol=1e-4, atol=1e-6)


def test_report_attributions(tiny_model, images):
    model = tiny_model()
    x = images(1, seed=2)
    maps = report_attributions(model, x, 1, ["stage1.1", "stage3.1"], ig_steps=4)
    assert list(maps) == ["abs_ig", "ig", "grad_cam", "grad_cam_module:stage1.1", "grad_cam_module:stage3.1",
                          "occlusion"]
    assert all(m.shape == (32, 32) for m in maps.values())
    torch.testing.assert_close(maps["abs_ig"], maps["ig"].abs())
    torch.testing.assert_close(maps["grad_cam"], maps["grad_cam_module:stage3.1"])  # the last stage


def test_the_imputed_fill_comes_from_the_kept_pixels_only():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 16, 16, generator=g)
    known = torch.rand(2, 1, 16, 16, generator=g) > 0.6
    known[1, :, 4:12, 4:12] = False  # a large hole
    filled = impute_fill(image, known)
    assert torch.equal(filled[known.expand_as(filled)], image.expand(2, -1, -1, -1)[known.expand_as(filled)])
    # Every filled value lies within the kept values' range (a convex combination of them).
    for b in range(2):
        kept = image[0][:, known[b, 0]]
        holes = filled[b][:, ~known[b, 0]]
        assert torch.all(holes >= kept.min(dim=1, keepdim=True).values - 1e-6)
        assert torch.all(holes <= kept.max(dim=1, keepdim=True).values + 1e-6)
    # What was removed cannot leak into the fill.
    other = image.clone()
    other[:, :, ~known[1, 0]] = 100.0
    torch.testing.assert_close(impute_fill(other, known[1:]), filled[1:])
    # A constant image is filled with its constant; nothing kept gives 0 plus the noise.
    torch.testing.assert_close(impute_fill(torch.full((1, 3, 8, 8), 0.7), known[:, :, :8, :8]),
                               torch.full((2, 3, 8, 8), 0.7))
    noise = torch.full((1, 3, 8, 8), 0.01)
    torch.testing.assert_close(impute_fill(image[:, :, :8, :8], torch.zeros(1, 1, 8, 8, dtype=torch.bool), noise),
                               noise)


def test_faithfulness_with_the_imputed_fill_and_a_smooth_random_order(tiny_model, images):
    model = tiny_model()
    x = images(1, seed=3)
    like = torch.rand(8, 8, generator=torch.Generator().manual_seed(1))
    smooth = smooth_random_map(like, seed=2)
    assert smooth.shape == (8, 8) and torch.equal(smooth, smooth_random_map(like, seed=2))
    curves = faithfulness(model, x, {"smooth": smooth}, 0, steps=4, baseline="impute", include_random=True)
    again = faithfulness(model, x, {"smooth": smooth}, 0, steps=4, baseline="impute", include_random=True)
    for name in ("smooth", "random"):
        assert curves[name].deletion[0] == curves[name].insertion[-1]  # the image itself
        np.testing.assert_array_equal(curves[name].deletion, again[name].deletion)  # seeded noise
    blur = faithfulness(model, x, {"smooth": smooth}, 0, steps=4, baseline="blur", include_random=False)
    assert not np.allclose(blur["smooth"].deletion, curves["smooth"].deletion)


def test_stratified_sample_is_balanced_and_seeded():
    labels = np.repeat(np.arange(10), [40, 35, 50, 45, 41, 39, 60, 44, 38, 42])
    chosen = stratified_indices(labels, 100, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [10] * 10
    assert np.array_equal(chosen, stratified_indices(labels, 100, seed=0))
    assert not np.array_equal(chosen, stratified_indices(labels, 100, seed=1))
    assert np.all(np.diff(chosen) > 0)
    small = np.repeat([0, 1], [3, 50])
    assert np.bincount(small[stratified_indices(small, 20)]).tolist() == [3, 17]  # a short class gives all
    assert len(stratified_indices(labels, None)) == len(labels)


def test_causal_effects_replace_one_mask_at_a_time(tiny_model, images):
    model = tiny_model()
    x = images(3, seed=8)
    sums = study.mask_sums(model, x)
    means = study.mean_masks(sums, 3)
    traced = resattn.trace(model, x)
    for name, mean in means.items():
        torch.testing.assert_close(mean, traced[name].mask.mean(dim=0), atol=1e-5, rtol=0)  # batch of 3 vs 1 by 1
    # Sums from two shards add up to the same total, exactly.
    split = study.mask_sums(model, x[:1]), study.mask_sums(model, x[1:])
    assert all(torch.equal(split[0][k] + split[1][k], sums[k]) for k in sums)
    target = int(traced.logits[0].argmax())
    effects = study.causal_effects(model, x[:1], x[1:2], target, means)
    assert set(effects) == {(m, r) for m in means for r in study.REPLACEMENTS}
    # Replacing by the image's own mask changes nothing; the replacements do change the logit.
    own = study.causal_effects(model, x[:1], x[:1], target, means)
    for m in means:
        assert own[(m, "other_image")] == (0.0, 0.0, 0.0)
        assert effects[(m, "one")][0] != 0.0


def test_the_first_principal_component_bounds_what_a_map_keeps():
    from resattn.analysis.reduce import best_variance_kept

    mask = pattern_mask()
    assert float(best_variance_kept(mask)) == pytest.approx(1.0)  # one pattern (up to sign) in every channel
    g = torch.Generator().manual_seed(0)
    noisy = torch.rand(2, 6, 5, 5, generator=g)
    best = best_variance_kept(noisy)
    for reduction in ("mean", "top_channels"):
        assert torch.all(variance_kept(noisy, channel_weights(noisy, reduction, k=2)) <= best + 1e-6)


def test_every_order_of_a_report_has_a_name_in_words():
    modules = ["stage1.1", "stage3.1"]
    labels = {order: study.order_label(order) for order in study.order_names(modules, modules)}
    assert labels["mask:stage3.1:class_weighted"] == "the mask of stage3.1 (class-weighted channel sum)"
    assert labels["random_smooth:stage1.1"] == "random smooth order (like stage1.1's mask)"
    assert labels["random_pixel"] == "random order (pixel noise)"
    assert labels["grad_cam_module:stage1.1"] == "Grad-CAM at stage1.1"
    assert labels["abs_ig"] == "|IG|"
    assert len(set(labels.values())) == len(labels)  # no two orders read alike
    assert not any(":" in label or "_" in label for label in labels.values())  # no CSV ids left
    assert study.order_label("something_new") == "something_new"  # unknown: shown as it is
