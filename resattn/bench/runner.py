"""One run: the machine it ran on, the sections in turn (each with its peak memory; one that
fails does not hide the others), and the verdict on issue 7's targets."""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from .app import run_app
from .latency import run_latency
from .measure import PeakMemory
from .plan import ROOT, TARGETS, Plan
from .profiling import run_profile
from .trace_overhead import run_trace
from .training import run_training


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
