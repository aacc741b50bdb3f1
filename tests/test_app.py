"""The Streamlit app through streamlit.testing.v1.AppTest: every page renders with every
checkpoint, widgets change what is drawn, display options reuse the cached trace, and bad
input (uploads, checkpoint files, a missing folder) shows st.error while the rest works.

The checkpoints are tiny random-weight Attention-56 models (width 0.125, 64 px input) whose
cards say so; they are written once per session by the `toy_zoo` fixture."""
from __future__ import annotations

import io
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import build_tiny, count_hooks
from PIL import Image
from streamlit.testing.v1 import AppTest

import resattn
from resattn.checkpoints import model_card

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = ["pages/overview.py", "pages/explorer.py", "pages/compare.py", "pages/how_it_works.py"]
CLASSES = ["tench", "church", "parachute", "golf ball"]
ZOO = [("mixed", "arl"), ("channel", "arl"), ("spatial", "arl"), ("mixed", "nal"), ("none", "arl")]
TIMEOUT = 120


def save_toy(folder: Path, attention: str, residual: str, seed: int = 0, name: str | None = None) -> Path:
    model = build_tiny("attention56", attention=attention, residual=residual, width=0.125,
                       num_classes=len(CLASSES), seed=seed)
    card = model_card(model, classes=CLASSES, input_size=64, train_size=64,
                      weights="random weights, for tests (not trained)", metrics={},
                      recipe={"command": "tests/test_app.py", "epochs": 0})
    stem = folder / (name or f"attention56_{attention}_{residual}")
    resattn.save_checkpoint(stem, model, card)
    return stem


@pytest.fixture
def pages_folder_mode():
    """Requested by tests that must see Streamlit's pages/-folder behaviour (see below)."""


@pytest.fixture(autouse=True)
def navigation_v2(request, monkeypatch):
    """AppTest resets Streamlit's "app uses a pages/ folder" flag before every run, so each
    rerun after the first would execute the page file alone, without app.py (the old
    multipage layout; app.py then detours through itself, see ui.state.current). A real
    server clears that flag for good at the first st.navigation call; the tests do the
    same, except those that request `pages_folder_mode`."""
    if "pages_folder_mode" in request.fixturenames:
        return
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.fixture(scope="session")
def toy_zoo(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("zoo")
    for seed, (attention, residual) in enumerate(ZOO):
        save_toy(folder, attention, residual, seed)
    return folder


@pytest.fixture
def zoo_env(toy_zoo, monkeypatch) -> Path:
    monkeypatch.setenv("RESATTN_CHECKPOINTS", str(toy_zoo))
    return toy_zoo


def png_bytes(seed: int, size: int = 96) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def start(page: str | None = None, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if query:
        at.query_params.update(query)
    at.run()
    if page and page != PAGES[0]:
        at.switch_page(page).run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def values(trace: dict) -> np.ndarray:
    """A trace's z as an array (plotly sends arrays base64-encoded as {dtype, bdata, shape})."""
    import base64

    z = trace["z"]
    if isinstance(z, dict):
        shape = tuple(int(n) for n in str(z["shape"]).split(","))
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    return np.asarray(z, dtype=float)


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def chart(at: AppTest, key: str) -> dict:
    for c in at.get("plotly_chart"):
        if c.proto.id and c.proto.id.endswith(key) or key in (c.proto.id or ""):
            return json.loads(c.proto.spec)
    raise KeyError(f"no chart with key {key}; ids: {[c.proto.id for c in at.get('plotly_chart')]}")


def use_upload(at: AppTest, name: str, data: bytes, mime: str = "image/png") -> AppTest:
    at.radio(key="_source").set_value("Upload").run()
    at.file_uploader(key="_upload").set_value((name, data, mime)).run()
    return at


# ----------------------------------------------------------------------------- every page, every checkpoint

@pytest.mark.parametrize("attention,residual", ZOO)
def test_every_page_renders_with_each_checkpoint(zoo_env, attention, residual):
    at = start(query={"ckpt": f"attention56_{attention}_{residual}"})
    for page in PAGES:
        if page != PAGES[0]:
            at.switch_page(page).run()
        assert_clean(at)
        assert not at.error, [e.value for e in at.error]
        assert at.selectbox(key="ckpt").value == f"attention56_{attention}_{residual}"
        assert charts(at), f"{page} drew no chart"


def test_a_page_run_without_app_py_goes_through_app_py(zoo_env, pages_folder_mode):
    """A link to a page as a fresh server's first request: Streamlit runs the page file on
    its own; the page detours through app.py and comes back with the sidebar and query."""
    at = start(query={"ckpt": "attention56_spatial_arl"})
    for page, title in zip(PAGES[1:], ("Module explorer", "Compare attention types",
                                       "How a Residual Attention Network works")):
        at.switch_page(page).run()
        assert_clean(at)
        assert at.title[0].value == title
        assert at.selectbox(key="ckpt").value == "attention56_spatial_arl"
        assert charts(at)


def test_default_view_needs_no_clicks(zoo_env):
    at = start()
    assert_clean(at)
    assert at.selectbox(key="ckpt").value == "attention56_mixed_arl"  # preferred when present
    assert at.query_params["img"] == "sample:chelsea"
    assert at.query_params["ckpt"] == "attention56_mixed_arl"
    top5 = chart(at, "predictions")["data"][0]
    assert len(top5["y"]) == 4  # 4 classes, top-5 clipped
    assert sorted(top5["y"]) == sorted(CLASSES)
    assert any("not trained" in w.value for w in at.warning)  # the card says random weights


def test_a_link_reopens_the_same_view(zoo_env):
    query = {"ckpt": "attention56_spatial_arl", "module": "stage2.1", "reduce": "max", "scale": "global",
             "opacity": "0.3", "img": "sample:coffee"}
    at = start("pages/explorer.py", query)
    assert_clean(at)
    assert at.select_slider(key="module").value == "stage2.1"
    assert at.radio(key="reduce").value == "max"
    assert at.radio(key="scale").value == "global"
    assert at.slider(key="opacity").value == pytest.approx(0.3)
    assert at.selectbox(key="_gallery").value == "sample:coffee"
    for name, value in query.items():
        assert at.query_params[name] == value


def test_malformed_link_values_fall_back_to_defaults(zoo_env):
    at = start("pages/explorer.py", {"ckpt": "no_such_model", "module": "stage9.9", "reduce": "median",
                                     "opacity": "lots", "img": "sample:nothing"})
    assert_clean(at)
    assert at.selectbox(key="ckpt").value == "attention56_mixed_arl"
    assert at.select_slider(key="module").value == "stage1.1"
    assert at.radio(key="reduce").value == "mean"
    assert at.slider(key="opacity").value == pytest.approx(0.5)


def test_uploaded_image_in_a_link_says_it_cannot_travel(zoo_env):
    at = start(query={"img": "upload"})
    assert_clean(at)
    assert any("cannot travel in a link" in i.value for i in at.info)
    assert at.selectbox(key="_gallery").value == "sample:chelsea"


# ----------------------------------------------------------------------------- widgets change the output

def test_explorer_display_options_change_figures_without_a_new_forward_pass(zoo_env, monkeypatch):
    calls = []
    real_trace = resattn.trace

    def counting_trace(*args, **kwargs):
        calls.append(1)
        return real_trace(*args, **kwargs)

    monkeypatch.setattr(resattn, "trace", counting_trace)
    at = start()
    calls.clear()
    use_upload(at, "noise.png", png_bytes(seed=12345))  # an image no other test traced: a fresh cache key
    at.switch_page("pages/explorer.py").run()
    assert_clean(at)
    assert len(calls) == 1
    panels = chart(at, "panels")
    overlay = chart(at, "overlay")

    at.radio(key="reduce").set_value("max").run()
    assert chart(at, "panels")["data"][2]["z"] != panels["data"][2]["z"]
    at.slider(key="opacity").set_value(0.9).run()
    assert overlay["data"][1]["opacity"] == pytest.approx(0.5)
    assert chart(at, "overlay")["data"][1]["opacity"] == pytest.approx(0.9)
    at.radio(key="reduce").set_value("mean").run()
    before = chart(at, "panels")["data"][2]  # the mask; Attention-56 has one module per stage
    at.radio(key="scale").set_value("global").run()
    after = chart(at, "panels")["data"][2]
    assert after["zmin"] <= values(before).min() and after["zmax"] >= values(before).max()
    assert (before["zmin"], before["zmax"]) != (after["zmin"], after["zmax"])
    np.testing.assert_array_equal(values(before), values(after))  # same map, other colour range
    at.radio(key="reduce").set_value("channel").run()
    at.number_input(key="channel").set_value(3).run()
    at.radio(key="tensor").set_value("trunk").run()
    assert_clean(at)
    assert len(calls) == 1, "a display option ran the network again"


def test_explorer_steps_through_modules(zoo_env):
    at = start("pages/explorer.py")
    assert at.select_slider(key="module").value == "stage1.1"
    at.button(key="next_module").click().run()
    assert at.select_slider(key="module").value == "stage2.1"
    at.button(key="prev_module").click().run()
    at.button(key="prev_module").click().run()
    assert at.select_slider(key="module").value == "stage3.1"  # wraps around
    assert "stage3.1" in at.subheader[0].value


def test_overview_button_opens_the_module_in_the_explorer(zoo_env):
    at = start()
    at.button(key="open_stage2_1").click().run()
    assert_clean(at)
    assert at.title[0].value == "Module explorer"
    assert at.select_slider(key="module").value == "stage2.1"


def test_overview_diagram_has_one_clickable_block_per_module(zoo_env):
    at = start()
    diagram = chart(at, "diagram")
    assert diagram["data"][0]["customdata"] == ["stage1.1", "stage2.1", "stage3.1"]
    assert len(diagram["layout"]["images"]) == 3  # one mask thumbnail per module


def test_changing_the_checkpoint_changes_the_prediction_chart(zoo_env):
    at = start()
    before = chart(at, "predictions")["data"][0]["x"]
    at.selectbox(key="ckpt").set_value("attention56_channel_arl").run()
    assert_clean(at)
    assert chart(at, "predictions")["data"][0]["x"] != before


def test_sample_gallery_choice_changes_the_image(zoo_env):
    at = start()
    before = chart(at, "predictions")["data"][0]["x"]
    at.selectbox(key="_gallery").set_value("sample:rocket").run()
    assert at.query_params["img"] == "sample:rocket"
    assert chart(at, "predictions")["data"][0]["x"] != before


def test_gallery_buttons_choose_the_image(zoo_env):
    at = start()
    at.button(key="use_sample:astronaut").click().run()
    assert_clean(at)
    assert at.selectbox(key="_gallery").value == "sample:astronaut"
    assert at.query_params["img"] == "sample:astronaut"


def test_explorer_reductions_all_draw(zoo_env):
    at = start("pages/explorer.py")
    seen = set()
    for mode in ("mean", "max", "channel", "topk", "pca"):
        at.radio(key="reduce").set_value(mode).run()
        assert_clean(at)
        seen.add(values(chart(at, "panels")["data"][2]).tobytes())
    assert len(seen) == 5  # every reduction gives a different mask map
    # top-1 by energy is the first tile of the channel grid, which is sorted by energy
    at.radio(key="reduce").set_value("topk").run()
    at.slider(key="k").set_value(1).run()
    top1 = [values(d) for d in chart(at, "panels")["data"]]  # X, T, M, H
    strongest = int(chart(at, "grid")["layout"]["annotations"][0]["text"].split()[1])
    at.radio(key="reduce").set_value("channel").run()
    at.number_input(key="channel").set_value(strongest).run()
    assert_clean(at)
    for a, b in zip(top1, [values(d) for d in chart(at, "panels")["data"]]):
        np.testing.assert_array_equal(a, b)  # the mask's strongest channel, in every tensor


def test_compare_page_puts_all_five_models_side_by_side(zoo_env):
    at = start("pages/compare.py")
    assert_clean(at)
    grid = chart(at, "compare_grid")
    headers = [a["text"] for a in grid["layout"]["annotations"] if a["text"].startswith("<b>")]
    assert [h.split("<br>")[0] for h in headers] == ["<b>mixed · ARL</b>", "<b>channel · ARL</b>",
                                                     "<b>spatial · ARL</b>", "<b>mixed · NAL</b>",
                                                     "<b>no attention</b>"]
    heatmaps = [d for d in grid["data"] if d["type"] == "heatmap"]
    assert len(heatmaps) == 4 * 3  # no heatmap for the baseline's missing masks
    # Default: one scale per module (row) and activation family, shared by the models in the row.
    by_axis: dict[str, list] = {}
    for d in heatmaps:
        by_axis.setdefault(d["coloraxis"], []).append(values(d))
    assert len(by_axis) == 3 * 2  # three rows x (sigmoid masks, channel masks)
    for axis, maps in by_axis.items():
        spec = grid["layout"][axis]
        assert spec["cmin"] == pytest.approx(min(float(np.nanmin(z)) for z in maps), rel=1e-3, abs=1e-6)
        assert spec["cmax"] == pytest.approx(max(float(np.nanmax(z)) for z in maps), rel=1e-3, abs=1e-6)
        assert len(maps) in (1, 3)  # channel alone, or mixed + spatial + mixed NAL
    at.radio(key="cmpscale").set_value("family").run()
    grid = chart(at, "compare_grid")
    heatmaps = [d for d in grid["data"] if d["type"] == "heatmap"]
    assert {d["coloraxis"] for d in heatmaps} == {"coloraxis", "coloraxis2"}  # channel has its own scale
    assert grid["layout"]["coloraxis"]["cmin"] == 0 and grid["layout"]["coloraxis"]["cmax"] == 1
    assert at.query_params["cmpscale"] == "family"
    stats = chart(at, "stats")
    assert {d["name"] for d in stats["data"]} == {"mixed · ARL", "channel · ARL", "spatial · ARL", "mixed · NAL"}
    at.radio(key="show").set_value("output").run()
    grid = chart(at, "compare_grid")
    assert len([d for d in grid["data"] if d["type"] == "heatmap"]) == 5 * 3  # the baseline has H


def test_compare_page_names_missing_models(tmp_path, monkeypatch):
    save_toy(tmp_path, "mixed", "arl")
    save_toy(tmp_path, "mixed", "nal", seed=1)
    monkeypatch.setenv("RESATTN_CHECKPOINTS", str(tmp_path))
    at = start("pages/compare.py")
    assert_clean(at)
    note = " ".join(i.value for i in at.info)
    assert "channel · ARL" in note and "spatial · ARL" in note and "no attention" in note
    assert charts(at)


def test_how_it_works_measures_arl_and_nal(zoo_env):
    at = start("pages/how_it_works.py")
    assert_clean(at)
    assert len(at.latex) >= 3
    gain = chart(at, "gain")
    bars = {d["name"]: d["y"] for d in gain["data"] if d["type"] == "bar"}
    assert set(bars) == {"mixed · ARL", "mixed · NAL"}
    assert all(1.0 <= g <= 2.0 for g in bars["mixed · ARL"])  # H = (1+M)T with M in (0,1)
    assert all(0.0 <= g <= 1.0 for g in bars["mixed · NAL"])  # H = MT
    maps = chart(at, "activation_maps")
    assert len(maps["data"]) == 3
    at.selectbox(key="module").set_value("stage3.1").run()
    assert chart(at, "activation_maps")["data"][0]["z"] != maps["data"][0]["z"]


# ----------------------------------------------------------------------------- bad input

def test_a_corrupt_upload_shows_an_error_and_the_pages_keep_working(zoo_env):
    at = start()
    use_upload(at, "broken.png", b"\x89PNG\r\n\x1a\n this is not really a png")
    assert_clean(at)
    assert any("choose" in e.value.lower() for e in at.error), [e.value for e in at.error]
    assert charts(at)
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert_clean(at)
        assert charts(at)


def test_a_huge_upload_is_refused_with_what_to_do(zoo_env):
    buffer = io.BytesIO()
    Image.new("RGB", (8000, 6000)).save(buffer, format="PNG")  # 48 MP, over the 40 MP limit
    at = start()
    use_upload(at, "huge.png", buffer.getvalue())
    assert_clean(at)
    assert any("megapixels" in e.value and "resize" in e.value for e in at.error)


def test_a_good_upload_is_used_and_kept_out_of_the_link(zoo_env):
    at = start()
    before = chart(at, "predictions")["data"][0]["x"]
    use_upload(at, "noise.png", png_bytes(seed=7))
    assert_clean(at)
    assert not at.error
    assert at.query_params["img"] == "upload"
    assert chart(at, "predictions")["data"][0]["x"] != before


def test_a_bad_checkpoint_file_disables_only_that_entry(tmp_path, monkeypatch, reliability):
    good = save_toy(tmp_path, "mixed", "arl")
    truncated = save_toy(tmp_path, "spatial", "arl", name="truncated")
    data = truncated.with_suffix(".safetensors").read_bytes()
    truncated.with_suffix(".safetensors").write_bytes(data[:100])
    shutil.copy(good.with_suffix(".json"), tmp_path / "orphan_card.json")  # a card without weights
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    monkeypatch.setenv("RESATTN_CHECKPOINTS", str(tmp_path))
    at = start()
    assert_clean(at)
    assert at.selectbox(key="ckpt").options == ["attention56_mixed_arl — mixed · ARL · accuracy unknown"]
    reasons = " ".join(e.value for e in at.error)
    reliability("checkpoints", "app: RESATTN_CHECKPOINTS folder with a truncated file, a card without weights "
                "and garbage beside a good checkpoint", "only the bad entries disabled, each with st.error",
                f"picker: {at.selectbox(key='ckpt').options}; st.error: {reasons}")
    for name in ("truncated", "orphan_card", "garbage"):
        assert name in reasons
    assert charts(at)


def test_weights_that_do_not_fit_their_card_fail_once_then_leave_the_picker(tmp_path, monkeypatch):
    save_toy(tmp_path, "mixed", "arl")
    wrong = save_toy(tmp_path, "channel", "arl", name="attention56_wrong_width")
    card = json.loads(wrong.with_suffix(".json").read_text())
    card["width"] = 0.25  # the weights are width 0.125: loading must fail, the header reads fine
    wrong.with_suffix(".json").write_text(json.dumps(card))
    monkeypatch.setenv("RESATTN_CHECKPOINTS", str(tmp_path))
    at = start(query={"ckpt": "attention56_wrong_width"})
    assert_clean(at)
    assert any("could not be used" in e.value and "Choose another checkpoint" in e.value for e in at.error)
    at.run()
    assert_clean(at)
    assert [o.split(" — ")[0] for o in at.selectbox(key="ckpt").options] == ["attention56_mixed_arl"]
    assert charts(at)


@pytest.mark.parametrize("page", PAGES)
def test_a_missing_checkpoint_folder_explains_what_to_do(tmp_path, monkeypatch, page):
    monkeypatch.setenv("RESATTN_CHECKPOINTS", str(tmp_path / "nowhere"))
    at = start(page)
    assert_clean(at)
    message = " ".join(e.value for e in at.error)
    assert "No checkpoint folder" in message and "RESATTN_CHECKPOINTS" in message and "train_zoo.sh" in message


def test_an_empty_checkpoint_folder_explains_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("RESATTN_CHECKPOINTS", str(tmp_path))
    for page in PAGES:
        at = start(page)
        assert_clean(at)
        assert any("No usable checkpoint" in e.value for e in at.error)


# ----------------------------------------------------------------------------- sessions and caches

def test_sessions_keep_their_own_settings(zoo_env):
    first = start("pages/explorer.py", {"module": "stage3.1", "reduce": "pca"})
    second = start("pages/explorer.py")
    first.run()
    assert first.select_slider(key="module").value == "stage3.1"
    assert first.radio(key="reduce").value == "pca"
    assert second.select_slider(key="module").value == "stage1.1"
    assert second.radio(key="reduce").value == "mean"


def test_eight_threads_tracing_different_images_each_get_their_own_result(zoo_env, reliability):
    """The cached trace function from 8 threads at once (as 8 sessions would call it), each
    with its own image, against the same single-threaded results."""
    from ui import cache

    entry = next(e for e in cache.list_entries(zoo_env) if e.name == "attention56_mixed_arl")
    images = [Image.fromarray(np.random.default_rng(100 + i).integers(0, 255, (64, 64, 3), dtype=np.uint8))
              for i in range(8)]
    keys = [cache.trace_key(entry, "cpu", f"thread-test-{i}-{np.random.default_rng().integers(1e9)}", 64)
            for i in range(8)]
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(8)

    def work(i):
        barrier.wait()
        results[i] = cache.image_trace(keys[i], images[i]).trace.logits[0].numpy()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    model, card = resattn.load_checkpoint(entry.path)
    serial = [model(card.preprocess(image))[0].detach().numpy()
              for image in images]
    same = sum(np.allclose(results[i], serial[i], rtol=1e-4, atol=1e-5) for i in range(8))
    cached_model = cache.inference_model(str(entry.path), entry.stamp, "cpu")  # the model the threads traced
    reliability("concurrency", "8 threads through the app's cached trace function, 8 images",
                "each equals its serial result; no hook left",
                f"{same}/8 equal to serial; {len({r.tobytes() for r in results.values()})} distinct results; "
                f"hooks on the cached model: {count_hooks(cached_model)}")
    assert same == 8
    assert len({r.tobytes() for r in results.values()}) == 8
    assert count_hooks(cached_model) == 0


def test_the_flagship_opens_when_present_then_the_zoo_mixed_arl():
    from ui.state import default_checkpoint

    assert default_checkpoint(["attention56_mixed_arl", "attention56_mixed_arl_e100", "x"]) == \
        "attention56_mixed_arl_e100"
    assert default_checkpoint(["a", "attention56_mixed_arl"]) == "attention56_mixed_arl"
    assert default_checkpoint(["b", "a"]) == "b"
