"""Training-step throughput of Residual Attention Networks at several depths, widths and crop
sizes, in fp32 and under bf16 autocast, on synthetic batches (forward + backward + SGD step,
channels-last, batch 64, median of 4 steps after 2 warm-up steps), to choose a recipe that
fits a time budget.

Usage: python scripts/train_speed.py [MODEL:WIDTH:SIZE ...]
(default: attention56:0.25:96 attention56:0.25:112 attention92:0.25:96 attention56:0.5:96)
"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import resattn  # noqa: E402

DEFAULT = ["attention56:0.25:96", "attention56:0.25:112", "attention92:0.25:96", "attention56:0.5:96"]

print(f"{torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
for spec in sys.argv[1:] or DEFAULT:
    name, width, size = spec.split(":")
    width, size = float(width), int(size)
    torch.manual_seed(0)
    model = resattn.create_model(name, num_classes=10, width=width).to(memory_format=torch.channels_last).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(64, 3, size, size).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))
    rates = {}
    for precision in ("fp32", "bf16"):
        seconds = []
        for _ in range(6):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            seconds.append(time.perf_counter() - start)
        rates[precision] = 64 / statistics.median(seconds[2:])  # the first two steps warm up
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{name} width {width:g}, {size} px ({params:.2f} M parameters): fp32 {rates['fp32']:.0f} img/s, "
          f"bf16 {rates['bf16']:.0f} img/s ({rates['bf16'] / rates['fp32']:.2f}x)", flush=True)
