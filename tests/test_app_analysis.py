"""The four analysis pages (attribution, interventions, faithfulness, dataset) through
streamlit.testing.v1.AppTest, and the figure builders they draw with.

Toy checkpoints as in tests/test_app.py (tiny random-weight Attention-56, 64 px): every page
renders with each of them, widgets change what is drawn, what is drawn is what
resattn.analysis computes, links carry the pages' settings, and user errors show st.error
while the page keeps working. IG runs with 4 steps and the curves with 8 to stay fast."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image
from test_app import CLASSES, assert_clean, chart, charts, navigation_v2, save_toy, start, values  # noqa: F401

import resattn
import resattn.data
from resattn import analysis, viz
from resattn.viz import figure_bytes

PAGES = ["pages/attribution.py", "pages/interventions.py", "pages/faithfulness.py", "pages/dataset.py"]
TITLES = ["Masks vs attributions", "Switch a mask off", "Deletion & insertion", "Masks across a dataset"]
MODELS = [("mixed", "arl"), ("mixed", "nal"), ("channel", "arl"), ("none", "arl")]
FAST = {"igsteps": "4", "steps": "8", "nulls": "3"}


@pytest.fixture(scope="module")
def analysis_zoo(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("analysis_zoo")
    for seed, (attention, residual) in enumerate(MODELS):
        save_toy(folder, attention, residual, seed)
    return folder


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """An ImageFolder tree of generated PNGs: two of the toy classes, three images each, and
    one folder whose name is not a class of the checkpoint (labels unknown)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("tench", "church", "not_a_class"):
        (root / name).mkdir()
        for i in range(3 if name != "not_a_class" else 1):
            array = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
            Image.fromarray(array).save(root / name / f"{name}_{i}.png")
    return root


def env_cache() -> str:
    import os

    return os.environ["RESATTN_CACHE"]


@pytest.fixture
def env(analysis_zoo, monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("RESATTN_CHECKPOINTS", str(analysis_zoo))
    monkeypatch.setenv("RESATTN_CACHE", str(tmp_path / "cache"))  # the dataset statistics' disk cache
    monkeypatch.setenv("RESATTN_REPORTS", str(tmp_path / "reports"))  # none, unless a test writes one
    return analysis_zoo


@pytest.fixture(scope="module")
def toy_report(analysis_zoo, image_folder, tmp_path_factory) -> Path:
    """A dataset report of the mixed ARL toy on the generated images (tiny settings)."""
    from resattn.report import main

    reports = tmp_path_factory.mktemp("reports")
    assert main(["--checkpoint", str(analysis_zoo / "attention56_mixed_arl"), "--images", str(image_folder),
                 "--out", str(reports / "attention56_mixed_arl"), "--steps", "2", "--ig-steps", "2", "--draws", "8",
                 "--bootstrap", "50", "--no-figures", "--threads", "1", "--device", "cpu"]) == 0
    return reports


def heatmaps(spec: dict) -> list[dict]:
    return [d for d in spec["data"] if d["type"] == "heatmap"]


def custom(trace: dict) -> np.ndarray:
    return values({"z": trace["customdata"]})


def array(data) -> np.ndarray:
    """A plotly data array from a chart spec (a list, or base64 {dtype, bdata[, shape]})."""
    if isinstance(data, dict) and "shape" not in data:
        import base64

        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
    return values({"z": data})


def thumbnails(at) -> list[str]:
    """Captions of the dataset page's image thumbnails ("concentration · true → predicted")."""
    return [c for image in at.get("image") for c in image.captions if "→" in c]


def table(at, index: int = 0):
    return at.dataframe[index].value


def model_and_input(folder: Path, name: str, image_id: str = "sample:chelsea"):
    from ui import samples

    model, card = resattn.load_checkpoint(folder / name)
    image, _ = samples.load(image_id)
    return model, card, card.preprocess(image)


# ----------------------------------------------------------------------------- every page, every checkpoint

@pytest.mark.parametrize("attention,residual", MODELS)
def test_every_analysis_page_renders_with_each_checkpoint(env, image_folder, attention, residual):
    query = {"ckpt": f"attention56_{attention}_{residual}", "source": "folder", "folder": str(image_folder), **FAST}
    at = start(query=query)
    for page, title in zip(PAGES, TITLES):
        at.switch_page(page).run()
        assert_clean(at)
        assert not at.error, [e.value for e in at.error]
        assert at.title[0].value == title
        assert at.selectbox(key="ckpt").value == f"attention56_{attention}_{residual}"
        if attention == "none" and page != "pages/attribution.py" and page != "pages/faithfulness.py":
            assert any("no soft masks" in i.value for i in at.info), page
        elif page != "pages/dataset.py":
            assert charts(at), f"{page} drew no chart"


@pytest.mark.parametrize("page", PAGES)
def test_a_missing_checkpoint_folder_explains_what_to_do(tmp_path, monkeypatch, page):
    monkeypatch.setenv("RESATTN_CHECKPOINTS", str(tmp_path / "nowhere"))
    at = start(page)
    assert_clean(at)
    assert any("No checkpoint folder" in e.value for e in at.error)
    assert any("Choose a checkpoint" in i.value for i in at.info)


# ----------------------------------------------------------------------------- attribution

def test_attribution_maps_are_the_library_maps_with_honest_colour_bars(env):
    at = start("pages/attribution.py", {**FAST, "module": "stage2.1"})
    assert_clean(at)
    maps = heatmaps(chart(at, "attribution_maps"))
    assert len(maps) == 5  # the mask + |IG|, IG, Grad-CAM, Occlusion
    model, card, x = model_and_input(env, "attention56_mixed_arl")
    target = int(model(x).argmax())
    ig = analysis.integrated_gradients(model, x, target, n_steps=4).map.numpy()
    np.testing.assert_allclose(custom(maps[2]), ig, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(values(maps[2]), ig, rtol=1e-4, atol=1e-6)  # not normalised by default
    np.testing.assert_allclose(custom(maps[1]), np.abs(ig), rtol=1e-4, atol=1e-6)  # |IG|, labelled as such
    assert "|IG|" in maps[1]["colorbar"]["title"]["text"] and "signed" in maps[2]["colorbar"]["title"]["text"]
    # signed IG: diverging, centred and symmetric about 0, covering every value
    assert maps[2]["zmid"] == 0 and maps[2]["zmin"] == pytest.approx(-maps[2]["zmax"])
    assert maps[2]["zmax"] == pytest.approx(np.abs(ig).max(), rel=1e-5)
    # the mean of the mixed mask is in (0, 1): its own data range, sequential
    mask = values(maps[0])
    assert "zmid" not in maps[0] and maps[0]["zmin"] == pytest.approx(mask.min(), rel=1e-5)
    assert 0 < mask.min() < mask.max() < 1 and mask.shape == (64, 64)
    expected = analysis.to_image_size(analysis.mask_map(resattn.trace(model, x)["stage2.1"].mask[0]), 64)
    np.testing.assert_allclose(mask, expected.numpy(), rtol=1e-4, atol=1e-6)


def test_normalising_changes_the_colours_but_not_the_hovered_values(env):
    at = start("pages/attribution.py", FAST)
    before = heatmaps(chart(at, "attribution_maps"))
    at.toggle(key="normalise").set_value(True).run()
    assert_clean(at)
    after = heatmaps(chart(at, "attribution_maps"))
    for b, a in zip(before, after):
        raw = custom(b)
        np.testing.assert_array_equal(custom(a), raw)
        np.testing.assert_allclose(values(a), raw / np.abs(raw).max(), rtol=1e-5)
        assert "÷ max" in a["colorbar"]["title"]["text"]
    assert at.query_params["normalise"] == "1"


def test_every_agreement_number_has_its_null_band_and_a_computed_verdict(env):
    at = start("pages/attribution.py", FAST)
    assert_clean(at)
    first = table(at)
    assert list(first.columns) == ["method", "metric", "value", "chance (null mean)", "null 2.5 %", "null 97.5 %",
                                   "p (uncorrected)"]
    assert list(first["method"].unique()) == ["|Integrated Gradients|", "Integrated Gradients (signed)", "Grad-CAM",
                                              "Occlusion"]
    assert (first["null 2.5 %"] <= first["chance (null mean)"]).all()
    assert (first["chance (null mean)"] <= first["null 97.5 %"]).all()
    assert first["p (uncorrected)"].between(0, 1).all()
    # The page's numbers are the library's, and each sentence says where its value lies.
    model, card, x = model_and_input(env, "attention56_mixed_arl")
    target = int(model(x).argmax())
    mask, gradient = analysis.mask_gradients(model, x, target)["stage3.1"]
    native = analysis.weighted_map(mask, analysis.channel_weights(mask, "mean")).numpy()
    cam = analysis.grad_cam(model, x, target).map.numpy()
    from resattn.analysis.nulls import image_agreement

    expected = {r["metric"]: r for r in image_agreement(native, {"gradcam": cam})}
    shown = first[first["method"] == "Grad-CAM"].set_index("metric")
    assert shown.loc["Spearman ρ", "value"] == pytest.approx(expected["spearman"]["value"], abs=1e-6)
    assert shown.loc["top-20 % IoU", "null 97.5 %"] == pytest.approx(expected["iou"]["null_high"], abs=1e-6)
    sentences = " ".join(m.value for m in at.markdown)
    for r in expected.values():
        where = "above" if r["value"] > r["null_high"] else "below" if r["value"] < r["null_low"] else "inside"
        assert f"with Grad-CAM: {r['value']:.3f}, {where} the 95 % band" in sentences
    # Widgets: the region size, the methods, the layer, the reduction, the class.
    at.slider(key="topk").set_value(45).run()
    assert "top-45 % IoU" in set(table(at)["metric"])
    at.multiselect(key="methods").set_value(["gradcam"]).run()
    assert len(heatmaps(chart(at, "attribution_maps"))) == 2
    assert at.query_params["methods"] == "gradcam"
    cam = custom(heatmaps(chart(at, "attribution_maps"))[1])
    at.selectbox(key="camlayer").set_value("stage1.1").run()
    assert not np.array_equal(custom(heatmaps(chart(at, "attribution_maps"))[1]), cam)
    mean_mask = custom(heatmaps(chart(at, "attribution_maps"))[0])
    at.selectbox(key="areduce").set_value("class_weighted").run()
    assert_clean(at)
    assert not np.array_equal(custom(heatmaps(chart(at, "attribution_maps"))[0]), mean_mask)
    assert at.query_params["areduce"] == "class_weighted"
    target_before = at.subheader[0].value
    at.selectbox(key="target").set_value("3").run()
    assert_clean(at)
    assert CLASSES[3] in at.subheader[0].value and at.subheader[0].value != target_before


def test_the_dataset_report_shows_nulls_corrected_p_and_verdicts(env, toy_report, monkeypatch):
    at = start("pages/attribution.py", FAST)
    assert any("No dataset report" in i.value and "python -m resattn.report" in i.value for i in at.info)
    monkeypatch.setenv("RESATTN_REPORTS", str(toy_report))
    at = start("pages/attribution.py", {**FAST, "module": "stage2.1", "areduce": "top_channels"})
    assert_clean(at)
    shown = at.dataframe[1].value
    assert list(shown.columns) == ["method", "metric", "images", "value", "chance (null mean)", "null 2.5 %",
                                   "null 97.5 %", "p (Holm)"]
    import csv

    with open(toy_report / "attention56_mixed_arl" / "agreement.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["module"] == "stage2.1" and r["reduction"] == "top_channels"]
    assert len(shown) == len(rows) == 15
    assert list(shown["value"]) == pytest.approx([float(r["value"]) for r in rows])
    assert list(shown["p (Holm)"]) == pytest.approx([float(r["p_holm"]) for r in rows])
    text = " ".join(m.value for m in at.markdown)
    assert "Of the 135 tests of this checkpoint" in text
    assert text.count("Not distinguishable from chance") + text.count("Above chance") + text.count(
        "Below chance") == 15


def test_attribution_settings_travel_in_the_link(env):
    at = start("pages/attribution.py", {**FAST, "methods": "occlusion,ig", "topk": "35", "normalise": "1",
                                        "target": "2", "camlayer": "no_such_layer", "areduce": "top_channels"})
    assert_clean(at)
    assert at.multiselect(key="methods").value == ["occlusion", "ig"]
    assert at.slider(key="topk").value == 35
    assert at.toggle(key="normalise").value is True
    assert at.selectbox(key="target").value == "2"
    assert at.selectbox(key="camlayer").value == "stage3.1"  # unknown layer: the default
    assert at.selectbox(key="areduce").value == "top_channels"
    # a visit to another page keeps them
    at.switch_page("pages/overview.py").run()
    at.switch_page("pages/attribution.py").run()
    assert at.slider(key="topk").value == 35 and at.multiselect(key="methods").value == ["occlusion", "ig"]


def test_attribution_without_masks_shows_attributions_only(env):
    at = start("pages/attribution.py", {**FAST, "ckpt": "attention56_none_arl"})
    assert_clean(at)
    assert len(heatmaps(chart(at, "attribution_maps"))) == 4
    assert any("no soft masks" in i.value for i in at.info)


# ----------------------------------------------------------------------------- interventions

def test_switching_an_arl_mask_off_leaves_the_trunk_exactly(env):
    at = start("pages/interventions.py", {"module": "stage2.1"})
    assert_clean(at)
    note = " ".join(i.value for i in at.info)
    assert "H = (1 + 0)·T = T exactly" in note and "max |H − T| = 0." in note
    change = chart(at, "mask_change")["data"][0]
    assert change["x"] == ["stage1.1", "stage2.1", "stage3.1"]
    assert change["y"][0] < 1e-6 and change["y"][1] > 0 and change["y"][2] > 0  # before: untouched


def test_switching_a_nal_mask_off_zeroes_the_module(env):
    at = start("pages/interventions.py", {"ckpt": "attention56_mixed_nal"})
    assert_clean(at)
    assert any("H = 0·T = 0" in i.value and "max |H| = 0 " in i.value for i in at.info)


def test_intervention_results_are_the_library_results(env):
    at = start("pages/interventions.py", {"module": "stage1.1", "iv": "one"})
    assert_clean(at)
    bars = {d["name"]: dict(zip((x.replace("<br>", " ") for x in d["x"]), d["y"]))
            for d in chart(at, "top5_change")["data"]}
    model, card, x = model_and_input(env, "attention56_mixed_arl")
    result = analysis.intervene(model, x, "stage1.1", "one")
    after = bars[next(name for name in bars if name.startswith("after"))]
    for row in result.top5_table():
        assert after[CLASSES[row["class"]]] == pytest.approx(row["after"], rel=1e-4)
        assert bars["before"][CLASSES[row["class"]]] == pytest.approx(row["before"], rel=1e-4)


def test_every_intervention_mode_and_its_options_change_the_output(env):
    at = start("pages/interventions.py")

    def after_bars():
        spec = chart(at, "top5_change")
        return spec["data"][1]["y"], chart(at, "later_maps")

    seen = []
    for mode in ("zero", "one", "spatial_mean"):
        at.radio(key="iv").set_value(mode).run()
        assert_clean(at)
        seen.append(after_bars()[0])
    assert seen[0] != seen[1] != seen[2]
    at.radio(key="iv").set_value("constant").run()
    at.slider(key="ivalue").set_value(0.2).run()
    low = after_bars()[0]
    at.slider(key="ivalue").set_value(0.9).run()
    assert after_bars()[0] != low
    assert at.query_params["ivalue"] == "0.9"
    at.radio(key="iv").set_value("from_image").run()
    at.selectbox(key="other").set_value("sample:coffee").run()
    coffee = after_bars()[0]
    at.selectbox(key="other").set_value("sample:rocket").run()
    assert_clean(at)
    assert after_bars()[0] != coffee
    at.radio(key="iv").set_value("randomise").run()
    at.number_input(key="seed").set_value(1).run()
    seed1 = after_bars()[0]
    at.number_input(key="seed").set_value(2).run()
    assert after_bars()[0] != seed1
    maps = after_bars()[1]
    assert "stage2.1" in maps["layout"]["annotations"][0]["text"]
    at.selectbox(key="later").set_value("stage3.1").run()
    assert "stage3.1" in chart(at, "later_maps")["layout"]["annotations"][0]["text"]
    assert not at.error


def test_an_intervention_is_shown_beside_other_images_masks_and_the_dataset_test(env, toy_report, monkeypatch):
    at = start("pages/interventions.py", {"module": "stage2.1", "iv": "one"})
    assert_clean(at)
    reference = [m.value for m in at.markdown if "other sample images" in m.value]
    assert reference and "masks of 5 other sample images cause at stage2.1" in reference[0]
    assert any("No dataset report" in i.value for i in at.info)
    monkeypatch.setenv("RESATTN_REPORTS", str(toy_report))
    at = start("pages/interventions.py", {"module": "stage2.1", "iv": "randomise"})
    assert_clean(at)
    causal = table(at, 2)
    assert list(causal["replacement"]) == ["dataset_mean", "one", "other_image"]
    text = " ".join(m.value for m in at.markdown)
    assert text.count("Replacing stage2.1's mask by") == 3
    sanity = table(at, 3)
    assert list(sanity["randomised through"].unique()) == ["stage3", "stage2", "stage1"]
    # stage2.1 lies below the randomised stage 3: its mean mask is the trained one.
    below = sanity[(sanity["randomised through"] == "stage3") & (sanity["reduction"] == "mean")]
    assert float(below["Spearman to trained"].iloc[0]) == 1.0


# ----------------------------------------------------------------------------- faithfulness

def test_faithfulness_curves_for_mask_methods_and_random(env):
    at = start("pages/faithfulness.py", FAST)
    assert_clean(at)
    curves = chart(at, "curves")["data"]
    names = [d["name"] for d in curves if d["showlegend"]]
    assert names == ["mask M of stage3.1 (mean over channels)", "|Integrated Gradients|",
                     "Integrated Gradients (signed)", "Grad-CAM", "Occlusion", "random order (pixel noise) (seed 0)",
                     "random smooth order (like the mask) (seed 0)"]
    assert all(len(array(d["x"])) == 9 for d in curves)  # 8 steps + the start
    auc = table(at)
    assert list(auc["map"]) == names[:5] + ["random order (pixel noise): mean of 3",
                                            "random smooth order (like the mask): mean of 3"]
    deletion = [d for d in curves if d["xaxis"] == "x"]
    starts = {round(float(array(d["y"])[0]), 6) for d in deletion}
    assert len(starts) == 1  # every deletion curve starts at the image's own probability
    # Every AUC has a band of random orders, and a sentence says where it lies.
    bands = table(at, 1)
    assert list(bands["reference"].unique()) == ["random order (pixel noise)", "random smooth order (like the mask)"]
    assert (bands["2.5 %"] <= bands["97.5 %"]).all()
    sentences = [m.value for m in at.markdown if "lies" in m.value][0]
    assert sentences.count("deletion AUC") == 5 and sentences.count("insertion AUC") == 5
    assert "random smooth orders (like the mask)" in sentences.split("\n")[0]  # the mask against smooth orders
    at.slider(key="steps").set_value(16).run()
    assert all(len(array(d["x"])) == 17 for d in chart(at, "curves")["data"])
    end_blur = array(chart(at, "curves")["data"][0]["y"])[-1]
    at.radio(key="baseline").set_value("zeros").run()
    assert array(chart(at, "curves")["data"][0]["y"])[-1] != end_blur
    at.radio(key="baseline").set_value("impute").run()
    assert_clean(at)
    at.multiselect(key="methods").set_value(["occlusion"]).run()
    assert_clean(at)
    assert [d["name"] for d in chart(at, "curves")["data"] if d["showlegend"]] == [
        "mask M of stage3.1 (mean over channels)", "Occlusion", "random order (pixel noise) (seed 0)",
        "random smooth order (like the mask) (seed 0)"]
    assert at.query_params["baseline"] == "impute" and at.query_params["steps"] == "16"


def test_faithfulness_auc_is_the_library_auc(env):
    at = start("pages/faithfulness.py", {**FAST, "methods": "gradcam"})
    model, card, x = model_and_input(env, "attention56_mixed_arl")
    target = int(model(x).argmax())
    cam = analysis.grad_cam(model, x, target).map
    curves = analysis.faithfulness(model, x, {"gradcam": cam}, target, steps=8)
    auc = table(at).set_index("map")
    assert auc.loc["Grad-CAM", "deletion AUC (lower is better)"] == pytest.approx(curves["gradcam"].deletion_auc,
                                                                                   rel=1e-4)
    pixel = [analysis.faithfulness(model, x, {}, target, steps=8, seed=seed)["random"].insertion_auc
             for seed in range(3)]
    assert auc.loc["random order (pixel noise): mean of 3", "insertion AUC (higher is better)"] == pytest.approx(
        np.mean(pixel), rel=1e-4)


def test_faithfulness_shows_the_dataset_tests(env, toy_report, monkeypatch):
    monkeypatch.setenv("RESATTN_REPORTS", str(toy_report))
    at = start("pages/faithfulness.py", {**FAST, "baseline": "impute"})
    assert_clean(at)
    shown = table(at, 2)
    # the orders in words, not the CSV's ids
    assert set(shown["order"]) == {"the mask of stage3.1 (mean over channels)", "|IG|", "signed IG",
                                   "Grad-CAM at the last stage", "Occlusion", "random order (pixel noise)",
                                   "random smooth order (like stage3.1's mask)"}
    text = " ".join(m.value for m in at.markdown)
    assert "- The mask of stage3.1 (mean over channels) is " in text
    assert "random smooth order (like stage3.1's mask)" in text and "Holm-corrected p" in text
    assert "mask:stage3.1" not in text and "random_smooth:" not in text and "random_pixel" not in text
    at.radio(key="baseline").set_value("zeros").run()
    assert any("blurred and the imputed fills" in i.value for i in at.info)


# ----------------------------------------------------------------------------- dataset

def test_dataset_page_on_a_folder_computes_on_request_then_reads_the_cache(env, image_folder):
    query = {"source": "folder", "folder": str(image_folder)}
    at = start("pages/dataset.py", query)
    assert_clean(at)
    assert not charts(at)  # nothing is computed before the button
    assert any("7 images ready" in i.value for i in at.info)
    at.button(key="ds_compute").click().run()
    assert_clean(at)
    grid = chart(at, "class_means")
    headers = [a["text"] for a in grid["layout"]["annotations"] if a["text"].startswith("<b>")]
    assert headers[:2] == ["<b>tench</b><br>3 images", "<b>church</b><br>3 images"]
    assert any(a["text"] == "none" for a in grid["layout"]["annotations"])  # parachute, golf ball
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Images"] == "7"
    captions = thumbnails(at)
    assert len(captions) == 2 * 7  # most and least concentrated, 8 at most each, 7 images in all
    most = [float(c.split(" · ")[0]) for c in captions[:7]]
    assert most == sorted(most, reverse=True) and most == [float(c.split(" · ")[0]) for c in captions[7:]][::-1]
    assert sum(c.split(" · ")[1].startswith("? →") for c in captions[:7]) == 1  # not_a_class: label unknown
    # a fresh session finds the statistics on disk at once: the page's cache path is the library's
    again = start("pages/dataset.py", query)
    assert_clean(again)
    assert chart(again, "class_means")["layout"]["annotations"] == grid["layout"]["annotations"]
    assert again.button(key="ds_compute").disabled


def test_dataset_filters_change_the_output(env, image_folder):
    at = start("pages/dataset.py", {"source": "folder", "folder": str(image_folder)})
    at.button(key="ds_compute").click().run()
    every = chart(at, "class_means")
    at.radio(key="groupby").set_value("prediction").run()
    assert_clean(at)
    grouped = chart(at, "class_means")
    assert grouped["layout"]["annotations"] != every["layout"]["annotations"]
    counts = [int(a["text"].split("<br>")[-1].split()[0]) for a in grouped["layout"]["annotations"]
              if a["text"].startswith("<b>")]
    assert sum(counts) == 7  # every image has a prediction
    shown = {}
    for selection in ("correct", "wrong"):
        at.radio(key="select").set_value(selection).run()
        assert_clean(at)
        assert charts(at) or any("No " in i.value for i in at.info)
        shown[selection] = thumbnails(at)
        marks = {c[-1] for c in shown[selection]}
        assert marks <= ({"✓"} if selection == "correct" else {"✗"})
    assert len(shown["correct"]) + len(shown["wrong"]) == 2 * 6  # the 6 images with a known class
    assert at.query_params["select"] == "wrong" and at.query_params["groupby"] == "prediction"


def test_dataset_page_says_how_to_provide_data(env, monkeypatch):
    import resattn.data

    monkeypatch.setattr(resattn.data, "pack_available", lambda *args: False)
    at = start("pages/dataset.py")
    assert_clean(at)
    assert at.radio(key="source").options == ["A folder of images"]
    message = " ".join(i.value for i in at.info)
    assert "ImageFolder tree" in message and "RESATTN_DATA" in message


def test_a_bad_folder_shows_an_error_and_the_page_keeps_working(env, tmp_path, image_folder):
    at = start("pages/dataset.py", {"source": "folder", "folder": str(tmp_path / "nowhere")})
    assert_clean(at)
    assert any("No image folder" in e.value for e in at.error)
    (tmp_path / "empty").mkdir()
    at.text_input(key="folder").set_value(str(tmp_path / "empty")).run()
    assert any("No images in" in e.value for e in at.error)
    at.text_input(key="folder").set_value(str(image_folder)).run()
    assert_clean(at)
    assert not at.error and at.button(key="ds_compute")


def test_dataset_page_with_channel_attention(env, image_folder):
    """Channel attention's signed masks get colour scales centred at 0."""
    query = {"ckpt": "attention56_channel_arl", "source": "folder", "folder": str(image_folder)}
    at = start("pages/dataset.py", query)
    at.button(key="ds_compute").click().run()
    assert_clean(at)
    layout = chart(at, "class_means")["layout"]
    axes = [layout[name] for name in layout if name.startswith("coloraxis")]
    assert len(axes) == 3 and all(axis["cmid"] == 0 and axis["cmin"] == -axis["cmax"] for axis in axes)
    assert len(list(Path(env_cache()).glob("mask-stats-*.npz"))) == 1


def test_the_pages_cache_path_is_where_the_library_caches(tmp_path, monkeypatch, image_folder):
    """ui.analysis_cache finds statistics without computing them by rebuilding the library's
    cache key; also for a checkpoint whose name has a dot (attention56_w0.125)."""
    from resattn.analysis.dataset import images_hash, load_images, mask_statistics
    from ui import analysis_cache, cache

    monkeypatch.setenv("RESATTN_CACHE", str(tmp_path / "cache"))
    stem = save_toy(tmp_path, "mixed", "arl", name="attention56_w0.125")
    model, card = resattn.load_checkpoint(stem)
    images = load_images(image_folder, classes=card["classes"], size=64)
    entry = cache.Entry(stem.name, str(stem), (1, 2), card=card)
    assert not analysis_cache.statistics_path(entry, images_hash(images), 64).is_file()
    mask_statistics(model, card, images, checkpoint=stem, map_size=analysis_cache.MAP_SIZE, show_progress=False)
    assert analysis_cache.statistics_path(entry, images_hash(images), 64).is_file()
    assert not analysis_cache.statistics_path(entry, images_hash(images), 32).is_file()


@pytest.mark.skipif(not resattn.data.pack_available(), reason="the Imagenette pack is not here")
def test_dataset_page_on_the_imagenette_pack(env):
    at = start("pages/dataset.py", {"source": "pack", "limit": "10"})
    assert_clean(at)
    at.button(key="ds_compute").click().run()
    assert_clean(at)
    assert {m.label: m.value for m in at.metric}["Images"] == "10"
    assert charts(at)


# ----------------------------------------------------------------------------- figure builders

def test_map_panel_scales():
    signed = np.array([[-1.0, 0.5], [2.0, 0.0]])
    panel = viz.map_panel("IG", signed)
    assert (panel.zmin, panel.zmax, panel.zmid) == (-2.0, 2.0, 0.0) and panel.colorscale == viz.FEATURE_SCALE
    positive = viz.map_panel("M", np.array([[0.2, 0.4], [0.3, 0.25]]))
    assert (positive.zmin, positive.zmax) == pytest.approx((0.2, 0.4)) and positive.zmid is None
    normalised = viz.map_panel("IG", signed, normalise=True)
    np.testing.assert_allclose(normalised.z, signed / 2.0)
    np.testing.assert_array_equal(normalised.raw, signed)
    assert (normalised.zmin, normalised.zmax) == (-1.0, 1.0)


def test_every_builder_exports_png_and_svg():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    fraction = np.linspace(0, 1, 5)
    figures = [
        viz.panels_figure([viz.map_panel("M", rng.random((16, 16))), viz.map_panel("IG", rng.normal(size=(16, 16)))],
                           image=image),
        viz.panels_figure(viz.before_after_panels("stage2.1", rng.random((4, 4)), rng.random((4, 4)))),
        viz.top5_change_figure([{"name": "tench", "before": 0.6, "after": 0.2},
                               {"name": "church", "before": 0.3, "after": 0.7}]),
        viz.mask_change_figure({"stage1.1": 0.0, "stage2.1": 0.3, "stage3.1": 0.1}, intervened="stage2.1"),
        viz.curves_figure({"mask:stage2.1": (fraction, 1 - fraction, fraction), "random": (fraction, fraction, fraction)}),
        viz.class_means_figure(rng.random((3, 2, 4, 4)), [2, 0, 1], ["tench", "English springer", "church"],
                              ["stage1.1", "stage2.1"]),
        viz.concentration_figure(rng.random((5, 2)), ["stage1.1", "stage2.1"],
                                {"correct": np.array([1, 1, 0, 0, 1], bool), "wrong": np.array([0, 0, 1, 1, 0], bool)}),
    ]
    for fig in figures:
        assert isinstance(fig, go.Figure)
        assert figure_bytes(fig, "png").startswith(b"\x89PNG")
        assert b"<svg" in figure_bytes(fig, "svg")[:500]


def test_class_means_figure_marks_classes_without_images():
    means = np.full((2, 1, 4, 4), np.nan, dtype=np.float32)
    means[0, 0] = np.arange(16).reshape(4, 4)
    fig = viz.class_means_figure(means, [1, 0], ["tench", "church"], ["stage1.1"])
    heat = [d for d in fig.data if d.type == "heatmap" and d.coloraxis]
    assert len(heat) == 1 and heat[0].hovertemplate.startswith("tench")
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 15
    assert any(a.text == "none" for a in fig.layout.annotations)
    # no all-NaN placeholder heatmap: in Streamlit's plotly.js one blanks every heatmap of the figure
    assert all(np.isfinite(np.asarray(d.z, dtype=float)).any() for d in fig.data if d.type == "heatmap")
