"""The teaching features in Chromium, against the real server of tests/test_browser.py (its
fixtures and helpers are imported, not copied): the opening photo, the guided tour stepped
with Next / Back / PageDown and ending on the Compare page, and presenter mode (no sidebar,
larger type, colour-blind-safe colour scales, one-click next step, a way back out).

Screenshots go to test-artifacts/screenshots/ (git-ignored: with the pack present they show
its photos)."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest
from test_browser import browser, check_page, checkpoint_folder, page, screenshot, server, settle, wait_title  # noqa: F401

pytestmark = pytest.mark.browser
STEPS = 9


def query(tab) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(tab.url).query).items()}


def header(tab) -> str:
    return tab.locator("h2").first.inner_text().strip()


def wait_step(tab, n: int) -> None:
    """Until step n is drawn: its header, and no element left over from the previous step
    (Streamlit marks those data-stale while the new run has not replaced them)."""
    tab.wait_for_function("n => { const h = document.querySelector('h2'); return h && h.innerText.trim()"
                          ".startsWith(n + ' · ') && !document.querySelector('[data-stale=\"true\"]'); }",
                          arg=n, timeout=300_000)
    wait_charts(tab, 1)  # every step has a live figure


def no_exception(tab) -> None:
    boxes = tab.locator('[data-testid="stException"]')
    assert boxes.count() == 0, boxes.first.inner_text()


def wait_charts(tab, n: int = 1) -> None:
    """Until at least n charts are drawn and nothing is stale (a busy server can leave a
    quiet gap without a spinner, which `settle` alone may take for the end of the run)."""
    tab.wait_for_function("n => document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .main-svg').length >= n"
                          " && !document.querySelector('[data-stale=\"true\"]')", arg=n, timeout=300_000)
    settle(tab)


def charts_drawn(tab) -> int:
    charts = tab.locator('[data-testid="stPlotlyChart"]')
    for i in range(charts.count()):
        assert charts.nth(i).locator(".main-svg").count() > 0, f"chart {i} not drawn"
    return charts.count()


def expected_opening_photo(folder) -> tuple[str, str | None]:
    """(image id, true class or None) that ui.samples.default_image should choose for the
    server's default checkpoint, computed here from the library alone."""
    import torch
    from PIL import Image

    import resattn
    from resattn import data, teaching
    from ui.cards import untrained
    from ui.state import default_checkpoint

    names = sorted(p.stem for p in folder.glob("*.safetensors"))
    name = default_checkpoint(names)
    model, card = resattn.load_checkpoint(folder / name)
    if not data.pack_available() or untrained(card):
        return "sample:chelsea", None
    gallery = data.load_pack(split="val", limit=2)
    truths = [gallery.classes[int(i)] for i in gallery.labels]
    x = torch.cat([card.preprocess(Image.fromarray(a.numpy()))
                   for a in gallery.images])
    labels = [card["classes"].index(t) if t in card["classes"] else -1 for t in truths]
    index = teaching.first_confident(model, x, labels)
    return ("sample:chelsea", None) if index is None else (f"imagenette:{index}", truths[index])


def test_a_first_visit_opens_on_a_photo_the_network_gets_right(server, page, checkpoint_folder):
    image_id, truth = expected_opening_photo(checkpoint_folder)
    page.goto(server)
    page.wait_for_function("() => [...document.querySelectorAll('h3')].some(h => h.innerText.startsWith('Prediction:'))",
                           timeout=300_000)
    wait_charts(page, 2)
    no_exception(page)
    assert query(page)["img"] == image_id
    sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
    prediction = page.locator("h3").first.inner_text().strip()
    if truth is None:  # no pack (or untrained weights): the photo is out of distribution, and the app says so
        assert "is none of the" in sidebar and "classes this network knows" in sidebar
    else:
        match = re.fullmatch(r"Prediction: (.+) \((\d+)%\)", prediction)
        assert match and match.group(1) == truth and int(match.group(2)) >= 80, prediction
        assert "is none of the" not in sidebar
    screenshot(page, "opening_photo")


def test_the_tour_steps_through_and_ends_on_compare(server, page):
    page.goto(f"{server}/tour")
    wait_title(page, "Guided tour")
    wait_step(page, 1)
    assert query(page)["step"] == "1"
    assert page.locator(".st-key-tour_back button").first.is_disabled()
    for n in range(2, STEPS + 1):
        if n == 3:
            page.locator("h1").first.click()  # focus the page, not a widget: PageDown is the clicker's key
            page.keyboard.press("PageDown")
        else:
            page.locator(".st-key-tour_next button").first.click()
        wait_step(page, n)
        no_exception(page)
        assert query(page)["step"] == str(n)
        assert charts_drawn(page) >= 1, f"step {n} has no live figure"
        screenshot(page, f"tour_step{n}")
    page.locator(".st-key-tour_back button").first.click()
    wait_step(page, STEPS - 1)
    page.locator(".st-key-tour_next button").first.click()
    wait_step(page, STEPS)
    page.locator(".st-key-tour_next button").first.click()  # "Open Compare"
    wait_title(page, "Compare attention types")
    wait_charts(page, 2)
    check_page(page, "Compare attention types")


def test_a_tour_link_opens_its_step_with_the_measured_sizes(server, page):
    page.goto(f"{server}/tour?step=4")
    wait_title(page, "Guided tour")
    wait_step(page, 4)
    text = page.locator('[data-testid="stMain"]').inner_text()
    sizes = re.findall(r"(\d+) × (\d+) × (\d+)", text)
    assert len(sizes) >= 5, text  # every step of the mask branch, with its measured size
    sides = [int(h) for _, h, _ in sizes]
    assert min(sides) < sides[0] and sides[-1] == sides[0]  # down to a coarser map, back up to T's size
    assert charts_drawn(page) == 1


def _colour_scales(tab) -> list[str]:
    return tab.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(g => (g._fullData || [])"
                        ".filter(t => t.colorscale).map(t => JSON.stringify(t.colorscale)))")


def _colour_scale_json(name: str) -> str:
    import json

    import plotly.graph_objects as go

    return json.dumps([[float(p), str(c)] for p, c in go.Heatmap(colorscale=name).colorscale], separators=(",", ":"))


def _same_scale(a: str, b: str) -> bool:
    import json

    return [[float(p), c.lower()] for p, c in json.loads(a)] == [[float(p), c.lower()] for p, c in json.loads(b)]


def test_presenter_mode(server, page):
    page.goto(f"{server}/tour?step=6&present=1")
    wait_title(page, "Guided tour")
    wait_step(page, 6)
    no_exception(page)
    assert not page.locator('[data-testid="stSidebar"]').is_visible()
    assert page.locator('[data-testid="stTopNav"]').is_visible()  # the navigation moved to the top
    assert page.evaluate("() => getComputedStyle(document.documentElement).fontSize") == "22px"
    safe = [_colour_scale_json("Viridis"), _colour_scale_json("Cividis")]
    scales = _colour_scales(page)
    assert scales and all(any(_same_scale(s, ok) for ok in safe) for s in scales), scales
    screenshot(page, "tour_presenter_step6")

    page.locator(".st-key-tour_next button").first.click()  # one click: the next step, still presenting
    wait_step(page, 7)
    assert query(page)["present"] == "1" and query(page)["step"] == "7"
    assert not page.locator('[data-testid="stSidebar"]').is_visible()

    # Another page keeps the mode; its model colours have no red-green pair.
    page.locator('[data-testid="stTopNav"]').get_by_text("Compare attention types", exact=True).click()
    wait_title(page, "Compare attention types")
    wait_charts(page, 2)
    no_exception(page)
    assert query(page)["present"] == "1"
    colours = set(page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(g => "
                                "(g._fullData || []).map(t => (t.marker && typeof t.marker.color === 'string') ? "
                                "t.marker.color.toLowerCase() : null)).filter(c => c)"))
    from resattn.viz import MODEL_COLORS, PRESENTER_STYLE

    assert colours and not colours & {MODEL_COLORS["mixed · NAL"].lower(), MODEL_COLORS["spatial · ARL"].lower()}
    assert colours & {c.lower() for c in PRESENTER_STYLE.model_colors.values()}
    assert all(any(_same_scale(s, ok) for ok in safe) for s in _colour_scales(page))

    page.locator(".st-key-leave_presenter button").first.click()
    page.wait_for_function("() => { const s = document.querySelector('[data-testid=stSidebar]'); "
                           "return s && s.offsetWidth > 0; }", timeout=60_000)
    settle(page)
    assert query(page)["present"] == "0"
    assert page.evaluate("() => getComputedStyle(document.documentElement).fontSize") != "22px"
