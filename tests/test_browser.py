"""End to end: `streamlit run app.py` on a free localhost port, driven by Playwright in the
system Chromium. Visits every page through the sidebar navigation, uploads an image, opens
a module from the overview, steps with the arrow keys; checks that charts render and no
exception box appears; saves full-page screenshots under test-artifacts/screenshots/.

Uses the shipped checkpoints/ when it has any, else tiny random-weight toy checkpoints.
Skipped when /usr/bin/chromium is missing, except under CI=true, where that fails."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resattn_app.serving import ServerNotHealthy, free_port, wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PAGES = [("Overview", "overview", "Look inside a Residual Attention Network"),
         ("Module explorer", "explorer", "Module explorer"),
         ("Compare attention types", "compare", "Compare attention types"),
         ("How it works", "how_it_works", "How a Residual Attention Network works")]
WIDTH = 1400

pytestmark = pytest.mark.browser


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def checkpoint_folder(tmp_path_factory) -> Path:
    shipped = ROOT / "checkpoints"
    if any(shipped.glob("*.safetensors")):
        return shipped
    from test_app import ZOO, save_toy

    folder = tmp_path_factory.mktemp("browser_zoo")
    for seed, (attention, residual) in enumerate(ZOO):
        save_toy(folder, attention, residual, seed)
    return folder


class Server(str):
    """The server's URL (a str, so f"{server}/explorer" works), and its hook probe."""

    def __new__(cls, url: str, request: Path, reply: Path):
        self = super().__new__(cls, url)
        self.request, self.reply = request, reply
        return self

    def hooks(self, timeout: float = 30.0) -> dict:
        """{'hooks', 'modules', 'models'} counted inside the server process right now."""
        import json

        self.reply.unlink(missing_ok=True)
        self.request.touch()
        deadline = time.time() + timeout
        while not self.reply.exists():
            if time.time() > deadline:
                raise AssertionError("the server's probe did not answer")
            time.sleep(0.1)
        return json.loads(self.reply.read_text())


@pytest.fixture(scope="module")
def server(checkpoint_folder, tmp_path_factory):
    _require_chromium()
    port = free_port()
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    # A fresh results cache: the dataset page must not find statistics (and photos of the
    # Imagenette pack to show) from earlier runs, so no screenshot can contain them.
    probe = tmp_path_factory.mktemp("probe")
    env = {**os.environ, "RESATTN_CHECKPOINTS": str(checkpoint_folder), "PYTHONPATH": str(ROOT),
           "RESATTN_CACHE": str(tmp_path_factory.mktemp("resattn_cache")),
           "RESATTN_PROBE_REQUEST": str(probe / "request"), "RESATTN_PROBE_REPLY": str(probe / "reply.json")}
    with open(log_path, "w") as log:
        # tests/serve_app.py is `streamlit run` plus a probe that counts the server's hooks.
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "serve_app.py"), "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
             "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_healthy(url, process, timeout=120)
        except ServerNotHealthy as exc:
            pytest.fail(f"streamlit did not start ({exc}):\n{log_path.read_text()[-3000:]}")
        yield Server(url, probe / "request", probe / "reply.json")
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": WIDTH, "height": 900})
    tab = context.new_page()
    yield tab
    context.close()


def settle(tab, timeout: float = 180.0) -> None:
    """Wait until the app has finished running and drawing: a title, no spinner, progress
    bar or loading skeleton, and every plotly chart drawn; stable for three checks."""
    stable, start = 0, time.time()
    while time.time() - start < timeout:
        busy = tab.locator('[data-testid="stSpinner"], [data-testid="stProgress"], [data-testid="stSkeleton"], '
                           '[data-testid="stStatusWidget"], [data-stale="true"]').count()
        charts = tab.locator('[data-testid="stPlotlyChart"]').count()
        drawn = tab.locator('[data-testid="stPlotlyChart"]:has(.main-svg)').count()
        ready = tab.locator("h1").count() > 0 and busy == 0 and drawn >= charts
        stable = stable + 1 if ready else 0
        if stable >= 3:
            return
        time.sleep(0.5)
    raise AssertionError("the app did not finish drawing in time")


def check_page(tab, title: str) -> None:
    """A titled page has drawn charts. Between the title and the first chart a busy server can
    leave a moment with no spinner yet (settle then sees nothing to wait for), so wait for the
    first drawn chart, as a user would, then for the page to settle."""
    assert tab.locator("h1").first.inner_text().strip() == title
    tab.wait_for_function("() => document.querySelector('[data-testid=\"stPlotlyChart\"] .main-svg') !== null",
                          timeout=180_000)
    settle(tab)
    assert tab.locator('[data-testid="stException"]').count() == 0, tab.locator(
        '[data-testid="stException"]').first.inner_text()
    charts = tab.locator('[data-testid="stPlotlyChart"]')
    assert charts.count() > 0
    for i in range(charts.count()):
        chart = charts.nth(i)
        assert chart.locator(".main-svg").count() > 0
        box = chart.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100


def screenshot(tab, name: str) -> Path:
    """The whole page (Streamlit scrolls inside its main block, so the viewport is grown to
    the content's height first)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = tab.evaluate("() => Math.max(...['[data-testid=stMainBlockContainer]', '[data-testid=stSidebarContent]']"
                          ".map(s => document.querySelector(s)).filter(e => e).map(e => e.scrollHeight + 120))")
    tab.set_viewport_size({"width": WIDTH, "height": int(min(max(height, 900), 12000))})
    settle(tab, 60)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    tab.set_viewport_size({"width": WIDTH, "height": 900})
    return path


def nav(tab, label: str) -> None:
    tab.locator('[data-testid="stSidebarNav"]').get_by_text(label, exact=True).click()


def wait_title(tab, title: str) -> None:
    tab.wait_for_function("t => { const h = document.querySelector('h1'); return h && h.innerText.trim() === t; }",
                          arg=title, timeout=120_000)


def upload_file(tab, server, path: Path):
    """Open the app, choose "Upload" in the sidebar and give it `path`; returns the sidebar."""
    tab.goto(server)
    settle(tab)
    sidebar = tab.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("Upload", exact=True).click()
    sidebar.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    return sidebar


def test_every_page_through_the_navigation(server, page):
    """Every entry of the sidebar navigation (the analysis pages too), clicked in turn."""
    page.goto(server)
    settle(page)
    links = page.locator('[data-testid="stSidebarNav"] a')
    entries = [(links.nth(i).inner_text().strip().split("\n")[-1].strip(), links.nth(i).get_attribute("href"))
               for i in range(links.count())]  # the text starts with the icon's name
    assert [label for label, _ in entries][:len(PAGES)] == [label for label, _, _ in PAGES]
    titles = {label: title for label, _, title in PAGES}
    for label, href in entries[1:] + entries[:1]:
        previous = page.locator("h1").first.inner_text().strip()
        nav(page, label)
        if label in titles:
            wait_title(page, titles[label])
        else:
            page.wait_for_function("t => { const h = document.querySelector('h1'); "
                                   "return h && h.innerText.trim() !== t; }", arg=previous, timeout=120_000)
        settle(page)
        title = page.locator("h1").first.inner_text().strip()
        assert page.locator('[data-testid="stException"]').count() == 0, f"{label}: exception"
        if label in titles:
            check_page(page, titles[label])
        else:  # the analysis pages may wait for a button before drawing: charts shown must be drawn
            charts = page.locator('[data-testid="stPlotlyChart"]')
            for i in range(charts.count()):
                assert charts.nth(i).locator(".main-svg").count() > 0, f"{title}: chart {i} not drawn"
        name = (href or "").rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "overview"
        if name.startswith("127.0.0.1") or name.startswith("localhost"):
            name = "overview"
        assert screenshot(page, name).stat().st_size > 10_000


def test_uploading_an_image(server, page, tmp_path):
    rng = np.random.default_rng(0)
    image = np.zeros((160, 200, 3), dtype=np.uint8)
    image[..., 0] = np.linspace(0, 255, 200, dtype=np.uint8)[None, :]
    image[40:120, 60:140] = rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)
    upload = tmp_path / "generated.png"
    Image.fromarray(image).save(upload)
    upload_file(page, server, upload)
    page.wait_for_function("() => document.body.innerText.includes('on generated.png')", timeout=120_000)
    settle(page)
    check_page(page, PAGES[0][2])
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    screenshot(page, "overview_upload")
    nav(page, "Module explorer")
    wait_title(page, "Module explorer")
    settle(page)
    check_page(page, "Module explorer")


def test_a_bad_upload_shows_an_error_and_the_page_keeps_working(server, page, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    sidebar = upload_file(page, server, bad)
    page.wait_for_selector('[data-testid="stAlertContentError"]', timeout=120_000)
    settle(page)
    text = sidebar.inner_text()
    assert "broken.png" in text and ("choose an image file" in text or "choose another file" in text)
    check_page(page, PAGES[0][2])


@pytest.mark.parametrize("name,data", [
    ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'),
    ("paper.pdf", b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")])
def test_the_uploader_refuses_files_that_are_not_images(server, page, tmp_path, name, data, reliability):
    """An SVG or PDF never reaches the server: the uploader refuses its type and says which
    types it takes; the page goes on showing the sample photo."""
    path = tmp_path / name
    path.write_bytes(data)
    sidebar = upload_file(page, server, path)
    page.wait_for_function("n => document.body.innerText.includes(n)", arg=name, timeout=60_000)
    time.sleep(1)
    settle(page)
    uploader = sidebar.locator('[data-testid="stFileUploader"]').inner_text()
    said = " ".join(uploader.split())
    reliability("images", f"browser upload: {name}", "refused by the uploader before it reaches the server; "
                "the page keeps working",
                f"uploader says: {said}")
    assert "not allowed" in said.lower() or "not supported" in said.lower(), said
    check_page(page, PAGES[0][2])


def test_a_module_opens_in_the_explorer_and_arrow_keys_step(server, page):
    page.goto(server)
    settle(page)
    page.locator(".st-key-open_stage2_1 button").first.click()
    wait_title(page, "Module explorer")
    settle(page)
    assert "stage2.1 · stage 2" in page.locator("h3").first.inner_text()
    page.locator("h1").first.click()  # focus the page, not a widget
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => [...document.querySelectorAll('h3')].some(h => h.innerText.includes('stage3.1'))",
                           timeout=120_000)
    settle(page)
    check_page(page, "Module explorer")
    screenshot(page, "explorer_stage3")


def test_a_copied_link_reopens_the_same_view(server, page):
    page.goto(f"{server}/explorer?module=stage3.1&reduce=max&scale=global&opacity=0.8&img=sample:coffee")
    wait_title(page, "Module explorer")
    page.wait_for_function("() => document.body.innerText.includes('reduction: max over channels')",
                           timeout=120_000)
    settle(page)
    check_page(page, "Module explorer")
    assert "stage3.1 · stage 3" in page.locator("h3").first.inner_text()
    assert "reduction: max over channels" in page.locator("body").inner_text()
    assert "Cup of coffee" in page.locator('[data-testid="stSidebar"]').inner_text()


def test_figures_tensors_and_settings_download(server, page):
    import json

    page.goto(server)
    settle(page)
    page.get_by_text("Export: figures (PNG/SVG), tensors (.npz), settings (JSON)").click()

    def download(key: str) -> bytes:
        with page.expect_download(timeout=120_000) as info:
            page.locator(f".st-key-{key} button").click()
        return Path(info.value.path()).read_bytes()

    assert download("overview_export_0_png").startswith(b"\x89PNG")
    assert b"<svg" in download("overview_export_1_svg")[:500]
    with np.load(io.BytesIO(download("overview_export_npz")), allow_pickle=False) as arrays:
        assert {"logits", "probs", "image", "stage1.1/mask", "stage1.1/trunk"} <= set(arrays.files)
        assert arrays["image"].dtype == np.uint8
    settings = json.loads(download("overview_export_json"))
    assert settings["checkpoint"] and f"ckpt={settings['checkpoint']}" in page.url
    assert f"img={settings['image_id'].replace(':', '%3A')}" in page.url  # the opening photo (ui.samples.default_image)
    assert settings["image_sha256"] and settings["page"] == "overview"
    assert page.locator('[data-testid="stException"]').count() == 0


def test_clicking_a_block_of_the_network_diagram_opens_that_module(server, page):
    page.goto(server)
    settle(page)
    diagram = page.locator('[data-testid="stPlotlyChart"]').nth(1)  # after the predictions chart
    blocks = diagram.locator(".scatterlayer .point")
    assert blocks.count() >= 3
    blocks.nth(blocks.count() - 1).scroll_into_view_if_needed()
    box = blocks.nth(blocks.count() - 1).bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    wait_title(page, "Module explorer")
    settle(page)
    last = page.locator("h3").first.inner_text()
    assert last.startswith("stage3.")
    nav(page, "Overview")  # going back must not bounce to the explorer again
    wait_title(page, PAGES[0][2])
    settle(page)
    time.sleep(2)
    check_page(page, PAGES[0][2])


def test_eight_sessions_at_once_each_see_their_own_result(server, browser, checkpoint_folder, reliability):
    """Eight tabs (separate sessions) load different images and checkpoints at the same
    time; each must show the prediction computed here, in-process, for its own pair."""
    import skimage.data
    import torch

    import resattn
    from ui.samples import SKIMAGE_SAMPLES

    names = sorted(p.stem for p in checkpoint_folder.glob("*.safetensors"))
    samples = list(SKIMAGE_SAMPLES)
    views = [(samples[i % len(samples)], names[i % len(names)]) for i in range(8)]
    expected = {}
    for sample, ckpt in views:
        model, card = resattn.load_checkpoint(checkpoint_folder / ckpt)
        array = getattr(skimage.data, SKIMAGE_SAMPLES[sample][1])()
        array = array[0] if isinstance(array, tuple) else array
        x = card.preprocess(Image.fromarray(array).convert("RGB"))
        with torch.inference_mode():
            probs = torch.softmax(model(x)[0], 0)
        expected[(sample, ckpt)] = f"Prediction: {card['classes'][int(probs.argmax())]} ({float(probs.max()):.0%})"
    contexts = [browser.new_context(viewport={"width": WIDTH, "height": 900}) for _ in views]
    try:
        tabs = [context.new_page() for context in contexts]
        for tab, (sample, ckpt) in zip(tabs, views):
            tab.goto(f"{server}/?img=sample:{sample}&ckpt={ckpt}", wait_until="commit")
        shown, exceptions = {}, 0
        for tab, view in zip(tabs, views):
            settle(tab)
            exceptions += tab.locator('[data-testid="stException"]').count()
            shown[view] = tab.locator("h3").first.inner_text().strip()
        probe = server.hooks()
        same = sum(shown[v] == expected[v] for v in views)
        reliability("concurrency", "8 browser sessions at once against one server, each its own image and "
                    "checkpoint", "each sees its own prediction (as computed serially); no exception; no hook "
                    "left on any model", f"{same}/8 predictions equal to the serial run; {exceptions} exception "
                    f"boxes; server afterwards: {probe['hooks']} hooks on {probe['modules']} torch modules "
                    f"({probe['models']} networks)")
        for tab, view in zip(tabs, views):
            check_page(tab, PAGES[0][2])
            assert shown[view] == expected[view]
            assert SKIMAGE_SAMPLES[view[0]][0] in tab.locator('[data-testid="stSidebar"]').inner_text()
        # Every checkpoint of the folder was one of the views, answered, and equals the serial run.
        assert {ckpt for _, ckpt in views} == set(names)
        assert probe["models"] >= len(names) and probe["hooks"] == 0
    finally:
        for context in contexts:
            context.close()


# ----------------------------------------------------------------------------- camera, devices, gallery, exports
# Issue 15's untested paths. No screenshots here: the gallery and the default photo may show
# Imagenette photos, which must never be stored. Every view opens on a scikit-image photo.

FAKE_CAMERA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
GOTO_MS = 120_000  # a first visit runs the page (model load, trace) before "load" fires


def skimage_photo(name: str) -> Image.Image:
    import skimage.data

    from ui.samples import SKIMAGE_SAMPLES

    array = getattr(skimage.data, SKIMAGE_SAMPLES[name][1])()
    return Image.fromarray(array[0] if isinstance(array, tuple) else array).convert("RGB")


def expected_heading(checkpoint_folder: Path, ckpt: str, image: Image.Image) -> str:
    """The overview's "Prediction: class (p %)" for `image`, computed here, in-process."""
    import torch

    import resattn

    model, card = resattn.load_checkpoint(checkpoint_folder / ckpt)
    x = card.preprocess(image)
    with torch.inference_mode():
        probs = torch.softmax(model(x)[0], 0)
    return f"Prediction: {card['classes'][int(probs.argmax())]} ({float(probs.max()):.0%})"


def download(tab, key: str) -> bytes:
    """Click the download button with widget key `key` and return the file's bytes."""
    with tab.expect_download(timeout=120_000) as info:
        tab.locator(f".st-key-{key} button").click()
    return Path(info.value.path()).read_bytes()


def open_export(tab) -> None:
    tab.get_by_text("Export: figures (PNG/SVG), tensors (.npz), settings (JSON)").click()


def assert_no_error(tab) -> None:
    assert tab.locator('[data-testid="stException"]').count() == 0, tab.locator(
        '[data-testid="stException"]').first.inner_text()
    assert tab.locator('[data-testid="stAlertContentError"]').count() == 0, tab.locator(
        '[data-testid="stAlertContentError"]').first.inner_text()


def fresh_trace_arrays(checkpoint_folder: Path, ckpt: str, view: np.ndarray) -> dict[str, np.ndarray]:
    """resattn.trace, here, of the pixels the app says the network saw (the export's
    `image`: already size x size, so preprocessing resizes nothing): name -> C x h x w."""
    import resattn

    model, card = resattn.load_checkpoint(checkpoint_folder / ckpt)
    assert view.shape == (card["input_size"], card["input_size"], 3)
    tr = resattn.trace(model, card.preprocess(Image.fromarray(view)))
    out = {"logits": tr.logits[0].numpy()}
    for r in tr.modules:
        for which in ("input", "trunk", "mask", "output"):
            if getattr(r, which) is not None:
                out[f"{r.name}/{which}"] = getattr(r, which)[0].numpy()
    return out


def assert_arrays_equal_a_fresh_trace(arrays, checkpoint_folder: Path, ckpt: str) -> int:
    """Every traced tensor of an .npz export equals the fresh trace's (float32; the server
    may sum in another order on more threads, hence the tolerance of a few ulps); returns
    how many tensors were compared."""
    fresh = fresh_trace_arrays(checkpoint_folder, ckpt, arrays["image"])
    compared = 0
    for name in arrays.files:
        if name in fresh:
            np.testing.assert_allclose(arrays[name], fresh[name], rtol=1e-4, atol=1e-5, err_msg=name)
            compared += 1
    return compared


def test_the_camera_takes_a_photo_through_chromiums_fake_device(server, browser, checkpoint_folder):
    """Chromium's fake camera (a generated test pattern, no real device): choosing Camera and
    taking a photo makes it the image; the trace the app exports is of that photo."""
    camera_browser = browser.browser_type.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + FAKE_CAMERA_ARGS)
    try:
        context = camera_browser.new_context(viewport={"width": WIDTH, "height": 900}, permissions=["camera"])
        tab = context.new_page()
        tab.goto(f"{server}/?img=sample:coffee&ckpt=attention56_mixed_arl", timeout=GOTO_MS)
        settle(tab)
        sidebar = tab.locator('[data-testid="stSidebar"]')
        sidebar.get_by_text("Camera", exact=True).click()
        shoot = sidebar.locator('[data-testid="stCameraInputButton"]')
        shoot.wait_for(timeout=60_000)
        tab.wait_for_function("() => { const v = document.querySelector('[data-testid=stCameraInputWebcamStyledBox] "
                              "video'); return v && v.readyState >= 2 && v.videoWidth > 0; }",
                              timeout=60_000)  # the fake stream is playing: a photo can be taken
        shoot.click()
        tab.wait_for_function("() => document.body.innerText.includes('on camera photo')", timeout=120_000)
        settle(tab)
        assert tab.locator("h1").first.inner_text().strip() == PAGES[0][2]
        assert_no_error(tab)
        assert "camera photo" in sidebar.inner_text()
        assert tab.locator("h3").first.inner_text().startswith("Prediction: ")
        open_export(tab)
        with np.load(io.BytesIO(download(tab, "overview_export_npz")), allow_pickle=False) as arrays:
            coffee = skimage_photo("coffee").resize(arrays["image"].shape[:2][::-1])
            assert not np.array_equal(arrays["image"], np.asarray(coffee)), "still the sample photo"
            assert assert_arrays_equal_a_fresh_trace(arrays, checkpoint_folder, "attention56_mixed_arl") >= 12
        context.close()
    finally:
        camera_browser.close()


def test_the_device_picker_offers_only_this_machines_devices(server, page):
    """On this machine's devices only (a CPU-only machine: just "cpu"); a link asking for a
    device this machine lacks opens on the best one it has, without an error."""
    from resattn.device import available_devices

    devices = available_devices()
    page.goto(f"{server}/?device=cuda-that-is-not-here&img=sample:coffee", timeout=GOTO_MS)
    settle(page)
    assert_no_error(page)
    assert f"on {devices[0]}." in page.locator('[data-testid="stMarkdownContainer"]').filter(
        has_text="on Cup of coffee").first.inner_text()
    picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(has_text="Device")
    picker.click()
    options = page.locator('[role="option"]')
    options.first.wait_for(timeout=30_000)
    assert [options.nth(i).inner_text().strip() for i in range(options.count())] == devices
    page.keyboard.press("Escape")
    assert f"device={devices[0]}" in page.url


def test_the_gallery_use_button_switches_the_photo(server, page, checkpoint_folder):
    """The overview's gallery lists the scikit-image photos (and two Imagenette val photos per
    class when the pack is there); "Use" on one makes it the image, with the prediction
    computed here for that photo."""
    import resattn.data
    from ui.samples import PACK_PER_CLASS, SKIMAGE_SAMPLES

    page.goto(f"{server}/?img=sample:chelsea&ckpt=attention56_mixed_arl", timeout=GOTO_MS)
    settle(page)
    page.locator('[data-testid="stMainBlockContainer"]').get_by_text("Sample gallery", exact=True).click()
    buttons = page.locator('[class*="st-key-use_"] button')
    buttons.first.wait_for(timeout=60_000)
    pack = 10 * PACK_PER_CLASS if resattn.data.pack_available() else 0
    assert buttons.count() == len(SKIMAGE_SAMPLES) + pack
    page.locator(".st-key-use_sample-coffee button").click()
    page.wait_for_function("() => document.body.innerText.includes('on Cup of coffee')", timeout=120_000)
    settle(page)
    assert_no_error(page)
    assert "img=sample%3Acoffee" in page.url or "img=sample:coffee" in page.url
    assert page.locator("h3").first.inner_text().strip() == expected_heading(
        checkpoint_folder, "attention56_mixed_arl", skimage_photo("coffee"))


def test_every_export_opens_and_the_json_and_url_reopen_the_view(server, browser, page, checkpoint_folder):
    """The explorer's exports, each opened: PNG and SVG figures (the SVG parses as XML), the
    .npz (its tensors equal a fresh trace of its image), the settings JSON; the page's URL
    carries the JSON's query, which opened in a new session gives the same settings."""
    import json
    import xml.etree.ElementTree as ET
    from urllib.parse import parse_qsl, urlparse

    ckpt = "attention56_spatial_arl"
    page.goto(f"{server}/explorer?img=sample:rocket&ckpt={ckpt}&module=stage2.1", timeout=GOTO_MS)
    wait_title(page, "Module explorer")
    settle(page)
    page.locator(".st-key-reduce").get_by_text("max over channels", exact=True).click()  # a change made by clicking
    page.wait_for_function("() => document.body.innerText.includes('reduction: max over channels')", timeout=120_000)
    page.wait_for_url("**reduce=max**", timeout=60_000)
    settle(page)
    assert_no_error(page)
    open_export(page)
    png = Image.open(io.BytesIO(download(page, "explorer_export_0_png")))
    png.load()
    assert png.format == "PNG" and png.width > 200 and png.height > 100
    svg = ET.fromstring(download(page, "explorer_export_0_svg"))
    assert svg.tag.endswith("svg") and len(list(svg.iter())) > 20
    with np.load(io.BytesIO(download(page, "explorer_export_npz")), allow_pickle=False) as arrays:
        assert {"stage2.1/mask", "stage2.1/trunk", "stage2.1/input", "stage2.1/output"} <= set(arrays.files)
        assert assert_arrays_equal_a_fresh_trace(arrays, checkpoint_folder, ckpt) == 4
        mask = arrays["stage2.1/mask"]
        np.testing.assert_allclose(arrays["stage2.1/mask_reduced_max"], mask.max(0), rtol=1e-5, atol=1e-6)
    settings = json.loads(download(page, "explorer_export_json"))
    assert (settings["checkpoint"], settings["image_id"], settings["module"], settings["reduce"]) == (
        ckpt, "sample:rocket", "stage2.1", "max")
    url = page.url

    def settings_at(address: str) -> dict:
        context = browser.new_context(viewport={"width": WIDTH, "height": 900})
        try:
            tab = context.new_page()
            tab.goto(address, timeout=GOTO_MS)
            wait_title(tab, "Module explorer")
            settle(tab)
            assert_no_error(tab)
            open_export(tab)
            return json.loads(download(tab, "explorer_export_json"))
        finally:
            context.close()

    def comparable(s: dict) -> dict:
        return {**s, "query": sorted(parse_qsl(s["query"]))}

    # The page's URL is the JSON's query (so one reopening checks both), and it reopens the view.
    assert sorted(parse_qsl(urlparse(url).query)) == sorted(parse_qsl(settings["query"]))
    assert comparable(settings_at(f"{server}/explorer?{settings['query']}")) == comparable(settings)


def test_the_load_tests_protocol_client_does_what_a_browser_does(server, tmp_path):
    """scripts/streamlit_client.py (the load test's `--client protocol`) against the real server:
    two sessions at once each visit, choose "Upload" and send their own photo, and each upload's
    run shows that session's photo; a client that skips a step is told so, not timed."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from streamlit_client import HeadlessSession, ProtocolError

    def student(i: int) -> tuple:
        image = np.full((96, 128, 3), 40 * i, dtype=np.uint8)
        image[20:60, 30 + 10 * i:90] = 255
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG")
        session = HeadlessSession(server, timeout=180)
        try:
            visit = session.visit()
            session.choose_upload()
            upload = session.upload(f"student{i}.png", buffer.getvalue())
            return session.session_id, session.query_string, session.exceptions, visit, upload
        finally:
            session.close()

    from conftest import run_in_threads

    results = run_in_threads(student, [(0,), (1,)])
    assert results[0][0] != results[1][0]  # two sessions
    for session_id, query, exceptions, visit, upload in results:
        assert "img=upload" in query and exceptions == 0 and visit > 0 and upload > 0
    # Uploading before choosing "Upload": the uploader is not on the page yet.
    session = HeadlessSession(server, timeout=180)
    try:
        session.visit()
        with pytest.raises(ProtocolError, match="_upload"):
            session.upload("early.png", b"not sent")
    finally:
        session.close()
