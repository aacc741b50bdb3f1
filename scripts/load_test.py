"""A class at once: N students open the app and upload a photo of their own, all at the same
time, against the real server; prints p50 / p95 latency and the server's memory per N.

    .venv/bin/python scripts/load_test.py --students 1 8 16 32 --out load.json

For each N, in rounds (N = 1, then 8, ...), N new browser contexts (Playwright, Debian's
Chromium; each a new Streamlit session) start together and each student

1. opens the app (a new visit: the session's first run, sidebar, overview, figures) and
   waits until the page is drawn: the *visit* latency;
2. uploads a generated PNG nobody has sent before (so its trace is not in any cache: a
   forward pass with hooks, the figures of a new image) and waits until the overview shows
   it: the *new image* latency.

"Drawn" means: a title, no spinner, progress bar or element left over from the previous run,
every plotly chart rendered, stable for three checks 0.3 s apart. The server's resident memory
(the server process and its children, from /proc) is sampled every 0.2 s: the peak per round
and the value after it. Exception boxes shown to any student are counted.

By default the script starts its own server (`streamlit run app.py` with the flags of a
deployment: headless, no file watcher) and stops it at the end; `--streamlit-arg` passes
more flags (the levers of docs/deploy.md, e.g. `--streamlit-arg=--runner.postScriptGC=true` to measure with Streamlit's default).
`--url` measures a server that is already running (e.g. the reverse proxy of docs/deploy.md;
give `--pid` for each server process whose memory to sample, and `--warm-url` for each
replica's own address, so that every replica has loaded its models before the rounds). On a machine with several
cores, `--server-cpus` and `--browser-cpus` pin the server and the browsers to different
cores (taskset / sched_setaffinity), so that the browsers' rendering is not billed to the
server. Nothing is downloaded; the images are generated here.

`--client protocol` replaces the browsers with headless sessions that speak Streamlit's own
protocol (scripts/streamlit_client.py): the same two steps, the same requests to the server
(page, websocket, script runs, upload, media files), no rendering. "Drawn" then means the run
has finished and every media file has arrived; the run after an upload must show the photo's
name. The *new image* time starts when the file is sent: the rerun that choosing "Upload"
causes comes before it (in the browser, the click's rerun and the upload overlap). This measures what the server makes a class wait for, which on a small machine the
browsers' own rendering hides; the client's CPU time is reported beside the server's.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from resattn_app.serving import ServerNotHealthy, free_port, wait_until_healthy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DEPLOY_FLAGS = ["--server.headless", "true", "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]
TITLE = "Look inside a Residual Attention Network"  # the overview's h1

# The same conditions as tests/test_browser.py's settle, plus no stale element.
DRAWN_JS = """() => {
  const busy = document.querySelectorAll('[data-testid="stSpinner"], [data-testid="stProgress"], '
    + '[data-testid="stSkeleton"], [data-testid="stStatusWidget"], [data-stale="true"]').length;
  const charts = document.querySelectorAll('[data-testid="stPlotlyChart"]').length;
  const drawn = document.querySelectorAll('[data-testid="stPlotlyChart"] .main-svg').length;
  const h1 = document.querySelector('h1');
  return !!h1 && busy === 0 && drawn >= charts && charts > 0;
}"""


# --------------------------------------------------------------------------- server and memory

def start_server(port: int, extra: list[str], cpus: str | None, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", *DEPLOY_FLAGS, *extra]
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    with open(log, "w") as out:
        return subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return found


def rss_mb(pids: list[int]) -> float:
    """Resident memory of the processes and their descendants, in MB (10^6 bytes)."""
    total = 0
    for root in pids:
        for pid in _descendants(root):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
    return total / 1e6


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) the processes and their descendants have used so far, in
    seconds: the server's busy time, which the browsers' rendering (on other cores) does not
    add to. A round's difference over its wall time says whether the server was the bottleneck."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for root in pids:
        for pid in _descendants(root):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
            except (OSError, IndexError, ValueError):
                pass
    return total / ticks


class MemorySampler:
    def __init__(self, pids: list[int], every: float = 0.2) -> None:
        self.pids, self.every, self.peak = pids, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pids))
            self._stop.wait(self.every)

    def __enter__(self) -> "MemorySampler":
        if self.pids:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


# --------------------------------------------------------------------------- students

def new_photo(path: Path, seed: int) -> Path:
    """A 256 x 256 PNG no one has uploaded before (its bytes, and so its sha256, are new)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:256, 0:256]
    image = np.stack([(x + 40 * seed) % 256, (y * 2 + seed) % 256, (x + y) // 2], axis=-1).astype(np.float64)
    image += rng.normal(0, 25, image.shape)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
    return path


async def wait_drawn(tab, timeout: float) -> None:
    stable, deadline = 0, time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        stable = stable + 1 if await tab.evaluate(DRAWN_JS) else 0
        if stable >= 3:
            return
        await asyncio.sleep(0.3)
    raise TimeoutError("the page was not drawn in time")


@dataclass
class Student:
    visit_s: float | None = None
    image_s: float | None = None
    exceptions: int = 0
    error: str | None = None


async def student(browser, url: str, photo: Path, start: asyncio.Event, timeout: float) -> Student:
    result = Student()
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        tab = await context.new_page()
        await start.wait()
        t0 = time.perf_counter()
        await tab.goto(url, timeout=timeout * 1000)
        await tab.wait_for_function(f"() => {{ const h = document.querySelector('h1'); return h && "
                                    f"h.innerText.trim() === {json.dumps(TITLE)}; }}", timeout=timeout * 1000)
        await wait_drawn(tab, timeout)
        result.visit_s = time.perf_counter() - t0
        sidebar = tab.locator('[data-testid="stSidebar"]')
        await sidebar.get_by_text("Upload", exact=True).click()
        t1 = time.perf_counter()
        await sidebar.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photo))
        await tab.wait_for_function("n => document.body.innerText.includes('on ' + n)", arg=photo.name,
                                    timeout=timeout * 1000)
        await wait_drawn(tab, timeout)
        result.image_s = time.perf_counter() - t1
        result.exceptions = await tab.locator('[data-testid="stException"]').count()
    except Exception as exc:  # one student's failure is a result of the load test, not its end
        result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        await context.close()
    return result


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


@dataclass
class Round:
    students: int
    visit_p50_s: float | None
    visit_p95_s: float | None
    image_p50_s: float | None
    image_p95_s: float | None
    failed: int
    exceptions: int
    rss_before_mb: float | None
    rss_peak_mb: float | None
    rss_after_mb: float | None
    wall_s: float
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None
    errors: list[str] = field(default_factory=list)


async def protocol_student(_browser, url: str, photo: Path, start: asyncio.Event, timeout: float) -> Student:
    """The same two steps as `student`, over Streamlit's protocol instead of a browser."""
    from streamlit_client import HeadlessSession

    result = Student()
    await start.wait()

    def steps() -> None:
        session = HeadlessSession(url, timeout=timeout)
        try:
            result.visit_s = session.visit()
            session.choose_upload()  # the click on "Upload" before the file: not part of the wait for it
            result.image_s = session.upload(photo.name, photo.read_bytes())
        except Exception as exc:  # one student's failure is a result of the load test, not its end
            result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        finally:
            result.exceptions = session.exceptions
            session.close()

    await asyncio.to_thread(steps)
    return result


async def run_round(browser, url: str, n: int, folder: Path, seed: int, pids: list[int], timeout: float,
                    one_student=student) -> Round:
    photos = [new_photo(folder / f"student{seed + i}.png", seed + i) for i in range(n)]
    go = asyncio.Event()
    before = rss_mb(pids) if pids else None
    tasks = [asyncio.create_task(one_student(browser, url, photo, go, timeout)) for photo in photos]
    await asyncio.sleep(1.0)  # every context open before anyone starts
    cpu_before = cpu_seconds(pids) if pids else None
    client_before = time.process_time()  # this process: the protocol clients' threads (not Chromium's)
    with MemorySampler(pids) as memory:
        t0 = time.perf_counter()
        go.set()
        results = await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    visits = [r.visit_s for r in results if r.visit_s is not None]
    images = [r.image_s for r in results if r.image_s is not None]
    return Round(n, percentile(visits, 50), percentile(visits, 95), percentile(images, 50), percentile(images, 95),
                 sum(r.error is not None for r in results), sum(r.exceptions for r in results), before,
                 memory.peak if pids else None, rss_mb(pids) if pids else None, wall,
                 errors=sorted({r.error for r in results if r.error}),
                 server_cpu_s=cpu_seconds(pids) - cpu_before if pids else None,
                 client_cpu_s=time.process_time() - client_before if one_student is protocol_student else None)


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(rounds: list[Round]) -> str:
    lines = ["| students | visit p50 (s) | visit p95 (s) | new image p50 (s) | new image p95 (s) | failed | "
             "exceptions | server RSS peak (MB) | after (MB) | server CPU (s) | client CPU (s) | round wall (s) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rounds:
        lines.append(f"| {r.students} | {fmt(r.visit_p50_s)} | {fmt(r.visit_p95_s)} | {fmt(r.image_p50_s)} | "
                     f"{fmt(r.image_p95_s)} | {r.failed} | {r.exceptions} | {fmt(r.rss_peak_mb, 0)} | "
                     f"{fmt(r.rss_after_mb, 0)} | {fmt(r.server_cpu_s)} | {fmt(r.client_cpu_s)} | {fmt(r.wall_s)} |")
    return "\n".join(lines)


async def main_async(args) -> list[Round]:
    server, pids, url = None, list(args.pid or []), args.url
    log = Path(tempfile.gettempdir()) / f"resattn_load_test_{os.getpid()}.log"
    if url is None:
        port = free_port()
        server = start_server(port, args.streamlit_arg or [], args.server_cpus, log)
        pids.append(server.pid)
        url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_healthy(url, server, timeout=180)
        except ServerNotHealthy as exc:
            raise SystemExit(f"error: {exc}") from None
        if args.browser_cpus:  # Chromium and its helpers inherit this process's CPU set
            os.sched_setaffinity(0, {int(c) for c in args.browser_cpus.split(",")})
        if args.client == "protocol":
            return await run_rounds(None, url, pids, args, protocol_student)
        from playwright.async_api import async_playwright

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                return await run_rounds(browser, url, pids, args, student)
            finally:
                await browser.close()
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


async def run_rounds(browser, url: str, pids: list[int], args, one_student) -> list[Round]:
    rounds = []
    with tempfile.TemporaryDirectory() as folder:
        # One warm-up student per server: the models load once per process, not per class.
        for i, target in enumerate(args.warm_url or [url]):
            warm = await run_round(browser, target, 1, Path(folder), 10_000 + i, pids, args.timeout,
                                   one_student)
            print(f"warm-up {target}: visit {fmt(warm.visit_p50_s)} s, new image {fmt(warm.image_p50_s)} s"
                  + (f", errors: {warm.errors}" if warm.errors else ""), file=sys.stderr)
        seed = 0
        for n in args.students:
            r = await run_round(browser, url, n, Path(folder), seed, pids, args.timeout, one_student)
            seed += n
            rounds.append(r)
            print(f"N={n}: visit p50 {fmt(r.visit_p50_s)} p95 {fmt(r.visit_p95_s)} s; new image p50 "
                  f"{fmt(r.image_p50_s)} p95 {fmt(r.image_p95_s)} s; failed {r.failed}; "
                  f"RSS peak {fmt(r.rss_peak_mb, 0)} MB; server CPU {fmt(r.server_cpu_s)} s; "
                  f"wall {r.wall_s:.1f} s"
                  + (f"; errors: {r.errors}" if r.errors else ""), file=sys.stderr)
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/load_test.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, nargs="+", default=[1, 8, 16, 32], help="N per round")
    parser.add_argument("--url", help="measure this running server instead of starting one")
    parser.add_argument("--pid", type=int, action="append", help="a server process to sample memory of (with --url)")
    parser.add_argument("--warm-url", action="append",
                        help="warm up this server (each replica behind a proxy) before the rounds; default: --url")
    parser.add_argument("--streamlit-arg", action="append", help="an extra flag for the server it starts")
    parser.add_argument("--server-cpus", help="taskset CPU list for the server it starts, e.g. 0")
    parser.add_argument("--browser-cpus", help="CPU list for the browsers, e.g. 1")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one student may take per step")
    parser.add_argument("--out", help="also write the rounds as JSON here")
    parser.add_argument("--client", choices=["browser", "protocol"], default="browser",
                        help="students in Chromium (default) or headless over Streamlit's protocol")
    args = parser.parse_args(argv)
    if args.client == "browser" and not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} is missing: apt-get install -y chromium", file=sys.stderr)
        return 2
    started = time.time()
    rounds = asyncio.run(main_async(args))
    print(table(rounds))
    print(f"\n{os.cpu_count()} CPUs; server flags: {' '.join(DEPLOY_FLAGS + (args.streamlit_arg or []))}"
          f"{'' if args.url is None else f'; url {args.url}'}; total {time.time() - started:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"rounds": [asdict(r) for r in rounds], "argv": sys.argv,
                                              "cpus": os.cpu_count()}, indent=2))
    return 0 if all(r.failed == 0 and r.exceptions == 0 for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
