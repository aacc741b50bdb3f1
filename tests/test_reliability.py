"""Issue 8's hostile inputs and faults, each recorded as a row of docs/reliability.md:
every image case through the library and through the app's uploader (the session keeps
serving the next upload), a 1,000-trace soak, and training killed while it writes its
checkpoint or started without disk space. The checkpoint and concurrency rows come from
test_checkpoints.py, test_app.py, test_trace.py and test_browser.py."""
from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny, count_hooks, peak_rss_during, rss_bytes
from PIL import Image
from test_app import assert_clean, chart, navigation_v2, png_bytes, start, toy_zoo, use_upload, zoo_env  # noqa: F401
from test_images import PDF, SVG, encode, noisy_rgb, png_declaring
from test_train import TINY, run_train

import resattn
from resattn import ImageError

ROOT = Path(__file__).resolve().parents[1]
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


# ----------------------------------------------------------------------------- the image cases

def _exif_rotated() -> bytes:
    """60 x 30 as stored, red block top-left; EXIF orientation 6 says "turn 90° clockwise"."""
    img = Image.new("RGB", (60, 30), GREEN)
    img.paste(RED, (0, 0, 15, 15))
    exif = img.getexif()
    exif[0x0112] = 6
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (6, 4), colour) for colour in (RED, GREEN, BLUE)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def _panorama() -> bytes:
    img = Image.new("RGB", (10000, 300), GREEN)
    img.paste(RED, (9990, 0, 10000, 300))
    return encode(img, "PNG", compress_level=1)


def _rgba() -> bytes:
    img = Image.new("RGBA", (40, 20), (255, 0, 0, 255))
    img.paste((0, 0, 255, 0), (20, 0, 40, 20))  # right half fully transparent
    return encode(img, "PNG")


def _sixteen_bit() -> bytes:
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)[None, :].repeat(8, axis=0)
    return encode(Image.fromarray(ramp), "PNG")


def _cmyk() -> bytes:
    return encode(Image.new("CMYK", (16, 8), (0, 255, 255, 0)), "JPEG", quality=95)  # red


def _px(img, xy):
    return tuple(int(v) for v in img.getpixel(xy))


def _near(a, b, tol=40):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


# name -> (file name, bytes, expected, check of the loaded image or None for a refusal)
IMAGE_CASES = {
    "empty file": ("empty.jpg", lambda: b"", "ImageError: empty", None),
    "text file renamed .jpg": ("notes.jpg", lambda: b"This is a text file, not a photo.\n" * 20,
                               "ImageError: not an image", None),
    "truncated JPEG": ("cut.jpg", lambda: encode(noisy_rgb(64, 48), "JPEG", quality=90)[:1500],
                       "ImageError: truncated", None),
    "PNG bomb declaring 30000x30000": ("bomb.png", lambda: png_declaring(30000, 30000),
                                       "ImageError naming the megapixels, before decoding", None),
    "SVG": ("drawing.svg", lambda: SVG, "ImageError: not a raster image", None),
    "PDF": ("paper.pdf", lambda: PDF, "ImageError: not an image", None),
    "16-bit PNG": ("ramp16.png", _sixteen_bit, "RGB, full 0-255 range (not clipped)",
                   lambda im: _px(im, (0, 0))[0] == 0 and _px(im, (255, 0))[0] == 255
                   and len({_px(im, (x, 0))[0] for x in range(256)}) > 200),
    "CMYK JPEG": ("cmyk.jpg", _cmyk, "RGB, colours converted (red stays red)",
                  lambda im: _near(_px(im, (8, 4)), RED)),
    "RGBA PNG": ("alpha.png", _rgba, "RGB, transparency composited on white",
                 lambda im: _near(_px(im, (5, 10)), RED, 2) and _px(im, (35, 10)) == (255, 255, 255)),
    "1x1 image": ("dot.png", lambda: encode(Image.new("RGB", (1, 1), BLUE), "PNG"), "a 1x1 RGB image",
                  lambda im: im.size == (1, 1) and _px(im, (0, 0)) == BLUE),
    "10000x300 panorama": ("pano.png", _panorama, "10000x300 RGB, right edge intact",
                           lambda im: im.size == (10000, 300) and _px(im, (9995, 150)) == RED),
    "animated GIF": ("anim.gif", _animated_gif, "the first frame (red)",
                     lambda im: im.size == (6, 4) and _near(_px(im, (3, 2)), RED, 4)),
    "EXIF-rotated photo": ("rotated.jpg", _exif_rotated, "upright: 30x60, red block top-right",
                           lambda im: im.size == (30, 60) and _near(_px(im, (24, 5)), RED)
                           and _near(_px(im, (5, 5)), GREEN)),
}


def _describe(image: Image.Image) -> str:
    return f"{image.mode} {image.size[0]}x{image.size[1]}"


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_image_case_through_the_library(case, reliability):
    _, make, expected, check = IMAGE_CASES[case]
    data = make()
    started = time.perf_counter()
    try:
        image = resattn.load_image(data)
    except ImageError as exc:
        observed = f"ImageError: {exc}"
        reliability("images", f"library: {case}", expected, observed)
        assert check is None, observed
        message = str(exc)
        assert message[:1].isupper() and message.endswith("."), message
        assert time.perf_counter() - started < 2
        return
    ok = check is not None and image.mode == "RGB" and check(image)
    reliability("images", f"library: {case}", expected, f"{_describe(image)}, {'as expected' if ok else 'WRONG'}")
    assert check is not None, f"{case} should have been refused, got {_describe(image)}"
    assert ok


def _numbers(field) -> list[float]:
    """A plotly data field as floats (plotly sends arrays base64-encoded as {dtype, bdata})."""
    import base64

    if isinstance(field, dict):
        return np.frombuffer(base64.b64decode(field["bdata"]), dtype=field["dtype"]).astype(float).tolist()
    return [float(v) for v in field]


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_image_case_through_the_app_uploader(case, zoo_env, reliability):  # noqa: F811 (fixture)
    """Upload the case, then a good photo in the same session: the case either gives the
    prediction the library computes for the same decoded image, or an st.error with a
    sentence and the sample photo instead; the next upload is then served normally."""
    from ui import cache
    from ui.sidebar import UPLOAD_TYPES

    name, make, expected, check = IMAGE_CASES[case]
    label = case
    if name.rsplit(".", 1)[-1] not in UPLOAD_TYPES:
        # The uploader refuses the extension itself (test_browser checks that); here the file
        # arrives renamed, as a user would rename it to get past the picker.
        name = name.rsplit(".", 1)[0] + ".png"
        label = f"{case} renamed {name}"
    data = make()
    at = start()
    use_upload(at, name, data, mime="application/octet-stream")
    assert_clean(at)
    errors = [e.value for e in at.error]
    shown = at.get("plotly_chart")
    if errors:
        observed = f"st.error: {errors[0]}; page still drawn ({len(shown)} charts)"
    else:
        # The app's prediction must be the library's on the same (upright, converted) image.
        model, card = resattn.load_checkpoint(zoo_env / "attention56_mixed_arl")
        image = cache.decode_upload(cache.image_sha(data), data)
        x = card.preprocess(image)
        with torch.inference_mode():
            probs = sorted(torch.softmax(model(x)[0], 0).tolist(), reverse=True)
        got = _numbers(chart(at, "predictions")["data"][0]["x"])
        same = np.allclose(sorted(got, reverse=True), probs[:len(got)], atol=1e-4)
        observed = f"prediction shown, {'equal to' if same else 'DIFFERENT from'} the library's on the decoded image"
    # The same session serves the next, good upload.
    use_upload(at, "next.png", png_bytes(seed=11))
    assert_clean(at)
    follow = "next upload served" if not at.error and at.query_params["img"] == "upload" else "next upload FAILED"
    reliability("images", f"app upload: {label}", "prediction, or st.error with what to do; app keeps serving",
                f"{observed}; {follow}")
    if check is None:
        assert errors and errors[0].startswith(name) and errors[0].rstrip("*").endswith("."), errors
        assert shown, "the page must still draw the sample photo"
    else:
        assert not errors, errors
        assert same
    assert follow == "next upload served"


# ----------------------------------------------------------------------------- soak

# Growth of the current RSS allowed per trace after the warm-up: 1,000 traces may grow it by
# at most 8 MiB. A trace of the soak model holds ~450 KB of masks, so a loop that kept even
# one small mask (64 KB) of every trace grows eight times faster than this.
MAX_GROWTH_PER_TRACE = 8 * 1024
SOAK_MODEL = dict(name="attention56", width=0.25, seed=5)  # the zoo's width, at its 128 px


def soak(n_warm: int, n: int, *, leak: bool = False) -> dict:
    """Traces through one model, as the app's cached model serves them in a lecture, each
    kept only as long as a page keeps it (`leak`: the deliberately broken variant that also
    keeps the last module's mask of every trace). Current RSS (/proc/self/statm) after
    `n_warm` traces is the baseline; growth is measured after `n` more."""
    model = build_tiny(SOAK_MODEL["name"], width=SOAK_MODEL["width"], seed=SOAK_MODEL["seed"])
    images = [torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(i)) for i in range(16)]
    hooks_before = count_hooks(model)
    kept = []

    def traces(count: int) -> None:
        for i in range(count):
            tr = resattn.trace(model, images[i % len(images)])
            arrays = {r.name: r.mask.numpy().copy() for r in tr.modules}  # what the app keeps
            if leak:
                kept.append(arrays[tr.names[-1]])
            del tr, arrays

    traces(n_warm)
    gc.collect()
    warm = rss_bytes()
    started = time.perf_counter()
    traces(n)
    gc.collect()
    after = rss_bytes()
    per_trace = (after - warm) / n
    if per_trace > MAX_GROWTH_PER_TRACE:
        # A one-off step (the allocator mapping a new arena or heap segment once, seen once in a
        # fresh CI clone: 9.3 MB over 1,000 traces) is not a leak; a leak grows again in a second
        # window of n traces. Steady-state growth is the smaller of the two windows.
        warm, started = after, time.perf_counter()
        traces(n)
        gc.collect()
        after = rss_bytes()
        per_trace = min(per_trace, (after - warm) / n)
    return {"warm": warm, "after": after, "per_trace": per_trace, "seconds": time.perf_counter() - started,
            "hooks": (hooks_before, count_hooks(model))}


def describe_soak(m: dict) -> str:
    return (f"hooks {m['hooks'][0]} -> {m['hooks'][1]}; RSS {m['warm'] / 2**20:.1f} -> {m['after'] / 2**20:.1f} MiB "
            f"({(m['after'] - m['warm']) / 2**20:+.2f} MiB, {m['per_trace'] / 1024:+.2f} KiB per trace); "
            f"{m['seconds']:.1f} s")


@pytest.mark.slow
def test_a_thousand_traces_leave_no_hooks_and_no_memory_growth(reliability):
    """1,000 traces after a warm-up of 100: no hook left, current RSS grows by at most
    MAX_GROWTH_PER_TRACE per trace."""
    m = soak(100, 1000)
    reliability("soak", "1,000 traces through one model (after 100 warm-up)",
                f"hooks unchanged, current RSS growth <= {MAX_GROWTH_PER_TRACE // 1024} KiB per trace",
                describe_soak(m))
    assert m["hooks"] == (0, 0)
    assert m["per_trace"] <= MAX_GROWTH_PER_TRACE


def test_the_soak_check_catches_a_leak(reliability):
    """The same measurement on the deliberately leaking loop (it keeps one 64 KB mask of
    every trace) must fail the soak test's limit: the check can see a leak."""
    m = soak(100, 300, leak=True)
    reliability("soak", "the soak check on a deliberately leaking loop (keeps one mask per trace)",
                f"growth above the limit of {MAX_GROWTH_PER_TRACE // 1024} KiB per trace (the check bites)",
                describe_soak(m))
    assert m["per_trace"] > MAX_GROWTH_PER_TRACE


def test_the_app_caches_are_bounded(reliability):
    """Every st.cache_data / st.cache_resource in the app has max_entries (and the trace
    caches a ttl), so a long lecture cannot fill memory; the bounds go into the table."""
    import ast

    unbounded, bounds = [], {}
    for path in sorted((ROOT / "ui").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and ast.unparse(deco.func) in ("st.cache_data", "st.cache_resource"):
                    kw = {k.arg: ast.unparse(k.value) for k in deco.keywords}
                    if "max_entries" not in kw:
                        unbounded.append(f"{path.name}:{node.name}")
                    bounds[(path.stem, node.name)] = kw.get("max_entries", "UNBOUNDED")
    import importlib

    from ui import cache

    resolved = {}
    for (module, fn), v in bounds.items():
        names = vars(importlib.import_module(f"ui.{module}"))
        resolved[fn] = eval(v, {}, names) if v != "UNBOUNDED" else v  # noqa: S307 (our own source)
    reliability("soak", "the app's caches", "every cache has max_entries",
                "; ".join(f"{fn} {n}" for fn, n in resolved.items()) + f"; trace ttl {cache.TRACE_TTL_S} s; "
                f"uploads shrunk to {cache.MAX_SIDE} px")
    assert not unbounded, unbounded
    assert len(resolved) >= 10


# ----------------------------------------------------------------------------- training faults

DYING_WRITER = textwrap.dedent("""
    # Run the trainer, but die (SIGKILL) half-way through writing the checkpoint of epoch 2:
    # the temporary file is on disk, half-written, when the process vanishes.
    import os, signal, sys
    import resattn.train as train
    real, calls = train.atomic_write, []
    def dying(target, write):
        calls.append(target)
        if len(calls) < 2:
            return real(target, write)
        def half(tmp):
            write(tmp)
            with open(tmp, "r+b") as f:
                f.truncate(os.path.getsize(tmp) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(target, half)
    train.atomic_write = dying
    sys.exit(train.main(sys.argv[1:]))
""")


def test_kill_9_while_the_checkpoint_is_written(tmp_path, reliability):
    out = tmp_path / "run"
    args = [a if a != "2" else "3" for a in TINY]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    died = subprocess.run([sys.executable, "-c", DYING_WRITER, *args, "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    leftovers = sorted(p.name for p in out.glob(".last.pt.*"))
    state = torch.load(out / "last.pt", weights_only=True)  # the previous, whole file
    resumed = run_train(*args, "--out", str(out), "--resume")
    epochs = [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]
    reliability("training", "kill -9 while last.pt is being written (epoch 2)",
                "last.pt is the previous whole file; resume loses at most one epoch",
                f"exit {died.returncode}; half-written temp file {'left' if leftovers else 'absent'}; last.pt at "
                f"epoch {state['epoch']}; resume exit {resumed.returncode}, logged epochs {epochs}; temp files "
                f"after resume: {len(list(out.glob('.last.pt.*')))}")
    assert died.returncode == -9
    assert leftovers, "the kill should have left the half-written temporary file"
    assert state["epoch"] == 1 and state["step"] == 0
    assert resumed.returncode == 0, resumed.stderr
    assert epochs[-1] == 3 and sorted(set(epochs)) == [1, 2, 3]
    assert not list(out.glob(".last.pt.*")), "resume should clear stale temporary files"


def test_a_full_disk_fails_before_training(tmp_path, monkeypatch, capsys, reliability):
    import shutil

    import resattn.train as train

    real = shutil.disk_usage
    monkeypatch.setattr(train.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=50 * 2**20))  # 50 MiB free
    monkeypatch.setattr(train.signal, "signal", lambda *args: None)
    out = tmp_path / "run"
    started = time.perf_counter()
    code = train.main([*TINY, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    reliability("training", "disk nearly full (50 MiB free)", "one-line error before training, exit 2",
                f"exit {code} after {time.perf_counter() - started:.1f} s: {err}")
    assert code == 2 and len(err.splitlines()) == 1 and "free" in err and "--out" in err
    assert not (out / "last.pt").exists() and not (out / "log.jsonl").exists()


def test_the_disk_filling_up_during_training_gives_one_line(tmp_path, monkeypatch, capsys, reliability):
    """ENOSPC when an epoch's checkpoint is written: one line naming the file and what to
    do, exit 1, and the last whole checkpoint stays usable."""
    import errno

    import resattn.train as train

    real, calls = train.atomic_write, []

    def full(target, write):
        calls.append(target)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(target, write)

    monkeypatch.setattr(train, "atomic_write", full)
    monkeypatch.setattr(train.signal, "signal", lambda *args: None)  # keep pytest's own handlers
    out = tmp_path / "run"
    code = train.main([*[a if a != "2" else "3" for a in TINY], "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    last = err[-1] if err else ""
    reliability("training", "disk full while an epoch's checkpoint is written",
                "one line, exit 1, the previous checkpoint kept", f"exit {code}: {last}")
    assert code == 1 and last.startswith("error:") and "No space left" in last and "--resume" in last
    assert "Traceback" not in "\n".join(err)
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1


# ----------------------------------------------------------------------------- the suite's own rules
# tests/conftest.py as a plugin of a pytest run on a generated test file: what CI=true does to a
# skip, the hypothesis profile, exceptions in threads, and when `make reliability` publishes.

HARNESS_TESTS = textwrap.dedent('''
    import os
    import threading

    import pytest
    from hypothesis import given, settings, strategies as st

    def test_needs_the_pack():
        pytest.skip("the Imagenette pack was not found (set RESATTN_DATA)")

    def test_hypothesis_profile():
        assert settings.default.derandomize == (os.environ.get("CI") == "true")

    @given(st.integers())
    def test_property(n):
        assert isinstance(n, int)

    def test_a_worker_thread_raises():
        worker = threading.Thread(target=lambda: 1 / 0)
        worker.start()
        worker.join()

    def test_run_in_threads_collects_worker_exceptions():
        from conftest import run_in_threads

        assert run_in_threads(lambda i: i * i, [(i,) for i in range(4)]) == [0, 1, 4, 9]
        with pytest.raises(AssertionError, match="1 worker.s. raised.*ZeroDivisionError"):
            run_in_threads(lambda i: 1 / i, [(i,) for i in range(4)])
''')

PUBLISH_TESTS = textwrap.dedent('''
    import os
    import pytest

    def test_first(reliability):
        reliability("soak", "first case", "x", "seen")

    def test_second(reliability):
        if os.environ.get("SKIP_SECOND"):
            pytest.skip("the Imagenette pack was not found")
        reliability("soak", "second case", "x", "seen")
''')


def run_with_conftest(tmp_path: Path, source: str, *args: str, ci: bool = False, **env) -> tuple[int, dict, str]:
    """(exit code, {test name: outcome}, output) of pytest on `source` with tests/conftest.py."""
    import xml.etree.ElementTree as ET

    test_file = tmp_path / "test_generated.py"
    test_file.write_text(source)
    report = tmp_path / "report.xml"
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")}
    environment.update(PYTHONPATH=f"{ROOT / 'tests'}:{ROOT}", RESATTN_RELIABILITY_TABLE=str(tmp_path / "table.md"),
                       OMP_NUM_THREADS="1", **env)
    if ci:
        environment["CI"] = "true"
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
                           f"--junitxml={report}", str(test_file), *args], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=300)
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name")] = kinds[0] if kinds else "passed"
    return done.returncode, outcomes, done.stdout + done.stderr


@pytest.mark.parametrize("ci", [True, False], ids=["CI=true", "local"])
def test_under_ci_a_skip_fails_and_hypothesis_is_seeded(ci, tmp_path):
    code, outcomes, output = run_with_conftest(tmp_path, HARNESS_TESTS, ci=ci)
    assert outcomes["test_hypothesis_profile"] == outcomes["test_property"] == "passed", output
    assert outcomes["test_run_in_threads_collects_worker_exceptions"] == "passed", output
    assert outcomes["test_a_worker_thread_raises"] == "failure", output  # never a silent pass
    if ci:
        assert outcomes["test_needs_the_pack"] == "failure", output
        reason = [line for line in output.splitlines() if "CI must run this test" in line]
        assert reason and "the Imagenette pack was not found" in reason[0], output
    else:
        assert outcomes["test_needs_the_pack"] == "skipped", output
    assert code == 1


def test_make_reliability_publishes_only_a_complete_table(tmp_path):
    published = tmp_path / "published.md"
    header = "# Reliability\n\n| case | expected | observed | result | test |\n|---|---|---|---|---|\n"
    old_rows = "| first case | x | old | pass | `test_first` |\n"
    removed = "| a removed case | x | old | pass | `test_gone` |\n"
    # A test that skips before recording, and a case of the published table that the run no
    # longer records: refused, with both reasons; the published table is left as it was.
    published.write_text(header + old_rows + removed)
    code, outcomes, output = run_with_conftest(tmp_path, PUBLISH_TESTS, f"--reliability-publish={published}",
                                               SKIP_SECOND="1")
    assert outcomes == {"test_first": "passed", "test_second": "skipped"}
    assert code != 0 and "not publishing" in output and "test_second recorded no row" in output, output
    assert "'a removed case', which this run did not record" in output, output
    assert published.read_text() == header + old_rows + removed
    # A test deselected with -k: refused too.
    published.write_text(header + old_rows)
    code, _, output = run_with_conftest(tmp_path, PUBLISH_TESTS, f"--reliability-publish={published}", "-k", "first")
    assert code != 0 and "test_second recorded no row" in output, output
    # Complete: published.
    code, outcomes, output = run_with_conftest(tmp_path, PUBLISH_TESTS, f"--reliability-publish={published}")
    assert code == 0 and set(outcomes.values()) == {"passed"}, output
    table = published.read_text()
    assert "| first case | x | seen | pass |" in table and "| second case | x | seen | pass |" in table


def test_the_peak_rss_measure_sees_a_peak_below_an_earlier_one():
    """The checkpoint tests bound the peak RSS of a load. After this process has once peaked
    higher (here: 400 MiB), a 200 MiB transient allocation must still be measured (the
    lifetime peak, ru_maxrss, would show +0), and a load that allocates nothing must not be."""
    def touch(mib: int) -> None:
        block = np.ones(mib * 2**20 // 8)  # written, so resident
        del block

    touch(400)
    _, peak = peak_rss_during(lambda: touch(200))
    assert 190 * 2**20 <= peak <= 260 * 2**20, peak / 2**20
    _, quiet = peak_rss_during(lambda: None)
    assert quiet < 16 * 2**20, quiet / 2**20
