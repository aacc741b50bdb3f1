"""resattn.viz (pure figure builders and their matplotlib export) and resattn.stats (the
numbers the charts show), on small hand-made arrays and a tiny traced model."""
from __future__ import annotations

import functools
import io

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from PIL import Image

import resattn
from resattn import stats, viz
from resattn.viz.colour import type_size
from resattn.viz.layout import CHAR_EM, PAGE_PX

RNG = np.random.default_rng(0)


def heatmaps(fig: go.Figure) -> list:
    return [t for t in fig.data if t.type == "heatmap"]


# ----------------------------------------------------------------------------- helpers

def test_value_range_covers_all_arrays_and_ignores_non_finite():
    assert viz.value_range(np.array([1.0, np.nan]), np.array([[-2.0, np.inf]])) == (-2.0, 1.0)
    assert viz.value_range(np.array([-1.0, 3.0]), symmetric=True) == (-3.0, 3.0)
    lo, hi = viz.value_range(np.full((2, 2), 0.5))
    assert lo < 0.5 < hi and hi - lo < 0.02  # a constant map keeps its value in the middle
    assert viz.value_range() == (0.0, 1.0)


def test_blend_is_the_image_at_opacity_0_and_the_colour_map_at_1():
    image = RNG.integers(0, 255, (4, 5, 3), dtype=np.uint8)
    m = np.linspace(0, 1, 20).reshape(4, 5)
    np.testing.assert_array_equal(viz.blend(image, m, zmin=0, zmax=1, opacity=0.0), image)
    top = viz.blend(image, m, zmin=0, zmax=1, opacity=1.0)
    import matplotlib

    expected = np.rint(matplotlib.colormaps["viridis"](m)[..., :3] * 255)
    assert np.abs(top.astype(int) - expected).max() <= 1


def test_mosaic_places_each_map_in_its_tile():
    maps = RNG.normal(size=(5, 3, 4)).astype(np.float32)
    tiled, index = viz.mosaic(maps, cols=2, gap=1, row_gap=2)
    for i in range(5):
        rows, cols = np.nonzero(index == i)
        np.testing.assert_array_equal(tiled[rows.min():rows.max() + 1, cols.min():cols.max() + 1], maps[i])
    assert np.isnan(tiled[index == -1]).all()


# ----------------------------------------------------------------------------- builders

def test_panels_figure_has_one_heatmap_and_colour_bar_per_panel_with_the_given_ranges():
    panels = [viz.Panel(f"p{i}", RNG.random((6, 6)), -i, i + 1, colorbar_title=f"c{i}", value_name=f"v{i}")
              for i in range(4)]
    fig = viz.panels_figure(panels)
    maps = heatmaps(fig)
    assert len(maps) == 4
    for i, trace in enumerate(maps):
        assert (trace.zmin, trace.zmax) == (-i, i + 1)
        assert trace.colorbar is not None and trace.showscale is not False
        assert f"v{i} = %{{z" in trace.hovertemplate  # raw values on hover
        np.testing.assert_allclose(np.asarray(trace.z), panels[i].z, rtol=1e-6)
    assert [a.text for a in fig.layout.annotations] == ["p0", "p1", "p2", "p3"]


def test_long_panel_titles_wrap_within_their_cell_and_the_top_margin_makes_room():
    image = RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    short = viz.panels_figure([viz.map_panel("M", RNG.random((6, 6)))] * 6, image=image)
    titles = ["mask M of stage3.3", "|Integrated Gradients|", "Integrated Gradients (signed)", "Grad-CAM",
              "Occlusion", "M"]
    fig = viz.panels_figure([viz.map_panel(t, RNG.random((6, 6))) for t in titles], image=image)
    texts = [a.text for a in fig.layout.annotations]
    assert texts[0] == "image" and texts[4:] == ["Grad-CAM", "Occlusion", "M"]
    assert texts[3] == "Integrated<br>Gradients<br>(signed)"
    assert [t.replace("<br>", " ") for t in texts[1:]] == titles  # wrapped, never cut
    # seven cells of a ~900 px page at the app's type size: no line wider than its cell
    width_px = PAGE_PX * (1 - 0.025 * 6) / 7
    assert all(len(line) * CHAR_EM * type_size(viz.FONT_SIZE) <= width_px
               for t in texts for line in t.split("<br>") if " " in t)
    assert fig.layout.margin.t > short.layout.margin.t  # two more lines need room above the maps
    assert [a.text for a in short.layout.annotations][1:] == ["M"] * 6


def test_overlay_puts_the_map_over_the_image_with_the_opacity():
    image = RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    fig = viz.overlay_figure(image, RNG.random((8, 8)), opacity=0.3, zmin=0, zmax=1)
    assert [t.type for t in fig.data] == ["image", "heatmap"]
    assert fig.data[1].opacity == pytest.approx(0.3)
    assert fig.data[0].source.startswith("data:image/png;base64,")
    with pytest.raises(ValueError, match="image's size"):
        viz.overlay_figure(image, RNG.random((4, 4)), opacity=0.3, zmin=0, zmax=1)


def test_channel_grid_names_each_channel_on_hover():
    maps = RNG.random((3, 4, 4))
    fig = viz.channel_grid_figure(maps, ["ch 7", "ch 2", "ch 5"], zmin=0, zmax=1, cols=2)
    (trace,) = heatmaps(fig)
    custom = np.asarray(trace.customdata)
    z = np.asarray(trace.z, dtype=float)
    assert set(custom[np.isfinite(z)].ravel()) == {"ch 7", "ch 2", "ch 5"}
    assert [a.text for a in fig.layout.annotations] == ["ch 7", "ch 2", "ch 5"]


def test_histogram_bars_are_the_fractions():
    counts, edges = stats.value_histogram(np.array([0.1, 0.1, 0.6, 0.9]), bins=2, value_range=(0, 1))
    np.testing.assert_allclose(counts, [0.5, 0.5])
    fig = viz.histogram_figure(counts, edges)
    np.testing.assert_allclose(np.asarray(fig.data[0].y), [0.5, 0.5])
    np.testing.assert_allclose(np.asarray(fig.data[0].x), [0.25, 0.75])


def test_predictions_are_the_top_k_with_the_most_likely_on_top():
    fig = viz.predictions_figure(["a", "b", "c", "d"], [0.1, 0.5, 0.3, 0.05], k=3)
    bar = fig.data[0]
    assert list(bar.y) == ["a", "c", "b"]  # plotly draws the last bar at the top
    assert list(bar.text) == ["10.0%", "30.0%", "50.0%"]


def test_network_diagram_has_a_clickable_block_and_thumbnail_per_module():
    model = resattn.create_model("attention56", width=0.125, num_classes=3)
    outline = stats.network_outline(model)
    thumbs = {m["name"]: RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8)
              for s in outline["stages"] for m in s["modules"]}
    fig = viz.network_figure(outline, thumbs, selected="stage2.1")
    assert list(fig.data[0].customdata) == ["stage1.1", "stage2.1", "stage3.1"]
    assert len(fig.layout.images) == 3
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    # stem + 3 transition units + 3 modules + 3 final units + classifier
    assert len(rects) == 1 + 3 + 3 + 3 + 1
    assert sum(1 for s in rects if s.line.color == "#d9480f") == 1  # the selected module


def test_compare_grid_shares_colour_axes_and_marks_missing_masks():
    image = RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    modules = ["stage1.1", "stage2.1"]
    columns = [
        viz.CompareColumn("mixed · ARL", "cat 90%", {m: RNG.random((8, 8)) for m in modules}, "coloraxis"),
        viz.CompareColumn("channel · ARL", "dog 50%", {m: RNG.random((8, 8)) * 2 - 1 for m in modules},
                              "coloraxis2"),
        viz.CompareColumn("no attention", "cat 40%", {m: None for m in modules}),
        viz.CompareColumn("shallow", "cat 40%", {"stage1.1": RNG.random((8, 8))}, "coloraxis"),
    ]
    axes = {"coloraxis": viz.ColorAxis(0, 1, "M"), "coloraxis2": viz.ColorAxis(-1, 1, "M ch", zmid=0)}
    fig = viz.compare_figure(columns, modules, axes, image=image)
    maps = heatmaps(fig)
    assert len(maps) == 5
    assert [t.coloraxis for t in maps] == ["coloraxis"] * 2 + ["coloraxis2"] * 2 + ["coloraxis"]  # by column
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0, 1)
    assert fig.layout.coloraxis2.cmid == 0
    texts = [a.text for a in fig.layout.annotations]
    assert texts.count("no mask") == 2
    assert texts.count("no such<br>module") == 1
    assert "<b>channel · ARL</b><br>dog 50%" in texts
    sizes = {a.font.size for a in fig.layout.annotations}
    assert min(sizes) >= viz.PROJECTOR_FONT_SIZE  # readable on a projector


def test_compare_headers_wrap_long_class_names_within_their_column():
    modules = ["stage1.1"]
    names = ["mixed · ARL", "channel · ARL", "spatial · ARL", "mixed · NAL", "no attention", "A92 · ARL"]
    short = [viz.CompareColumn(n, "cat<br>88%", {"stage1.1": RNG.random((8, 8))}) for n in names]
    long = [viz.CompareColumn(n, "English springer<br>88%", {"stage1.1": RNG.random((8, 8))}) for n in names]
    axes = {"coloraxis": viz.ColorAxis(0, 1, "M")}
    narrow, wide = viz.compare_figure(long, modules, axes), viz.compare_figure(short, modules, axes)
    headers = [a.text for a in narrow.layout.annotations if a.text.startswith("<b>")]
    assert len(headers) == 6 and all(h.endswith("English<br>springer<br>88%") for h in headers)  # at the space
    assert "<b>channel · ARL</b><br>" in headers[1]  # the name stays whole
    assert [a.text for a in wide.layout.annotations][0] == "<b>mixed · ARL</b><br>cat<br>88%"  # short: as before
    assert narrow.layout.height > wide.layout.height  # the fourth header line gets room above the maps


def test_compare_grid_per_row_scales_put_a_colour_bar_beside_each_row():
    modules = ["a", "b"]
    columns = [viz.CompareColumn("m", "x", {m: RNG.random((4, 4)) for m in modules},
                                     {"a": "coloraxis", "b": "coloraxis2"})]
    axes = {"coloraxis": viz.ColorAxis(-1, 1, "a", row=0), "coloraxis2": viz.ColorAxis(-5, 5, "b", row=1)}
    fig = viz.compare_figure(columns, modules, axes)
    assert fig.layout.coloraxis.colorbar.y > fig.layout.coloraxis2.colorbar.y


def test_per_row_bars_of_one_row_stand_side_by_side_right_of_the_grid():
    modules = ["a", "b"]
    columns = [viz.CompareColumn("m", "x", {m: RNG.random((4, 4)) for m in modules}, {"a": "coloraxis", "b": "coloraxis3"}),
               viz.CompareColumn("c", "y", {m: RNG.random((4, 4)) for m in modules}, {"a": "coloraxis2", "b": "coloraxis4"})]
    axes = {"coloraxis": viz.ColorAxis(0, 1, "M", row=0), "coloraxis2": viz.ColorAxis(-1, 1, "Mc", row=0, slot=1),
            "coloraxis3": viz.ColorAxis(0, 1, "M", row=1), "coloraxis4": viz.ColorAxis(-1, 1, "Mc", row=1, slot=1)}
    fig = viz.compare_figure(columns, modules, axes)
    bars = {name: fig.layout[name].colorbar for name in axes}
    assert bars["coloraxis"].x < bars["coloraxis2"].x and bars["coloraxis"].x == bars["coloraxis3"].x
    assert bars["coloraxis"].y == bars["coloraxis2"].y > bars["coloraxis3"].y == bars["coloraxis4"].y
    rightmost_cell = max(fig.layout[f"xaxis{i}" if i > 1 else "xaxis"].domain[1] for i in range(1, 5))
    assert bars["coloraxis"].x > rightmost_cell and bars["coloraxis2"].x < 1


def test_compare_axes_keep_sigmoid_and_channel_masks_apart_and_span_their_maps():
    sig = {m: RNG.uniform(0.2, 0.8, (4, 4)) for m in ("a", "b")}
    chan = {m: RNG.uniform(-0.5, 0.9, (4, 4)) for m in ("a", "b")}
    maps = {"mixed": sig, "channel": chan, "none": {"a": None, "b": None}}
    attention = {"mixed": "mixed", "channel": "channel", "none": "none"}
    axes, of = viz.compare_axes(maps, ["a", "b"], show="mask", attention=attention, mask_scale="row")
    assert len(axes) == 4 and of["none"] == {"a": "coloraxis", "b": "coloraxis"}
    for module in ("a", "b"):
        mixed, channel = axes[of["mixed"][module]], axes[of["channel"][module]]
        assert (mixed.zmin, mixed.zmax) == viz.value_range(sig[module]) and mixed.colorscale == viz.MASK_SCALE
        assert (channel.zmin, channel.zmax) == viz.value_range(chan[module]) and channel.zmid == 0.0
        assert channel.colorscale == viz.FEATURE_SCALE and mixed.row == channel.row and channel.slot == 1
    axes, of = viz.compare_axes(maps, ["a", "b"], show="mask", attention=attention, mask_scale="family")
    assert (axes["coloraxis"].zmin, axes["coloraxis"].zmax, axes["coloraxis2"].zmin) == (0.0, 1.0, -1.0)
    assert of == {"mixed": "coloraxis", "channel": "coloraxis2", "none": "coloraxis"}
    axes, _ = viz.compare_axes(maps, ["a", "b"], show="mask", attention=attention, mask_scale="data")
    assert (axes["coloraxis"].zmin, axes["coloraxis"].zmax) == viz.value_range(*sig.values())
    axes, of = viz.compare_axes(maps, ["a", "b"], show="mask", attention=attention, mask_scale="single")
    assert list(axes) == ["coloraxis"] and set(of.values()) == {"coloraxis"}
    features = {"x": {"a": RNG.normal(size=(4, 4))}, "y": {"a": RNG.normal(size=(4, 4)) * 3}}
    axes, of = viz.compare_axes(features, ["a"], show="trunk", attention={"x": "mixed", "y": "channel"})
    assert (axes["coloraxis"].zmin, axes["coloraxis"].zmax) == viz.value_range(*[m["a"] for m in features.values()],
                                                                               symmetric=True)
    assert of == {"x": {"a": "coloraxis"}, "y": {"a": "coloraxis"}} and axes["coloraxis"].title == "T a"


def test_map_panels_share_a_range_when_asked():
    a, b = np.array([[0.0, 1.0]]), np.array([[-3.0, 2.0]])
    alone = viz.map_panel("a", a, signed=False)
    assert (alone.zmin, alone.zmax, alone.zmid, alone.colorscale) == (0.0, 1.0, None, viz.MASK_SCALE)
    joint = viz.map_panel("a", a, signed=True, range_of=[a, b])
    assert (joint.zmin, joint.zmax, joint.zmid, joint.colorscale) == (-3.0, 3.0, 0.0, viz.FEATURE_SCALE)
    shared = viz.share_range([viz.map_panel("a", a, signed=False), viz.map_panel("b", b, signed=False)])
    assert [(p.zmin, p.zmax) for p in shared] == [(-3.0, 2.0)] * 2
    shared = viz.share_range([viz.map_panel("a", a, signed=False), viz.map_panel("b", b, signed=True)])
    assert [(p.zmin, p.zmax) for p in shared] == [(-3.0, 3.0)] * 2
    assert [p.colorscale for p in shared] == [viz.MASK_SCALE, viz.FEATURE_SCALE]  # each keeps its scale


def test_panels_figure_puts_the_image_first_and_hovers_raw_values():
    image = RNG.integers(0, 255, (6, 6, 3), dtype=np.uint8)
    raw = RNG.normal(size=(6, 6))
    fig = viz.panels_figure([viz.map_panel("IG", raw, normalise=True, value_name="IG")], image=image,
                            image_title="photo")
    assert [t.type for t in fig.data] == ["image", "heatmap"]
    np.testing.assert_allclose(np.asarray(fig.data[1].customdata), raw, rtol=1e-6)
    assert "%{customdata" in fig.data[1].hovertemplate
    assert [a.text for a in fig.layout.annotations] == ["photo", "IG"]


def test_stats_figure_has_a_bar_per_model_and_statistic_with_the_values():
    rows = [{"model": m, "stage": s, "mean": i + s / 10, "std": 0.1} for i, m in enumerate(["A", "B"])
            for s in (1, 2)]
    fig = viz.stats_figure(rows, ["mean", "std"], {"mean": "mean of M", "std": "spread"})
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 2 * 2
    first = next(t for t in bars if t.name == "B" and t.yaxis == "y")
    assert list(first.y) == [1.1, 1.2]
    assert {a.text for a in fig.layout.annotations} == {"mean of M", "spread"}
    assert sum(1 for t in bars if t.showlegend) == 2  # one legend entry per model


def test_gain_figure_compounds_the_gains():
    fig = viz.gain_figure({"ARL": [{"name": "s1", "gain": 1.5}, {"name": "s2", "gain": 1.2}]})
    line = next(t for t in fig.data if t.type == "scatter")
    np.testing.assert_allclose(list(line.y), [1.5, 1.8])


# ----------------------------------------------------------------------------- export

@functools.lru_cache(maxsize=1)
def _builders():
    image = RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    model = resattn.create_model("attention56", width=0.125, num_classes=3)
    outline = stats.network_outline(model)
    return {
        "panels": viz.panels_figure([viz.Panel("a", RNG.random((5, 5)), 0, 1),
                                         viz.Panel("b", RNG.normal(size=(5, 5)), -2, 2, viz.FEATURE_SCALE)]),
        "overlay": viz.overlay_figure(image, RNG.random((8, 8)), opacity=0.5, zmin=0, zmax=1, title="t"),
        "grid": viz.channel_grid_figure(RNG.random((4, 3, 3)), list("abcd"), zmin=0, zmax=1),
        "histogram": viz.histogram_figure(*stats.value_histogram(RNG.random(100), 10)),
        "histograms": viz.histograms_figure({"x": stats.value_histogram(RNG.random(50), 5),
                                                 "y": stats.value_histogram(RNG.random(50), 5)}),
        "predictions": viz.predictions_figure(["a", "b"], [0.3, 0.7]),
        "network": viz.network_figure(outline, {"stage1.1": image}),
        "compare": viz.compare_figure(
            [viz.CompareColumn("m", "x", {"s": RNG.random((8, 8))})], ["s"],
            {"coloraxis": viz.ColorAxis(0, 1, "M")}, image=image),
        "stats": viz.stats_figure([{"model": "A", "stage": 1, "mean": 0.5}], ["mean"], {}),
        "gain": viz.gain_figure({"A": [{"name": "s", "gain": 1.2}]}),
    }


@pytest.mark.parametrize("name", list(_builders()))
def test_every_figure_exports_to_png_and_svg(name):
    fig = _builders()[name]
    png = viz.figure_bytes(fig, "png")
    assert png.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(png)) as img:
        assert img.size[0] > 300 and img.size[1] > 100
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(pixels, axis=0)) > 5  # something was drawn
    svg = viz.figure_bytes(fig, "svg")
    assert b"<svg" in svg[:500]


def test_export_keeps_the_colour_range_and_colour_bars():
    fig = viz.panels_figure([viz.Panel("a", RNG.random((5, 5)), -3, 7)])
    rendered = viz.to_matplotlib(fig)
    images = [im for ax in rendered.axes for im in ax.get_images()]
    assert (images[0].norm.vmin, images[0].norm.vmax) == (-3, 7)
    assert len(rendered.axes) == 2  # the map and its colour bar


def test_export_refuses_unknown_formats():
    with pytest.raises(ValueError, match="png"):
        viz.figure_bytes(viz.histogram_figure(np.ones(2) / 2, np.arange(3.0)), "gif")


# ----------------------------------------------------------------------------- statistics

def test_mask_statistics_of_undecided_and_saturated_masks():
    half = stats.mask_statistics(torch.full((2, 3, 3), 0.5))
    assert half["mean"] == pytest.approx(0.5) and half["std"] == pytest.approx(0.0)
    assert half["entropy"] == pytest.approx(1.0)
    assert half["near0"] == 0 and half["near1"] == 0
    assert half["spatial_entropy"] == pytest.approx(1.0)
    saturated = torch.zeros(1, 2, 2)
    saturated[0, 0, 0] = 1.0
    s = stats.mask_statistics(saturated)
    assert s["entropy"] == pytest.approx(0.0)
    assert s["near0"] == pytest.approx(0.75) and s["near1"] == pytest.approx(0.25)
    assert s["spatial_entropy"] == pytest.approx(0.0)  # all weight on one position


def test_channel_attention_values_count_by_magnitude():
    m = torch.tensor([[[-1.0]], [[0.0]]])
    s = stats.mask_statistics(m)
    assert s["near1"] == 0.0  # -1 is not "near 1"
    assert s["near0"] == 0.5
    assert s["entropy"] == pytest.approx(0.0)


def test_stage_statistics_pool_the_modules_of_a_stage():
    a, b = torch.zeros(1, 2, 2), torch.ones(1, 2, 2)
    out = stats.stage_mask_statistics([(1, a), (1, b), (2, b), (3, None)])
    assert set(out) == {1, 2}
    assert out[1]["mean"] == pytest.approx(0.5)
    assert out[2]["near1"] == pytest.approx(1.0)


def test_magnitudes_on_a_traced_model_follow_arl_and_nal(tiny_model, images):
    x = images(2, 32)
    for residual in ("arl", "nal"):
        model = tiny_model(attention="mixed", residual=residual)
        rows = stats.magnitude_profile(resattn.trace(model, x).modules)
        assert [r["name"] for r in rows] == ["stage1.1", "stage2.1", "stage3.1"]
        for r in rows:
            assert (1.0 <= r["gain"] <= 2.0) if residual == "arl" else (0.0 <= r["gain"] <= 1.0)
    assert stats.cumulative_gain([2.0, 0.5, 3.0]) == [2.0, 1.0, 3.0]


def test_mask_logits_are_what_the_activation_turns_into_the_traced_mask(tiny_model, images, hooks):
    x = images(2, 32)
    for attention in ("mixed", "channel", "spatial"):
        model = tiny_model(attention=attention)
        logits = stats.mask_logits(model, x)
        masks = {r.name: r.mask for r in resattn.trace(model, x).modules}
        assert set(logits) == set(masks)
        for name, z in logits.items():
            torch.testing.assert_close(stats.apply_activations(z)[attention], masks[name])
        assert hooks(model) == 0
    assert stats.mask_logits(tiny_model(attention="none"), x) == {}


def test_activation_summary_measures_what_each_activation_removes():
    logits = torch.randn(1, 6, 5, 5, generator=torch.Generator().manual_seed(0)) * 3
    out = stats.activation_summary(logits)
    assert out["channel"]["position_norm"] == pytest.approx((1.0, 1.0), abs=1e-5)
    lo, hi = out["spatial"]["channel_mean"]
    assert 0.3 < lo <= hi < 0.7
    assert out["mixed"]["above_half"] == pytest.approx(float((logits > 0).float().mean()))
    assert sum(out["mixed"]["counts"]) == pytest.approx(1.0)


def test_network_outline_of_attention92():
    outline = stats.network_outline(resattn.create_model("attention92", width=0.125, num_classes=2))
    assert [len(s["modules"]) for s in outline["stages"]] == [1, 2, 3]
    assert [s["units"] for s in outline["stages"]] == [1, 1, 1]
    assert outline["final_units"] == 3
    assert outline["stages"][1]["modules"][1]["name"] == "stage2.2"
    assert outline["stages"][0]["modules"][0]["units"] == {"pre": 1, "trunk": 2, "post": 1}
