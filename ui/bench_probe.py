"""The app's side of `python -m resattn.bench`'s app section: the explorer page's cached
re-render time ("server time": the script run, no browser).

    python -m ui.bench_probe ROOT RERUNS     # prints one line: RESATTN_BENCH {json}

`resattn.bench.app.measure_rerender` runs this in its own interpreter, in ROOT with
RESATTN_CHECKPOINTS set: it imports streamlit, which resattn never does, and a page's caches
must not leak into the bench's other timings. It runs AppTest on app.py switched to
pages/explorer.py (or on the page alone when there is no app.py).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable


def median_ms(fn: Callable[[], object], n: int) -> tuple[float, list[float]]:
    """The median and every time in milliseconds of `n` calls of `fn`."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), times


class _NoSleep:
    """Stands in for the `time` module of streamlit's execution_control: no sleeps."""

    def __getattr__(self, name):
        return (lambda seconds: None) if name == "sleep" else getattr(time, name)


def measure(root: Path, reruns: int) -> dict:
    """{"status": "measured", "cached_ms": ..., ...}, or a status saying why not."""
    page, entry = root / "pages" / "explorer.py", root / "app.py"
    if not page.is_file():
        return {"status": "not measured (app page not found)"}
    import streamlit as st
    import streamlit.commands.execution_control as execution_control
    from streamlit.testing.v1 import AppTest

    # AppTest starts every run like a freshly started server, which runs a file of pages/ without
    # app.py; an app that then detours through app.py (st.switch_page) pays st.switch_page's
    # message-flush sleeps, which a running server's reruns never see. Skip the sleeps and count
    # the detours, so that the figure is the scripts' own time.
    switches = []
    _switch_page = execution_control.switch_page
    execution_control.time = _NoSleep()
    if entry.is_file():
        app, method = AppTest.from_file(str(entry), default_timeout=600), "AppTest(app.py -> pages/explorer.py)"
        app.run()
        app.switch_page("pages/explorer.py")
    else:
        app, method = AppTest.from_file(str(page), default_timeout=600), "AppTest(pages/explorer.py)"
    first, _ = median_ms(app.run, 1)
    if len(app.exception):
        return {"status": "failed", "method": method, "error": str(app.exception[0].value)[:500]}
    st.switch_page = execution_control.switch_page = lambda *a, **k: (switches.append(1), _switch_page(*a, **k))[1]
    cached, times = median_ms(app.run, reruns)
    if len(app.exception):
        return {"status": "failed", "method": method, "error": str(app.exception[0].value)[:500]}
    # What the page showed, so that a fast time of an empty page is recognisable as such.
    notes = [f"{kind}: {str(element.value)[:160]}" for kind in ("error", "warning", "info")
             for element in getattr(app, kind)][:4]
    return {"status": "measured", "method": method, "first_ms": first, "cached_ms": cached, "cached_runs_ms": times,
            "elements": len(getattr(app.main, "children", None) or {}), "notes": notes,
            "page_switches_per_run": len(switches) / max(1, reruns), "switch_page_sleeps": "skipped"}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root, reruns = Path(args[0]), int(args[1])
    sys.path.insert(0, str(root))
    print("RESATTN_BENCH " + json.dumps(measure(root, reruns)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
