"""The Compare page's "how different is different" panel and its seed toggle in Chromium,
against the real server of tests/test_browser.py (its fixtures and helpers are imported; the
checkpoint folder is replaced by a tiny zoo with seeds that this module makes, so the test runs
before the real seeds are trained)."""
from __future__ import annotations

import pytest
from test_browser import browser, page, screenshot, server, settle, wait_title  # noqa: F401
from test_consistency import seed_zoo

pytestmark = pytest.mark.browser
TOGGLE = "Seeds of one type in place of the types"


@pytest.fixture(scope="module")
def checkpoint_folder(tmp_path_factory):
    """Replaces test_browser's: tiny networks, seeds in <folder>/seeds, and the dataset table
    (RESATTN_CONSISTENCY, read by the server that the `server` fixture starts after this)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder, csv_path = seed_zoo(tmp_path_factory.mktemp("seed_zoo") / "zoo")
    finally:
        torch.set_num_threads(threads)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RESATTN_CONSISTENCY", str(csv_path))
        patch.delenv("RESATTN_SEEDS", raising=False)
        yield folder


def column_headers(tab) -> list[str]:
    """The grid's column titles, as drawn (bold annotations in the first plotly chart)."""
    return tab.evaluate("() => [...document.querySelector('[data-testid=stPlotlyChart]')"
                        ".querySelectorAll('text.annotation-text')].map(t => t.textContent.trim()).filter(t => t)")


def wait_headers(tab, expected_first: str) -> list[str]:
    tab.wait_for_function(
        "t => [...document.querySelectorAll('[data-testid=stPlotlyChart] text.annotation-text')]"
        ".some(e => e.textContent.startsWith(t)) && !document.querySelector('[data-stale=\"true\"]')",
        arg=expected_first, timeout=120_000)
    settle(tab)
    return column_headers(tab)


def test_compare_panel_and_seed_toggle(page, server):
    tab = page
    tab.goto(f"{server}/compare")
    wait_title(tab, "Compare attention types")
    settle(tab)
    assert tab.locator('[data-testid="stException"]').count() == 0
    # the panel computes while the page draws: wait for the section after it
    tab.get_by_role("heading", name="Mask statistics per model and stage").wait_for(timeout=120_000)
    settle(tab)
    headings = tab.locator("h1, h2, h3").all_inner_texts()
    assert {"How different is different?", "This image", "Over the dataset (6 images)"} <= set(headings), headings
    assert tab.locator('[data-testid="stDataFrame"]').count() >= 2
    sentences = tab.locator("li", has_text="two seeds of A56 mixed ARL agree with ρ")
    assert sentences.count() == 6  # three stages, on the image and over the dataset
    headers = wait_headers(tab, "mixed · ARL")
    assert any(h.startswith("no attention") for h in headers) and not any(h.startswith("seed") for h in headers)
    screenshot(tab, "compare_consistency_types")

    tab.get_by_text(TOGGLE, exact=True).click()
    headers = wait_headers(tab, "seed 0")
    assert [h[:6] for h in headers if h.startswith("seed")] == ["seed 0", "seed 1", "seed 2"]
    assert not any(h.startswith("channel") for h in headers)
    assert "cmpcols=seeds" in tab.url
    assert tab.locator('[data-testid="stException"]').count() == 0
    screenshot(tab, "compare_consistency_seeds")

    tab.get_by_text(TOGGLE, exact=True).click()
    headers = wait_headers(tab, "channel · ARL")
    assert not any(h.startswith("seed") for h in headers)
    assert "cmpcols=types" in tab.url
