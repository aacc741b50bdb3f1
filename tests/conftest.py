"""Shared fixtures: tiny models, hook counting and a saved toy checkpoint.

Everything here is small (CIFAR-style networks at width 0.125, 32 px inputs) so that the
suite stays fast on a 2-core machine that is also training models.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` run without `python -m` still finds the library
    sys.path.insert(0, str(ROOT))

import resattn  # noqa: E402
from resattn.checkpoints import model_card  # noqa: E402

# One intra-op thread: with training running in the background on 2 cores, a second OpenMP
# thread spins waiting for a busy core and a tiny forward pass becomes ~100x slower.
torch.set_num_threads(1)

# Under CI=true the suite must check everything it stands for: a skipped test (no pack, no
# browser, no trained checkpoint) fails with its reason instead (see pytest_runtest_makereport),
# and hypothesis draws the same examples on every run (derandomize: a red CI run can be
# re-run and gives the same example; locally the examples stay random and find new cases).
CI = os.environ.get("CI", "").lower() == "true"

from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
_hypothesis_settings.load_profile("ci" if CI else os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_configure(config):
    # An exception in a worker thread fails the test that started the thread (pytest only
    # warns about it by default, and the test would pass).
    config.addinivalue_line("filterwarnings", "error::pytest.PytestUnhandledThreadExceptionWarning")

TINY_CLASSES = ["tench", "church", "parachute", "golf ball"]


def build_tiny(name: str = "attention56_cifar", *, attention: str = "mixed", residual: str = "arl",
               width: float = 0.125, num_classes: int = len(TINY_CLASSES), seed: int = 0) -> nn.Module:
    """A seeded model in eval mode that behaves numerically like a trained one.

    BatchNorm affine parameters are randomised (with the default init every BN is the same
    map, which could hide bugs that mix up tensors of the same shape), and the running
    statistics are measured on one batch of noise: with the default statistics (mean 0,
    var 1) an untrained network in eval mode lets activations grow with depth until the
    mask logits reach +-100 and every sigmoid saturates.
    """
    torch.manual_seed(seed)
    model = resattn.create_model(name, attention=attention, residual=residual, width=width,
                                 num_classes=num_classes)
    generator = torch.Generator().manual_seed(seed + 1)
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in batchnorms:
            n = bn.num_features
            bn.weight.copy_(torch.rand(n, generator=generator) + 0.5)
            bn.bias.copy_(torch.randn(n, generator=generator) * 0.1)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: one batch sets the statistics
        size = 32 if name.endswith("_cifar") else 64
        model.train()(torch.randn(8, 3, size, size, generator=generator))
        for bn in batchnorms:
            bn.momentum = 0.1
    return model.eval()


def count_hooks(model: nn.Module) -> int:
    """Forward (pre-)hooks registered on the model or any submodule."""
    total = 0
    for module in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                     "_backward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs"):
            total += len(getattr(module, attr, {}) or {})
    return total


def run_in_threads(work, args_list, *, timeout: float = 300.0, start_together: bool = True) -> list:
    """work(*args) in one thread per entry of args_list, all released at once; returns the
    results in order. Every exception raised in a worker, and every worker still running
    after `timeout`, fails the calling test with all of them listed."""
    import threading
    import traceback

    results, errors = [None] * len(args_list), []
    barrier = threading.Barrier(len(args_list)) if start_together and args_list else None

    def run(i, args):
        try:
            if barrier is not None:
                barrier.wait(timeout=timeout)
            results[i] = work(*args)
        except BaseException as exc:  # noqa: BLE001 (collected and reported below)
            errors.append(f"worker {i} {args!r}: {''.join(traceback.format_exception_only(exc)).strip()}")

    threads = [threading.Thread(target=run, args=(i, args), daemon=True) for i, args in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    assert not errors and not hung, f"{len(errors)} worker(s) raised, {len(hung)} still running {hung}: " + "; ".join(
        errors)
    return results


def rss_bytes() -> int:
    """Resident set size of this process now (not the lifetime peak of ru_maxrss)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_during(work):
    """(work(), peak RSS reached while it ran minus RSS before it, in bytes). The kernel's
    peak (VmHWM) is reset first (`5` to /proc/self/clear_refs), so an earlier, higher peak of
    this long-lived test process cannot hide this one."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = rss_bytes()
    result = work()
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    return result, peak - before


@pytest.fixture
def one_thread():
    """Run the test on one intra-op thread (modules opt in with `usefixtures`): on a small,
    busy CI machine two threads that wait for each other make tiny models slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_model():
    """Factory: tiny_model(name=..., attention=..., residual=..., width=..., seed=...)."""
    return build_tiny


@pytest.fixture
def hooks():
    """hooks(model) -> number of forward/backward hooks left on the model and its submodules."""
    return count_hooks


@pytest.fixture
def images():
    """images(n, size, seed) -> a seeded N x 3 x size x size float tensor."""
    def make(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
        return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return make


def toy_card(model: nn.Module, classes=TINY_CLASSES) -> dict:
    return model_card(
        model, classes=list(classes), input_size=32, train_size=32,
        metrics={"val_top1": 25.0, "val_per_class_top1": [25.0] * len(classes)},
        recipe={"command": "tests/conftest.py", "seed": 0, "epochs": 0, "wall_time_s": 0.0,
                "hardware": "none", "commit": "test"},
        weights="random initialisation (test fixture)",
    )


@pytest.fixture(scope="session")
def saved_checkpoint(tmp_path_factory):
    """(stem, model, card) of a tiny checkpoint saved once per session. Read-only: tests that
    change files use `checkpoint_copy`."""
    model = build_tiny(seed=3)
    card = toy_card(model)
    stem = tmp_path_factory.mktemp("ckpt") / "toy_mixed_arl"
    resattn.save_checkpoint(stem, model, card)
    return stem, model, card


@pytest.fixture
def checkpoint_copy(saved_checkpoint, tmp_path):
    """A private copy of the saved checkpoint's two files in tmp_path; returns its stem."""
    stem, _, _ = saved_checkpoint
    for suffix in (".safetensors", ".json"):
        shutil.copy2(stem.with_name(stem.name + suffix), tmp_path / (stem.name + suffix))
    return tmp_path / stem.name


# ----------------------------------------------------------------------------- reliability table
# Tests of hostile input and faults take the `reliability` fixture and record, per case, what
# was expected and what they observed (the actual error message, the measured growth, ...).
# The rows, with each test's outcome, are written to test-artifacts/reliability.md at the end
# of the run; `make reliability` runs just those tests and copies the table to docs/.

RELIABILITY_ROWS: list[dict] = []
# RESATTN_RELIABILITY_TABLE: another place (the tests of this machinery run pytest inside pytest).
RELIABILITY_TABLE = Path(os.environ.get("RESATTN_RELIABILITY_TABLE", ROOT / "test-artifacts" / "reliability.md"))
RELIABILITY_AREAS = ["images", "checkpoints", "concurrency", "soak", "training"]


def _one_line(text: str, limit: int = 160) -> str:
    import re

    text = re.sub(r"/tmp/pytest-of-[^/\s]+/pytest-\d+/[^/\s]+", "<tmp>", str(text))  # pytest's tmp_path
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@pytest.fixture
def reliability(request):
    """record(area, case, expected, observed): one row of the reliability table."""
    def record(area: str, case: str, expected: str, observed: str) -> None:
        assert area in RELIABILITY_AREAS, area
        RELIABILITY_ROWS.append({"area": area, "case": case, "expected": expected, "observed": observed,
                                 "test": request.node.nodeid, "outcome": None})
    return record


def pytest_addoption(parser):
    parser.addoption("--reliability-publish", metavar="PATH",
                     help="after the run, copy the reliability table to PATH, but only when it is complete: "
                          "every collected test that records rows passed and recorded, and every case of the "
                          "table already at PATH is there again (`make reliability` uses it)")


def pytest_collection_modifyitems(config, items):
    # Before -m/-k deselect anything: the tests a complete table needs (see --reliability-publish).
    config.reliability_tests = []
    for item in items:  # `pytest -m reliability` selects every test that records rows
        if "reliability" in getattr(item, "fixturenames", ()):
            item.add_marker("reliability")
            config.reliability_tests.append(item.nodeid)


def _fail_skip_under_ci(report) -> None:
    """Under CI=true a skip is a failure, reported in one line with the skip's reason."""
    if not (CI and report.skipped and not hasattr(report, "wasxfail")):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"CI=true: skipped, but CI must run this test: {reason.removeprefix('Skipped: ')}"


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _fail_skip_under_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _fail_skip_under_ci(report)
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = "pass" if report.passed else ("skipped" if report.skipped else "FAIL")
        for row in RELIABILITY_ROWS:
            if row["test"] == item.nodeid and row["outcome"] is None:
                row["outcome"] = outcome
    return report


def published_cases(path: Path) -> list[str]:
    """The case column of a reliability table (as _one_line wrote it)."""
    cases = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        if line.startswith("| ") and not line.startswith("| case |"):
            cases.append(line[2:].split(" | ", 1)[0])
    return cases


def reliability_gaps(config, published: Path) -> list[str]:
    """Why the table of this run is not complete; empty when it is."""
    gaps = []
    recorded = {r["test"] for r in RELIABILITY_ROWS}
    for nodeid in getattr(config, "reliability_tests", []):
        if nodeid not in recorded:
            gaps.append(f"{nodeid} recorded no row (deselected, skipped or failed before recording)")
    gaps += [f"{r['test']}: row '{r['case']}' is {r['outcome'] or 'unfinished'}" for r in RELIABILITY_ROWS
             if r["outcome"] != "pass"]
    now = {_one_line(r["case"], 90) for r in RELIABILITY_ROWS}
    gaps += [f"{published} has the case '{case}', which this run did not record (if it was removed on purpose, "
             "delete its row there first)" for case in published_cases(published) if case not in now]
    return gaps


def pytest_sessionfinish(session, exitstatus):
    publish = session.config.getoption("reliability_publish", None)
    if not RELIABILITY_ROWS:
        if publish:
            print(f"\nreliability: no row was recorded; {publish} left as it was.", file=sys.stderr)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    import datetime
    import platform

    lines = ["# Reliability", "",
             "Generated by the test suite (`make reliability`, which runs `pytest -m reliability` and copies "
             "test-artifacts/reliability.md here only when every row is there). Each row is one case a test "
             "checked; *observed* is what the test saw in this run (the error message a user gets, a measured "
             "number), *result* is whether the test passed.", "",
             f"Run: {datetime.date.today().isoformat()}, {platform.machine()}, Python {platform.python_version()}, "
             f"torch {torch.__version__}, {os.cpu_count()} CPU cores.", ""]
    for area in RELIABILITY_AREAS:
        rows = [r for r in RELIABILITY_ROWS if r["area"] == area]
        if not rows:
            continue
        lines += [f"## {area.capitalize()}", "", "| case | expected | observed | result | test |",
                  "|---|---|---|---|---|"]
        for r in rows:
            test = r["test"].split("::", 1)[-1].split("[")[0]
            lines.append(f"| {_one_line(r['case'], 90)} | {_one_line(r['expected'])} | {_one_line(r['observed'], 600)} "
                         f"| {r['outcome'] or 'FAIL'} | `{test}` |")
        lines.append("")
    RELIABILITY_TABLE.parent.mkdir(parents=True, exist_ok=True)
    RELIABILITY_TABLE.write_text("\n".join(lines))
    if publish:
        gaps = reliability_gaps(session.config, Path(publish))
        if gaps or exitstatus != 0:
            print(f"\nreliability: not publishing {publish}: the table is incomplete.\n  " + "\n  ".join(
                gaps or [f"pytest exited with {int(exitstatus)}"]), file=sys.stderr)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        else:
            shutil.copyfile(RELIABILITY_TABLE, publish)
            print(f"\nreliability: {len(RELIABILITY_ROWS)} rows published to {publish}.", file=sys.stderr)
