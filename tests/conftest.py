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
RELIABILITY_TABLE = ROOT / "test-artifacts" / "reliability.md"
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


def pytest_collection_modifyitems(config, items):
    for item in items:  # `pytest -m reliability` selects every test that records rows
        if "reliability" in getattr(item, "fixturenames", ()):
            item.add_marker("reliability")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = "pass" if report.passed else ("skipped" if report.skipped else "FAIL")
        for row in RELIABILITY_ROWS:
            if row["test"] == item.nodeid and row["outcome"] is None:
                row["outcome"] = outcome
    return report


def pytest_sessionfinish(session, exitstatus):
    if not RELIABILITY_ROWS:
        return
    import datetime
    import platform

    lines = ["# Reliability", "",
             "Generated by the test suite (`make reliability`, which runs `pytest -m reliability` and copies "
             "test-artifacts/reliability.md here). Each row is one case a test checked; *observed* is what "
             "the test saw in this run (the error message a user gets, a measured number), *result* is "
             "whether the test passed.", "",
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
