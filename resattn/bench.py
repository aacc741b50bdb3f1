"""`python -m resattn.bench`: inference, trace, training and app timings side by side, in one run.

    python -m resattn.bench [--device D] [--threads N] [--json OUT] [--markdown OUT] [--quick]
                            [--only SECTIONS] [--compile] [--profile] [--retain-freed-memory]
                            [--checkpoints DIR]
    python -m resattn.bench --from-json RUN.json [RUN2.json ...] --markdown docs/benchmarks.md [--notes FILE]

Sections (all by default, `--only latency,trace` for some):

latency   Attention-56 and Attention-92 (width 1.0) and torchvision's ResNet-50 and ResNet-101,
          built in this process, at batch 1 and 16 and 224 px. Two variants of every model:
          "eager" (as built) and "fused" (BatchNorm folded away: `fuse_for_inference` for the
          attention networks, torch.fx's conv-BN fusion for the ResNets); with `--compile` a
          third, "compiled" (torch.compile of the eager model). Reported as ratios to
          ResNet-50 (same variant and batch, and as-built ResNet-50) next to the MAC ratios,
          which FlopCounterMode counts on the same models.
trace     `resattn.trace` against a plain forward of the same Attention-56, batch 1, 224 px.
training  Attention-56 at the zoo's width, input size and batch (scripts/train_zoo.sh):
          forward, backward and SGD step on random tensors, images per second.
app       a new image (JPEG bytes -> load_image -> preprocess -> trace and softmax) through
          every checkpoint in checkpoints/ (or five random-weight models of the zoo's
          architectures when there are none; the "source" field says which), as loaded and
          optimised; and a cached re-render of the explorer page, measured in a subprocess
          (resattn never imports streamlit) when the app has one.
profile   only with `--profile`: torch.profiler's self time per operator of batch-1 forwards of
          Attention-56 and ResNet-50, as built and fused (where the time goes).
Every section records its peak memory (RSS; CUDA peak allocation on a GPU) and minor page
faults; the latency rows record page faults per pass. `--retain-freed-memory` keeps glibc
from unmapping large freed blocks (see `retain_freed_memory`), for every model alike.

Method. Every model is in eval mode under `torch.inference_mode`, in channels_last with
channels_last inputs, with the same number of threads (2 on the CPU unless `--threads`). The
cases of a section run interleaved: one pass of each in turn, the order reversed every
repetition, after warm-up passes; the tables give medians and interquartile ranges. Ratios
of interleaved medians survive a busy machine better than absolute times do; the load
average at the start is recorded so a reader can tell. `--quick` shrinks every size and
repeat count so that the whole run takes well under a minute: it checks the harness, its
figures mean nothing.

What the profiler showed, and what `resattn.model.fuse` does about it, is in that module's
docstring and in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import datetime as _dt
import gc
import io
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .checkpoints import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    list_checkpoints,
    load_checkpoint,
    model_card,
    save_checkpoint,
)
from .data import preprocess
from .device import pick_device
from .errors import ResattnError
from .images import load_image
from .model import create_model
from .model.fuse import fuse_for_inference, optimise_for_inference
from .trace import trace

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("latency", "trace", "training", "app")
OPTIONAL_SECTIONS = ("profile",)  # run only when asked for (--profile or --only profile)
RESNETS = ("resnet50", "resnet101")
ATTENTION_NETS = ("attention56", "attention92")
BASELINE = "resnet50"
# The zoo's architectures (scripts/train_zoo.sh): Attention-56, width 0.25, 10 classes.
ZOO_VARIANTS = (("mixed", "arl"), ("channel", "arl"), ("spatial", "arl"), ("mixed", "nal"), ("none", "arl"))
ZOO_ARCH, ZOO_WIDTH, ZOO_CLASSES, ZOO_INPUT_SIZE = "attention56", 0.25, 10, 128
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
# Issue 7's targets for this project's CPU (2 threads): (key, what, limit, unit).
TARGETS = (
    ("a56_r50_fused_vs_eager", "Attention-56 (fused) / ResNet-50 (as built), forward, batch 1", 1.5, "x"),
    ("a56_r50_fused_vs_fused", "Attention-56 / ResNet-50, both BN-folded, forward, batch 1", 1.5, "x"),
    ("a56_r50_eager_vs_eager", "Attention-56 / ResNet-50, both as built, forward, batch 1", 1.5, "x"),
    ("trace_fused", "trace / plain forward, Attention-56 fused", 1.05, "x"),
    ("trace_eager", "trace / plain forward, Attention-56 as built", 1.05, "x"),
    ("rerender", "cached re-render of the explorer page", 150.0, "ms"),
    ("new_image_optimised", "new 128 px image through all zoo models (optimised)", 1000.0, "ms"),
    ("new_image_loaded", "new 128 px image through all zoo models (as loaded)", 1000.0, "ms"),
)


@dataclass(frozen=True)
class Plan:
    """Sizes and repeat counts of one run."""
    image_size: int = 224
    batches: tuple[int, ...] = (1, 16)
    repeats: tuple[int, ...] = (15, 5)  # timed passes per case, one entry per batch size
    warmup: int = 2
    width: float = 1.0
    trace_repeats: int = 15
    train_size: int = 96
    train_batch: int = 64
    train_steps: int = 8
    train_warmup: int = 2
    zoo_repeats: int = 9
    app_reruns: int = 5
    app_timeout_s: int = 600


FULL = Plan()
QUICK = Plan(image_size=64, batches=(1, 2), repeats=(2, 2), warmup=1, width=0.25, trace_repeats=2, train_size=32,
             train_batch=8, train_steps=2, train_warmup=1, zoo_repeats=2, app_reruns=1, app_timeout_s=120)


# ------------------------------------------------------------------------------ measuring

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(cases: dict[str, Callable[[], Any]], *, repeats: int, warmup: int, device: torch.device,
                     page_faults: dict[str, list[int]] | None = None) -> dict[str, list[float]]:
    """Seconds per call of every case: `warmup` untimed rounds, then `repeats` rounds of one
    call per case, in alternating order so that a slow phase of the machine hits all alike.
    With a `page_faults` dict, the minor page faults of every timed call are put there too
    (unlike times, they do not depend on what else the machine is doing)."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    _sync(device)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in (names if round_ % 2 == 0 else names[::-1]):
            _sync(device)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            cases[name]()
            _sync(device)
            seconds[name].append(time.perf_counter() - start)
            if page_faults is not None:
                page_faults.setdefault(name, []).append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
    return seconds


def summarise(seconds: list[float]) -> dict:
    """Median, quartiles and minimum in milliseconds."""
    ms = sorted(1000.0 * s for s in seconds)
    q1, q3 = (statistics.quantiles(ms, n=4, method="inclusive")[::2] if len(ms) > 1 else (ms[0], ms[0]))
    return {"median_ms": statistics.median(ms), "q1_ms": q1, "q3_ms": q3, "min_ms": ms[0], "n": len(ms)}


def retain_freed_memory() -> bool:
    """Make glibc serve every allocation from its heap and keep freed memory for reuse
    (mallopt M_MMAP_MAX = 0, M_TRIM_THRESHOLD = 2 GiB). By default a block above 32 MiB is
    mmap'ed fresh and unmapped on free, so every large activation (batch 16 at 224 px) is
    page-faulted and zeroed again on every forward pass. Process-wide; True if it took effect."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


class PeakMemory:
    """Peak resident memory over a `with` block (Linux resets the high-water mark through
    /proc/self/clear_refs; elsewhere the process-wide peak is reported), the CUDA peak, and
    the minor page faults taken (memory the kernel had to map and zero for the block)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.result: dict = {}

    def __enter__(self) -> "PeakMemory":
        # Hand memory freed by earlier sections back to the OS first, so that the peak is this
        # section's own (glibc keeps freed blocks otherwise, and RSS would not go down).
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.scope = "section"
        except OSError:
            self.scope = "process"
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        return self

    def __exit__(self, *exc) -> None:
        peak_kb = None
        if self.scope == "section":
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = int(line.split()[1])
        if peak_kb is None:  # ru_maxrss is in kB on Linux, bytes on macOS
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak_kb = peak // 1024 if sys.platform == "darwin" else peak
            self.scope = "process"
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.faults
        self.result = {"rss_peak_mb": round(peak_kb / 1024, 1), "rss_scope": self.scope, "minor_page_faults": faults}
        if self.device.type == "cuda":
            self.result["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)


def count_macs(model: nn.Module, size: int, device: torch.device) -> int:
    """Multiply-accumulates of one image (FlopCounterMode counts FLOPs = 2 x MACs)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, size, size, device=device).contiguous(memory_format=torch.channels_last))
    return counter.get_total_flops() // 2


def channels_last_input(batch: int, size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=generator)
    return x.to(device).contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------ models

def build_reference(name: str, plan: Plan, device: torch.device) -> nn.Module:
    """An eval-mode model with fixed random weights, in channels_last on `device`."""
    torch.manual_seed(0)
    if name in RESNETS:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None)
    else:
        model = create_model(name, width=plan.width)
    return model.eval().to(device, memory_format=torch.channels_last)


def fused_variant(model: nn.Module) -> nn.Module:
    """BN folded away: resattn's fuse_for_inference, or torch.fx's conv-BN fusion for ResNets."""
    if getattr(model, "arch", None) is not None:
        fused = fuse_for_inference(model)
    else:
        from torch.fx.experimental.optimization import fuse

        fused = fuse(copy.deepcopy(model))
    return fused.to(memory_format=torch.channels_last)


def variants(model: nn.Module, *, compile_model: bool) -> dict[str, nn.Module]:
    out = {"eager": model, "fused": fused_variant(model)}
    if compile_model:
        out["compiled"] = torch.compile(model, dynamic=False)  # one specialised graph per batch size
    return out


# ------------------------------------------------------------------------------ sections

def run_latency(plan: Plan, device: torch.device, *, compile_model: bool, log: Callable[[str], None]) -> dict:
    names = ATTENTION_NETS + RESNETS
    models = {name: build_reference(name, plan, device) for name in names}
    macs = {name: count_macs(model, plan.image_size, device) for name, model in models.items()}
    built = {name: variants(model, compile_model=compile_model) for name, model in models.items()}
    rows = []
    with torch.inference_mode():
        for batch, repeats in zip(plan.batches, plan.repeats):
            x = channels_last_input(batch, plan.image_size, device)
            cases = {(name, variant): (lambda m=m: m(x)) for name in names for variant, m in built[name].items()}
            log(f"latency: batch {batch}, {len(cases)} cases x {repeats} passes")
            faults: dict = {}
            seconds = time_interleaved(cases, repeats=repeats, warmup=plan.warmup, device=device, page_faults=faults)
            for (name, variant), times in seconds.items():
                rows.append({"model": name, "variant": variant, "batch": batch, **summarise(times),
                             "page_faults": int(statistics.median(faults[(name, variant)])),
                             "macs": macs[name], "mac_ratio": macs[name] / macs[BASELINE]})
    medians = {(r["model"], r["variant"], r["batch"]): r["median_ms"] for r in rows}
    minima = {(r["model"], r["variant"], r["batch"]): r["min_ms"] for r in rows}
    for row in rows:
        row["ratio_to_resnet50"] = row["median_ms"] / medians[(BASELINE, row["variant"], row["batch"])]
        row["ratio_to_resnet50_eager"] = row["median_ms"] / medians[(BASELINE, "eager", row["batch"])]
        # Fastest passes: on a machine shared with other work, the closest to the undisturbed cost.
        row["min_ratio_to_resnet50"] = row["min_ms"] / minima[(BASELINE, row["variant"], row["batch"])]
    return {"image_size": plan.image_size, "width": plan.width, "memory_format": "channels_last",
            "mode": "eval, torch.inference_mode", "rows": rows}


def run_trace(plan: Plan, device: torch.device, *, log: Callable[[str], None]) -> dict:
    model = build_reference("attention56", plan, device)
    built = {"eager": model, "fused": fused_variant(model)}
    x = channels_last_input(1, plan.image_size, device)
    cases = {}
    for variant, m in built.items():
        cases[(variant, "forward")] = lambda m=m: _forward(m, x)
        cases[(variant, "trace")] = lambda m=m: trace(m, x)
    log(f"trace: {len(cases)} cases x {plan.trace_repeats} passes")
    faults: dict = {}
    seconds = time_interleaved(cases, repeats=plan.trace_repeats, warmup=plan.warmup, device=device,
                               page_faults=faults)
    rows = []
    for variant in built:
        forward, traced = summarise(seconds[(variant, "forward")]), summarise(seconds[(variant, "trace")])
        forward["page_faults"] = int(statistics.median(faults[(variant, "forward")]))
        traced["page_faults"] = int(statistics.median(faults[(variant, "trace")]))
        rows.append({"model": "attention56", "variant": variant, "batch": 1, "forward_ms": forward["median_ms"],
                     "trace_ms": traced["median_ms"], "forward": forward, "trace": traced,
                     "ratio": traced["median_ms"] / forward["median_ms"]})
    return {"image_size": plan.image_size, "width": plan.width, "memory_format": "channels_last",
            "mode": "forward under torch.inference_mode; trace as called by the app", "rows": rows}


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


def run_training(plan: Plan, device: torch.device, *, log: Callable[[str], None]) -> dict:
    from .train import parameter_groups

    torch.manual_seed(0)
    model = create_model(ZOO_ARCH, width=ZOO_WIDTH, num_classes=ZOO_CLASSES)
    model = model.to(device, memory_format=torch.channels_last).train()
    # The zoo's optimiser and loss (resattn.train defaults: nesterov SGD, weight decay on
    # weights only, label smoothing 0.1).
    optimizer = torch.optim.SGD(parameter_groups(model, 5e-4), lr=0.05, momentum=0.9, nesterov=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    images = channels_last_input(plan.train_batch, plan.train_size, device)
    labels = torch.randint(ZOO_CLASSES, (plan.train_batch,), generator=torch.Generator().manual_seed(0)).to(device)

    def step() -> None:
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    log(f"training: {plan.train_steps} steps of batch {plan.train_batch} at {plan.train_size} px")
    faults: dict = {}
    seconds = time_interleaved({"step": step}, repeats=plan.train_steps, warmup=plan.train_warmup, device=device,
                               page_faults=faults)
    summary = {**summarise(seconds["step"]), "page_faults": int(statistics.median(faults["step"]))}
    return {"model": ZOO_ARCH, "width": ZOO_WIDTH, "image_size": plan.train_size, "batch": plan.train_batch,
            "classes": ZOO_CLASSES, "memory_format": "channels_last", "step": summary,
            "img_per_s": plan.train_batch / (summary["median_ms"] / 1000.0),
            "what": "forward + backward + SGD step on random tensors (no data loading)"}


def zoo_models(folder: Path, device: torch.device) -> tuple[list[tuple[str, nn.Module, dict]], str, float]:
    """The zoo as the app holds it: (name, eval model, card) per checkpoint, where they came
    from, and the seconds loading took. Random weights of the zoo's architectures if none."""
    start = time.perf_counter()
    found = list_checkpoints(folder)
    if found:
        models = []
        for stem, _ in found:
            model, card = load_checkpoint(stem.with_suffix(".safetensors"), device=device)
            models.append((stem.name, model, card))
        source = f"{folder.name}/" if folder.resolve().parent == ROOT else str(folder)
    else:
        models = []
        classes = [f"class {i}" for i in range(ZOO_CLASSES)]
        for attention, residual in ZOO_VARIANTS:
            torch.manual_seed(0)
            model = create_model(ZOO_ARCH, attention=attention, residual=residual, width=ZOO_WIDTH,
                                 num_classes=ZOO_CLASSES).to(device).eval()
            card = model_card(model, classes=classes, input_size=ZOO_INPUT_SIZE)
            models.append((f"{ZOO_ARCH}_{attention}" + ("" if attention == "none" else f"_{residual}"), model, card))
        source = "random weights (no checkpoints found)"
    return models, source, time.perf_counter() - start


def sample_jpegs() -> list[bytes]:
    """Bundled scikit-image photos as JPEG bytes, the way an upload reaches the app."""
    import skimage.data
    from PIL import Image

    out = []
    for name in SAMPLE_PHOTOS:
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def new_image_through(models: list[tuple[str, nn.Module, dict]], data: bytes, device: torch.device, *,
                      channels_last: bool) -> dict[str, torch.Tensor]:
    """What the app does with a new image: decode, preprocess per input size, trace every
    model, softmax, keep the records on the CPU. Returns the probabilities per model."""
    image = load_image(data)
    inputs: dict[tuple, torch.Tensor] = {}
    probabilities = {}
    for name, model, card in models:
        key = (int(card.get("input_size", ZOO_INPUT_SIZE)), tuple(card.get("mean", IMAGENET_MEAN)),
               tuple(card.get("std", IMAGENET_STD)))
        if key not in inputs:
            x = preprocess(image, key[0], key[1], key[2]).to(device)
            inputs[key] = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        record = trace(model, inputs[key]).to("cpu")
        probabilities[name] = record.logits.softmax(dim=1)
    return probabilities


def run_app(plan: Plan, device: torch.device, *, checkpoints: Path, log: Callable[[str], None]) -> dict:
    models, source, load_s = zoo_models(checkpoints, device)
    start = time.perf_counter()
    optimised = [(name, optimise_for_inference(model), card) for name, model, card in models]
    optimise_s = time.perf_counter() - start
    photos = sample_jpegs()
    turn = {"loaded": 0, "optimised": 0}

    def case(kind: str, zoo, channels_last: bool) -> Callable[[], Any]:
        def run() -> None:
            # A different photo on every call: nothing can be served from a previous one.
            data = photos[turn[kind] % len(photos)]
            turn[kind] += 1
            new_image_through(zoo, data, device, channels_last=channels_last)
        return run

    cases = {"loaded": case("loaded", models, False), "optimised": case("optimised", optimised, True)}
    log(f"app: a new image through {len(models)} models x {plan.zoo_repeats} passes ({source})")
    seconds = time_interleaved(cases, repeats=plan.zoo_repeats, warmup=1, device=device)
    sizes = sorted({int(card.get("input_size", ZOO_INPUT_SIZE)) for _, _, card in models})
    new_image = {"source": source, "models": [name for name, _, _ in models], "input_sizes": sizes,
                 "load_s": load_s, "optimise_s": optimise_s,
                 "loaded": summarise(seconds["loaded"]), "optimised": summarise(seconds["optimised"]),
                 "what": "JPEG bytes -> load_image -> preprocess -> trace -> softmax, every model, records to CPU"}
    log("app: cached re-render of the explorer page (subprocess)")
    if found_checkpoints(checkpoints):
        rerender = measure_rerender(ROOT, plan.app_reruns, plan.app_timeout_s, checkpoints=checkpoints)
    else:
        # Give the page something to show: the random-weight zoo, saved to a temporary folder.
        with tempfile.TemporaryDirectory(prefix="resattn-bench-") as folder:
            for name, model, card in models:
                save_checkpoint(Path(folder) / name, model, card)
            rerender = measure_rerender(ROOT, plan.app_reruns, plan.app_timeout_s, checkpoints=Path(folder))
        rerender["checkpoints"] = source
    return {"new_image": new_image, "rerender": rerender}


def found_checkpoints(folder: Path) -> bool:
    return bool(list_checkpoints(folder))


def run_profile(plan: Plan, device: torch.device, *, log: Callable[[str], None]) -> dict:
    """torch.profiler's view of batch-1 forwards of Attention-56 and ResNet-50, as built and
    fused: self CPU time per operator, per pass (where the time goes, before optimising)."""
    from torch.profiler import ProfilerActivity, profile

    attention56, resnet50 = build_reference("attention56", plan, device), build_reference("resnet50", plan, device)
    models = {("attention56", "eager"): attention56, ("attention56", "fused"): fused_variant(attention56),
              ("resnet50", "eager"): resnet50, ("resnet50", "fused"): fused_variant(resnet50)}
    x = channels_last_input(1, plan.image_size, device)
    passes = max(1, plan.trace_repeats // 3)
    rows = []
    with torch.inference_mode():
        for (name, variant), model in models.items():
            log(f"profile: {name} ({variant}), {passes} passes")
            for _ in range(plan.warmup):
                model(x)
            _sync(device)
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                for _ in range(passes):
                    model(x)
                _sync(device)
            events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
            total = sum(e.self_cpu_time_total for e in events)
            top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
            rows.append({"model": name, "variant": variant, "passes": passes,
                         "self_cpu_ms_per_pass": total / 1000 / passes,
                         "ops": [{"op": e.key, "calls_per_pass": e.count / passes,
                                  "self_cpu_ms_per_pass": e.self_cpu_time_total / 1000 / passes,
                                  "share": e.self_cpu_time_total / total} for e in top]})
    return {"image_size": plan.image_size, "batch": 1, "memory_format": "channels_last", "rows": rows,
            "note": "wall-clock self time of each operator on the calling thread (torch.profiler, CPU activity)"}


# The re-render probe runs in its own interpreter: the app's modules import streamlit, and
# resattn must not (nor should a page's caches leak into the timings above). It runs AppTest
# on app.py switched to pages/explorer.py (or on the page alone) and prints one JSON line.
_RERENDER_PROBE = r'''
import json, statistics, sys, time
from pathlib import Path
root, reruns = Path(sys.argv[1]), int(sys.argv[2])
sys.path.insert(0, str(root))

def report(**fields):
    print("RESATTN_BENCH " + json.dumps(fields), flush=True)
    sys.exit(0)

def median_ms(fn, n):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), times

page, entry = root / "pages" / "explorer.py", root / "app.py"
if not page.is_file():
    report(status="not measured (app page not found)")
from streamlit.testing.v1 import AppTest
import streamlit.commands.execution_control as execution_control

# AppTest starts every run like a freshly started server, which runs a file of pages/ without
# app.py; an app that then detours through app.py (st.switch_page) pays st.switch_page's
# message-flush sleeps, which a running server's reruns never see. Skip the sleeps and count
# the detours, so that the figure is the scripts' own time.
switches = []
_switch_page = execution_control.switch_page

class _NoSleep:
    def __getattr__(self, name):
        return (lambda seconds: None) if name == "sleep" else getattr(time, name)

execution_control.time = _NoSleep()
if entry.is_file():
    app, method = AppTest.from_file(str(entry), default_timeout=600), "AppTest(app.py -> pages/explorer.py)"
    app.run()
    app.switch_page("pages/explorer.py")
else:
    app, method = AppTest.from_file(str(page), default_timeout=600), "AppTest(pages/explorer.py)"
first, _ = median_ms(app.run, 1)
if len(app.exception):
    report(status="failed", method=method, error=str(app.exception[0].value)[:500])
import streamlit as st
st.switch_page = execution_control.switch_page = lambda *a, **k: (switches.append(1), _switch_page(*a, **k))[1]
cached, times = median_ms(app.run, reruns)
if len(app.exception):
    report(status="failed", method=method, error=str(app.exception[0].value)[:500])
# What the page showed, so that a fast time of an empty page is recognisable as such.
notes = [f"{kind}: {str(element.value)[:160]}" for kind in ("error", "warning", "info")
         for element in getattr(app, kind)][:4]
report(status="measured", method=method, first_ms=first, cached_ms=cached, cached_runs_ms=times,
       elements=len(getattr(app.main, "children", None) or {}), notes=notes,
       page_switches_per_run=len(switches) / max(1, reruns), switch_page_sleeps="skipped")
'''


def measure_rerender(root: Path, reruns: int, timeout_s: int, *, checkpoints: Path | None = None) -> dict:
    """The explorer page's cached re-render time ("server time": the script run, no browser),
    with the app reading `checkpoints` (RESATTN_CHECKPOINTS) when given.
    Returns {"status": "measured", "cached_ms": ..., ...} or a status saying why not."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    if checkpoints is not None:
        env["RESATTN_CHECKPOINTS"] = str(checkpoints)
    try:
        done = subprocess.run([sys.executable, "-c", _RERENDER_PROBE, str(root), str(reruns)], cwd=root, env=env,
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": f"not measured (timed out after {timeout_s} s)"}
    for line in done.stdout.splitlines():
        if line.startswith("RESATTN_BENCH "):
            return json.loads(line[len("RESATTN_BENCH "):])
    tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])[:500]
    return {"status": "failed", "error": tail or f"exit code {done.returncode}"}


# ------------------------------------------------------------------------------ the run

def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import torchvision

    info = {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device": str(device), "mkldnn": torch.backends.mkldnn.is_available()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    with contextlib.suppress(OSError, AttributeError):
        info["load_average_start"] = [round(v, 2) for v in os.getloadavg()]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
        info["commit"] = (head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        info["commit"] = "unknown"
    return info


def _latency_ratio(result: dict, variant: str, baseline_key: str) -> float | None:
    for row in result.get("latency", {}).get("rows", []):
        if row["model"] == "attention56" and row["variant"] == variant and row["batch"] == 1:
            return row[baseline_key]
    return None


def evaluate_targets(result: dict) -> list[dict]:
    """Issue 7's targets against this run. They are defined for the CPU with 2 threads on a
    full run; elsewhere `applies` is False (the figures are still shown)."""
    trace_rows = {row["variant"]: row["ratio"] for row in result.get("trace", {}).get("rows", [])}
    app = result.get("app", {})
    new_image = app.get("new_image", {})
    rerender = app.get("rerender", {})
    measured = {
        "a56_r50_fused_vs_eager": _latency_ratio(result, "fused", "ratio_to_resnet50_eager"),
        "a56_r50_fused_vs_fused": _latency_ratio(result, "fused", "ratio_to_resnet50"),
        "a56_r50_eager_vs_eager": _latency_ratio(result, "eager", "ratio_to_resnet50"),
        "trace_fused": trace_rows.get("fused"),
        "trace_eager": trace_rows.get("eager"),
        "rerender": rerender.get("cached_ms"),
        "new_image_optimised": new_image.get("optimised", {}).get("median_ms"),
        "new_image_loaded": new_image.get("loaded", {}).get("median_ms"),
    }
    machine = result.get("machine", {})
    applies = (not result.get("quick") and machine.get("device") == "cpu" and machine.get("torch_threads") == 2)
    out = []
    for key, what, limit, unit in TARGETS:
        value = measured[key]
        if key.startswith("new_image") and 128 not in new_image.get("input_sizes", [128]):
            value = None  # the target is for 128 px images
        out.append({"key": key, "what": what, "limit": limit, "unit": unit, "measured": value,
                    "met": None if value is None else bool(value <= limit), "applies": applies})
    return out


def run(plan: Plan, device: torch.device, *, sections: tuple[str, ...], compile_model: bool, checkpoints: Path,
        quick: bool, command: str, allocator: str = "default", log: Callable[[str], None] = print) -> dict:
    result: dict = {"command": command, "quick": quick, "plan": asdict(plan), "sections": list(sections),
                    "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "machine": {**machine_info(device), "allocator": allocator}, "compile": compile_model,
                    "memory": {}, "errors": {}}
    runners = {
        "latency": lambda: run_latency(plan, device, compile_model=compile_model, log=log),
        "trace": lambda: run_trace(plan, device, log=log),
        "training": lambda: run_training(plan, device, log=log),
        "app": lambda: run_app(plan, device, checkpoints=checkpoints, log=log),
        "profile": lambda: run_profile(plan, device, log=log),
    }
    started = time.perf_counter()
    for section in sections:
        with PeakMemory(device) as memory:
            try:
                result[section] = runners[section]()
            except Exception as exc:  # one broken section must not hide the others' figures
                result["errors"][section] = f"{type(exc).__name__}: {exc}"
                log(f"{section} failed: {type(exc).__name__}: {exc}")
        result["memory"][section] = memory.result
    result["wall_s"] = time.perf_counter() - started
    with contextlib.suppress(OSError, AttributeError):
        result["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    result["targets"] = evaluate_targets(result)
    return result


# ------------------------------------------------------------------------------ reporting

def _f(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def tables(result: dict) -> str:
    """The run as markdown tables (what the command prints)."""
    out = []
    machine = result.get("machine", {})
    if result.get("targets"):
        applies = all(t["applies"] for t in result["targets"])
        out += ["### Targets (issue 7" + ("" if applies else "; not applicable to this run: they are for a full "
                                          "run on the CPU with 2 threads") + ")", "",
                "| target | measured | limit | met |", "|---|---|---|---|"]
        for t in result["targets"]:
            met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
            unit = "×" if t["unit"] == "x" else f" {t['unit']}"
            value = _f(t["measured"]) if t["unit"] == "x" else _ms(t["measured"])
            out.append(f"| {t['what']} | {value}{unit if t['measured'] is not None else ''} "
                       f"| ≤ {_f(t['limit']) if t['unit'] == 'x' else _ms(t['limit'])}{unit} | {met} |")
        out.append("")
    if "latency" in result:
        lat = result["latency"]
        out += [f"### Inference latency ({lat['image_size']} px, width {lat['width']}, {lat['memory_format']}, "
                f"{lat['mode']}, {machine.get('torch_threads')} threads, {machine.get('device')})", "",
                "| model | variant | batch | median ms | IQR ms | ratio to ResNet-50 (same variant) "
                "| ratio to ResNet-50 (as built) | ratio of fastest passes (same variant) | MAC ratio "
                "| GMACs/image | page faults/pass |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in lat["rows"]:
            out.append(f"| {r['model']} | {r['variant']} | {r['batch']} | {_ms(r['median_ms'])} "
                       f"| {_ms(r['q1_ms'])}–{_ms(r['q3_ms'])} | {_f(r['ratio_to_resnet50'])} "
                       f"| {_f(r['ratio_to_resnet50_eager'])} | {_f(r.get('min_ratio_to_resnet50'))} "
                       f"| {_f(r['mac_ratio'])} | {_f(r['macs'] / 1e9)} | {r.get('page_faults', '—')} |")
        out.append("")
    if "trace" in result:
        tr = result["trace"]
        out += [f"### Trace against a plain forward (batch 1, {tr['image_size']} px, {tr['memory_format']})", "",
                "| model | variant | forward ms | trace ms | ratio |", "|---|---|---|---|---|"]
        for r in tr["rows"]:
            out.append(f"| {r['model']} | {r['variant']} | {_ms(r['forward_ms'])} | {_ms(r['trace_ms'])} "
                       f"| {_f(r['ratio'], 3)} |")
        out.append("")
    if "training" in result:
        t = result["training"]
        out += ["### Training throughput (" + t["what"] + ")", "",
                "| model | width | input | batch | step ms (median, IQR) | img/s |", "|---|---|---|---|---|---|",
                f"| {t['model']} | {t['width']} | {t['image_size']} px | {t['batch']} | {_ms(t['step']['median_ms'])} "
                f"({_ms(t['step']['q1_ms'])}–{_ms(t['step']['q3_ms'])}) | {_f(t['img_per_s'], 0)} |", ""]
    if "app" in result:
        new, rerender = result["app"]["new_image"], result["app"]["rerender"]
        out += ["### App", "",
                "| measurement | median ms | IQR ms | notes |", "|---|---|---|---|"]
        for kind in ("loaded", "optimised"):
            s = new[kind]
            note = (f"{len(new['models'])} models ({new['source']}), {'/'.join(map(str, new['input_sizes']))} px; "
                    + ("loading took " + _f(new["load_s"]) + " s" if kind == "loaded"
                       else "fuse_for_inference + channels_last took " + _f(new["optimise_s"]) + " s"))
            out.append(f"| new image through the zoo, {'as loaded' if kind == 'loaded' else 'optimised'} "
                       f"| {_ms(s['median_ms'])} | {_ms(s['q1_ms'])}–{_ms(s['q3_ms'])} | {note} |")
        if rerender.get("status") == "measured":
            runs = rerender.get("cached_runs_ms") or [rerender["cached_ms"]]
            iqr = summarise([v / 1000 for v in runs])
            notes = "; ".join(rerender.get("notes") or []).replace("|", "/")
            out.append(f"| cached re-render of the explorer page | {_ms(rerender['cached_ms'])} "
                       f"| {_ms(iqr['q1_ms'])}–{_ms(iqr['q3_ms'])} | {rerender['method']}; first run "
                       f"{_ms(rerender.get('first_ms'))} ms; checkpoints: "
                       f"{rerender.get('checkpoints', new['source'])}"
                       + (f"; {rerender['page_switches_per_run']:g} st.switch_page detours per run (an AppTest "
                          "start, flush sleeps skipped)" if rerender.get("page_switches_per_run") else "")
                       + (f"; the page said: {notes}" if notes else "") + " |")
        else:
            detail = rerender.get("status", "")
            if rerender.get("error"):
                detail += f": {rerender['error'][:200]}"
            out.append(f"| cached re-render of the explorer page | — | — | {detail} |")
        out.append("")
    if "profile" in result:
        prof = result["profile"]
        out += [f"### Where the time goes (torch.profiler, batch 1, {prof['image_size']} px, {prof['memory_format']})",
                "", "| model | variant | profiled ms/pass | operators by self time (share, calls/pass) |",
                "|---|---|---|---|"]
        for r in prof["rows"]:
            ops = ", ".join(f"{o['op'].removeprefix('aten::')} {100 * o['share']:.0f} % ({o['calls_per_pass']:g})"
                            for o in r["ops"] if o["share"] >= 0.005)
            out.append(f"| {r['model']} | {r['variant']} | {_ms(r['self_cpu_ms_per_pass'])} | {ops} |")
        out.append("")
    if result.get("memory"):
        cuda = any("cuda_peak_mb" in m for m in result["memory"].values())
        allocator = result.get("machine", {}).get("allocator", "default")
        out += [f"### Peak memory (allocator: {allocator})", "",
                "| section | RSS peak MB | minor page faults" + (" | CUDA peak MB |" if cuda else " |"),
                "|---|---|---|" + ("---|" if cuda else "")]
        for section, m in result["memory"].items():
            scope = "" if m.get("rss_scope") == "section" else " (whole process)"
            faults = m.get("minor_page_faults")
            out.append(f"| {section} | {_f(m.get('rss_peak_mb'), 0)}{scope} | {'—' if faults is None else faults}"
                       + (f" | {_f(m.get('cuda_peak_mb'), 0)} |" if cuda else " |"))
        out.append("")
    for section, error in result.get("errors", {}).items():
        out.append(f"**{section} failed:** {error}")
    return "\n".join(out).rstrip() + "\n"


def machine_line(result: dict) -> str:
    m = result.get("machine", {})
    parts = [f"{m.get('cpu')} ({m.get('logical_cpus')} logical CPUs, {m.get('torch_threads')} torch threads)"]
    if m.get("gpu"):
        parts.append(f"GPU {m['gpu']}")
    parts += [f"device `{m.get('device')}`", f"torch {m.get('torch')}", f"torchvision {m.get('torchvision')}",
              f"Python {m.get('python')}", f"{m.get('platform')}", f"commit {m.get('commit')}",
              f"allocator: {m.get('allocator', 'default')}"]
    if m.get("load_average_start"):
        parts.append(f"load average {m['load_average_start'][0]} at the start, "
                     f"{(m.get('load_average_end') or ['?'])[0]} at the end")
    return "; ".join(parts)


def targets_across_runs(results: list[dict]) -> list[str]:
    """One row per target, one column per run: how stable each verdict is."""
    out = ["## Targets across the runs below", "",
           "| target | limit | " + " | ".join(f"run {i + 1}" for i in range(len(results))) + " | met in |",
           "|---|---|" + "---|" * len(results) + "---|"]
    for i, target in enumerate(results[0]["targets"]):
        unit = "×" if target["unit"] == "x" else f" {target['unit']}"
        fmt = (lambda v: f"{_f(v, 3)}×") if target["unit"] == "x" else (lambda v: f"{_ms(v)} ms")
        values = [r["targets"][i]["measured"] for r in results]
        met = sum(1 for r in results if r["targets"][i]["met"])
        limit = _f(target["limit"]) if target["unit"] == "x" else _ms(target["limit"])
        out.append(f"| {target['what']} | ≤ {limit}{unit} | " + " | ".join("—" if v is None else fmt(v) for v in values)
                   + f" | {met} of {len(results)} |")
    return out + [""]


def render_markdown(results: list[dict], notes: str = "") -> str:
    """docs/benchmarks.md from one or more runs' JSON (e.g. a CPU run and a GPU run), with
    `notes` (a reader's summary of what they show, markdown) after the introduction."""
    out = ["# Benchmarks", "",
           "Written by `python -m resattn.bench --from-json ... --markdown docs/benchmarks.md` from the JSON of the "
           "runs below; `python -m resattn.bench --help` says what is measured and how. Every model runs in eval "
           "mode under `torch.inference_mode`, channels_last, with the same threads; cases are timed interleaved "
           "after warm-up and the tables give medians. \"eager\" is the model as built, \"fused\" has its "
           "BatchNorm folded away (`resattn.model.fuse.fuse_for_inference` for the attention networks, torch.fx's "
           "conv-BN fusion for torchvision's ResNets).", ""]
    if not any(r.get("machine", {}).get("device", "").startswith("cuda") for r in results):
        out += ["GPU: not measured (these runs had no GPU). On one, run the same command with `--device cuda`, "
                "and again with `--compile`.", ""]
    if notes.strip():
        out += [notes.strip(), ""]
    full = [r for r in results if not r.get("quick") and r.get("targets")]
    if len(full) > 1:
        out += targets_across_runs(full)
    for result in results:
        title = "Quick run (harness check only; figures are not comparable)" if result.get("quick") else "Run"
        out += [f"## {title}: {result.get('started', '')}", "",
                f"Command: `{result.get('command')}`  ", f"Machine: {machine_line(result)}  ",
                f"Wall time: {_f(result.get('wall_s'), 0)} s", "", tables(result), ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resattn.bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default on the CPU: 2, as issue 7's targets assume, 1 with --quick; "
                             "0 = torch's default)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    parser.add_argument("--markdown", metavar="OUT", help="write the tables for docs/benchmarks.md")
    parser.add_argument("--notes", metavar="FILE", help="with --from-json: markdown to put after the introduction "
                                                         "(docs/benchmarks-notes.md)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and repeats: checks the harness (< 1 min)")
    parser.add_argument("--only", metavar="SECTIONS",
                        help=f"comma-separated subset of {','.join(SECTIONS + OPTIONAL_SECTIONS)}")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models (latency)")
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="glibc: keep freed memory for reuse instead of unmapping large blocks "
                             "(see retain_freed_memory); applies to every model alike")
    parser.add_argument("--profile", action="store_true",
                        help="also profile Attention-56 and ResNet-50 per operator (torch.profiler)")
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="the zoo folder (app section)")
    parser.add_argument("--from-json", nargs="+", metavar="RUN", help="render earlier runs' JSON; measure nothing")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "resattn.bench", *(sys.argv[1:] if argv is None else argv)])

    def log(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    if args.from_json:
        try:
            results = [json.loads(Path(p).read_text()) for p in args.from_json]
        except (OSError, json.JSONDecodeError) as exc:
            print(f"error: cannot read {exc}; pass JSON files written by --json.", file=sys.stderr)
            return 2
        try:
            notes = Path(args.notes).read_text() if args.notes else ""
        except OSError as exc:
            print(f"error: cannot read the notes {args.notes} ({exc.strerror}).", file=sys.stderr)
            return 2
        text = render_markdown(results, notes)
        if args.markdown:
            Path(args.markdown).write_text(text)
        else:
            print(text)
        return 0

    sections = SECTIONS
    if args.only:
        sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
        unknown = [s for s in sections if s not in SECTIONS + OPTIONAL_SECTIONS]
        if unknown:
            print(f"error: unknown section(s) {', '.join(unknown)}; choose from "
                  f"{', '.join(SECTIONS + OPTIONAL_SECTIONS)}.", file=sys.stderr)
            return 2
    if args.profile and "profile" not in sections:
        sections += ("profile",)
    try:
        device = pick_device(args.device)
    except ResattnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Quick runs use one thread: they check the harness, and share the CI machine with others
    # (two OpenMP threads on an oversubscribed CPU wait on each other at every operation).
    threads = args.threads if args.threads is not None else (0 if device.type != "cpu" else 1 if args.quick else 2)
    if threads > 0:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # same for every model; picks the fastest kernels per shape
    allocator = "default"
    if args.retain_freed_memory:
        allocator = ("glibc, freed memory retained (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB)" if retain_freed_memory()
                     else "default (retaining freed memory is not supported here)")
    plan = QUICK if args.quick else FULL
    result = run(plan, device, sections=sections, compile_model=args.compile, checkpoints=Path(args.checkpoints),
                 quick=args.quick, command=command, allocator=allocator, log=log)
    print(tables(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(render_markdown([result]))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
