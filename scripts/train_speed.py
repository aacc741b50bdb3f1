"""Training-step throughput of Attention-56 at several widths and crop sizes, on synthetic
batches (forward + backward + SGD step, channels-last, eval of nothing), to choose a recipe
that fits a time budget. Usage: python scripts/train_speed.py [WIDTH:SIZE ...] (default: the
zoo's 0.25:96 and the alternatives in docs/training.md)."""
import sys
import time

import torch

import resattn

torch.set_num_threads(2)
configs = [tuple(float(v) for v in arg.split(":")) for arg in sys.argv[1:]] or [(0.25, 96), (0.25, 112),
                                                                                 (0.375, 96), (0.5, 96)]
for width, size in configs:
    size = int(size)
    model = resattn.create_model("attention56", num_classes=10, width=width).to(memory_format=torch.channels_last)
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(64, 3, size, size).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))
    seconds = []
    for _ in range(8):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        seconds.append(time.perf_counter() - start)
    median = sorted(seconds[2:])[len(seconds[2:]) // 2]  # the first two steps warm up
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"width {width:g}, {size} px: {params:.2f} M parameters, {64 / median:.0f} img/s", flush=True)
