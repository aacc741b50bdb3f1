"""The profile section (on request): torch.profiler's self time per operator of Attention-56
and ResNet-50, as built and fused."""
from __future__ import annotations

from typing import Callable

import torch

from .measure import _sync, channels_last_input
from .plan import Plan
from .reference import build_reference, fused_variant


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
