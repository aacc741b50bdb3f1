"""The trace section: `resattn.trace` against a plain forward of the same Attention-56."""
from __future__ import annotations

import statistics
from typing import Callable

import torch
from torch import nn

from ..trace import trace
from .measure import channels_last_input, summarise, time_interleaved
from .plan import Plan
from .reference import build_reference, fused_variant


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
