"""Measuring: interleaved timing, medians and quartiles, peak memory and page faults, MAC
counts, and the allocator switch. Nothing here knows which models are timed."""
from __future__ import annotations

import contextlib
import ctypes
import gc
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


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
