"""The latency section: Attention-56/92 against torchvision's ResNet-50/101, eager and fused
(and compiled), interleaved, as ratios to ResNet-50 next to the MAC ratios."""
from __future__ import annotations

import statistics
from typing import Callable

import torch

from .measure import channels_last_input, count_macs, summarise, time_interleaved
from .plan import ATTENTION_NETS, BASELINE, RESNETS, Plan
from .reference import build_reference, variants


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
