"""The training section: forward, backward and SGD step of the zoo's Attention-56 on random
tensors, images per second."""
from __future__ import annotations

import statistics
from typing import Callable

import torch
from torch import nn

from ..model import create_model
from .measure import channels_last_input, summarise, time_interleaved
from .plan import ZOO_ARCH, ZOO_CLASSES, ZOO_WIDTH, Plan


def run_training(plan: Plan, device: torch.device, *, log: Callable[[str], None]) -> dict:
    from ..train import parameter_groups

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
