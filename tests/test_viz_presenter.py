"""Presenter mode reaches every figure (issue 18): under resattn.viz.PRESENTER_STYLE every
builder draws its maps in viridis or cividis, no two series colours of one chart are a pair
that a red-green colour-blind viewer confuses, and the type is at least the projector size;
then the same on every page of the app with ?present=1 (AppTest).

"Confused" is measured, not listed: each colour is passed through Machado, Oliveira and
Fernandes' (2009) full-severity deuteranopia and protanopia simulations (linear RGB) and two
colours count as distinct when they stay at least MIN_DELTA_E apart in CIELAB (CIE76). The
default style's red/green and orange/green pairs fall below it (checked below), the
Okabe-Ito colours of the presenter style above it."""
from __future__ import annotations

import functools
import itertools

import numpy as np
import plotly.graph_objects as go
import pytest
from test_app import assert_clean, charts, start, toy_zoo, zoo_env  # noqa: F401
from test_app_analysis import FAST, analysis_zoo, env, image_folder  # noqa: F401

import resattn
from resattn import stats, viz

MIN_DELTA_E = 15.0
DEUTERANOPIA = np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                         [-0.011820, 0.042940, 0.968881]])
PROTANOPIA = np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                       [-0.003882, -0.048116, 1.051998]])
SAFE_SCALES = ("Viridis", "Cividis")


# ----------------------------------------------------------------------------- colour science

def _linear_rgb(colour: str) -> np.ndarray:
    colour = colour.strip().lstrip("#")
    srgb = np.array([int(colour[i:i + 2], 16) for i in (0, 2, 4)]) / 255.0
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def _lab(linear: np.ndarray) -> np.ndarray:
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) \
        @ np.clip(linear, 0, 1) / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def cvd_distance(a: str, b: str) -> float:
    """The smaller CIELAB distance of two colours as a deuteranope and a protanope see them."""
    return min(float(np.linalg.norm(_lab(m @ _linear_rgb(a)) - _lab(m @ _linear_rgb(b))))
               for m in (DEUTERANOPIA, PROTANOPIA))


def confused_pairs(colours) -> list[tuple[str, str, float]]:
    return [(a, b, round(cvd_distance(a, b), 1)) for a, b in itertools.combinations(sorted(colours), 2)
            if cvd_distance(a, b) < MIN_DELTA_E]


def test_the_measure_separates_red_green_pairs_from_the_okabe_ito_colours():
    assert confused_pairs(["#d62728", "#2ca02c"])  # matplotlib's red and green
    assert confused_pairs(["#ff7f0e", "#2ca02c"])  # its orange and green
    assert not confused_pairs(["#0072B2", "#E69F00", "#56B4E9", "#CC79A7", "#000000", "#D55E00", "#009E73"])


# ----------------------------------------------------------------------------- what a figure shows

def _stops(scale) -> str:
    return str([[float(p), str(c)] for p, c in go.Heatmap(colorscale=scale).colorscale])


def scales_of(fig: go.Figure) -> list[str]:
    """Every colour scale of a figure (its traces' and its shared colour axes'), as stops."""
    found = [_stops(t.colorscale) for t in fig.data if getattr(t, "colorscale", None) is not None]
    layout = fig.layout.to_plotly_json()
    found += [_stops(spec["colorscale"]) for name, spec in layout.items()
              if name.startswith("coloraxis") and spec.get("colorscale") is not None]
    return found


def series_colours(fig: go.Figure) -> set[str]:
    """The colours that tell series apart: bar and marker fills, line colours."""
    found = set()
    for trace in fig.data:
        for part in ("marker", "line"):
            colour = getattr(getattr(trace, part, None), "color", None) if hasattr(trace, part) else None
            if isinstance(colour, str):
                found.add(colour)
            elif isinstance(colour, (tuple, list)):
                found.update(c for c in colour if isinstance(c, str))
    return {c for c in found if c.startswith("#")}


@functools.lru_cache(maxsize=2)
def every_builder(style_name: str) -> dict[str, go.Figure]:
    """One figure from each builder of resattn.viz, with every named series the app draws,
    built under the "presenter" or the "default" style."""
    style = {"presenter": viz.PRESENTER_STYLE, "default": viz.DEFAULT_STYLE}[style_name]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    models = list(viz.MODEL_COLORS) + ["a sixth model"]
    outline = stats.network_outline(resattn.create_model("attention56", width=0.125, num_classes=3))
    fractions = np.linspace(0, 1, 5)
    kinds = ["mask:stage2.1", "abs_ig", "ig", "gradcam", "occlusion", "random", "random_smooth"]
    signed, positive = rng.normal(size=(8, 8)), rng.random((8, 8))
    with viz.figure_style(style):
        return {
            "panels_figure": viz.panels_figure([viz.map_panel("M", positive), viz.map_panel("IG", signed)],
                                               image=image),
            "overlay_figure": viz.overlay_figure(image, signed, opacity=0.5, signed=True),
            "channel_grid_figure": viz.channel_grid_figure(rng.normal(size=(4, 3, 3)), list("abcd"), signed=True),
            "histogram_figure": viz.histogram_figure(*stats.value_histogram(rng.random(100), 10)),
            "histograms_figure": viz.histograms_figure({k: stats.value_histogram(rng.random(50), 5)
                                                        for k in ("mixed", "channel", "spatial")}),
            "predictions_figure": viz.predictions_figure(["a", "b", "c"], [0.3, 0.6, 0.1]),
            "network_figure": viz.network_figure(outline, {"stage1.1": image}, selected="stage1.1"),
            "compare_figure": viz.compare_figure(
                [viz.CompareColumn("mixed · ARL", "x", {"s": positive}, "coloraxis"),
                 viz.CompareColumn("channel · ARL", "y", {"s": signed}, "coloraxis2")], ["s"],
                {"coloraxis": viz.ColorAxis(0, 1, "M"), "coloraxis2": viz.ColorAxis(-2, 2, "M", viz.FEATURE_SCALE, 0.0)},
                image=image),
            "class_means_figure": viz.class_means_figure(np.stack([rng.random((2, 4, 4)), rng.normal(size=(2, 4, 4))], 1),
                                                         [2, 1], ["tench", "church"], ["stage1.1", "stage2.1"]),
            "stats_figure": viz.stats_figure([{"model": m, "stage": 1, "mean": 0.5} for m in models], ["mean"], {}),
            "gain_figure": viz.gain_figure({m: [{"name": "s", "gain": 1.2}] for m in models}),
            "concentration_figure": viz.concentration_figure(
                rng.random((4, 2)), ["stage1.1", "stage2.1"],
                {"correct": np.array([1, 1, 0, 0], bool), "wrong": np.array([0, 0, 1, 1], bool)}),
            "top5_change_figure": viz.top5_change_figure([{"name": "tench", "before": 0.6, "after": 0.2}]),
            "mask_change_figure": viz.mask_change_figure({"stage1.1": 0.1, "stage2.1": 0.3}, intervened="stage1.1"),
            "curves_figure": viz.curves_figure({k: (fractions, 1 - fractions, fractions) for k in kinds}),
        }


def test_every_builder_of_resattn_viz_is_checked():
    assert set(every_builder("presenter")) == {n for n in viz.__all__ if n.endswith("_figure")}


@pytest.mark.parametrize("name", sorted(n for n in viz.__all__ if n.endswith("_figure")))
def test_presenter_style_reaches_every_builder(name):
    fig = every_builder("presenter")[name]
    safe = {_stops(s) for s in SAFE_SCALES}
    assert set(scales_of(fig)) <= safe, f"{name} draws a colour scale other than viridis / cividis"
    assert not confused_pairs(series_colours(fig)), f"{name}: {confused_pairs(series_colours(fig))}"
    assert fig.layout.font.size >= viz.PROJECTOR_FONT_SIZE


def test_the_default_style_keeps_its_scales_and_would_fail_the_check():
    figures = every_builder("default")
    assert _stops(viz.FEATURE_SCALE) in scales_of(figures["overlay_figure"])
    assert confused_pairs(series_colours(figures["curves_figure"]))  # green IG beside orange Grad-CAM
    assert confused_pairs(series_colours(figures["histograms_figure"]))  # the activations' orange and green
    assert figures["panels_figure"].layout.font.size == viz.FONT_SIZE


def test_thumbnails_baked_into_pixels_follow_the_style_too():
    image = np.zeros((2, 5, 3), dtype=np.uint8)
    signed = np.linspace(-1, 1, 10).reshape(2, 5)
    import matplotlib

    with viz.figure_style(viz.PRESENTER_STYLE):
        (picture,), (lo, hi) = viz.blend_maps(image, [signed], signed=True, opacity=1.0)
    expected = np.rint(matplotlib.colormaps["cividis"]((signed - lo) / (hi - lo))[..., :3] * 255)
    assert np.abs(picture.astype(int) - expected).max() <= 1


# ----------------------------------------------------------------------------- every page, presenting

def assert_presentable(at) -> None:
    assert_clean(at)
    specs = charts(at)
    assert specs, "the page drew no chart"
    safe = {_stops(s) for s in SAFE_SCALES}
    for spec in specs:
        fig = go.Figure(spec)
        assert set(scales_of(fig)) <= safe
        assert not confused_pairs(series_colours(fig)), confused_pairs(series_colours(fig))
        assert fig.layout.font.size >= viz.PROJECTOR_FONT_SIZE


@pytest.mark.parametrize("page,query", [
    ("pages/overview.py", {}), ("pages/explorer.py", {}), ("pages/compare.py", {"show": "mask"}),
    ("pages/compare.py", {"show": "trunk"}), ("pages/how_it_works.py", {}),
    ("pages/tour.py", {"step": "5"}), ("pages/tour.py", {"step": "8"}), ("pages/tour.py", {"step": "9"}),
])
def test_every_page_presents_colour_blind_safe_figures(zoo_env, page, query):
    assert_presentable(start(page, {"present": "1", **query}))


@pytest.mark.parametrize("page", ["pages/attribution.py", "pages/interventions.py", "pages/faithfulness.py"])
def test_the_analysis_pages_present_colour_blind_safe_figures(env, page):
    assert_presentable(start(page, {"present": "1", **FAST}))


def test_the_dataset_page_presents_colour_blind_safe_figures(env, image_folder):
    query = {"present": "1", "source": "folder", "folder": str(image_folder)}
    start("pages/dataset.py", query).button(key="ds_compute").click().run()  # the statistics, cached on disk
    assert_presentable(start("pages/dataset.py", query))  # a fresh visit draws them at once
