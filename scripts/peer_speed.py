"""Training-step throughput of our loop against the common PyTorch reimplementation's loop, in
the same run: Attention-56 (full width, as the paper) at 224 px, batch 8, one SGD step =
forward + loss + backward + update.

- peer: the way the widely used reimplementation trains: NCHW (contiguous) fp32, eager.
- ours: channels_last memory format and bf16 autocast (fp32 master weights), as
  `python -m resattn.train --precision bf16` does.

The two are measured in alternating blocks (peer, ours, peer, ours, ...) so that a change in
the machine's load affects both alike; the median step time of each is reported.
Usage: python scripts/peer_speed.py [--steps 6] [--blocks 3] [--size 224] [--batch 8] [--width 1.0]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import resattn  # noqa: E402


def make_step(width: float, size: int, batch: int, ours: bool):
    torch.manual_seed(0)
    model = resattn.create_model("attention56", num_classes=1000, width=width).train()
    fmt = torch.channels_last if ours else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x = torch.randn(batch, 3, size, size).to(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,))

    def step() -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ours):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return time.perf_counter() - start

    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6, help="timed steps per block (after 2 warm-up steps)")
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    steps = {"peer": make_step(args.width, args.size, args.batch, ours=False),
             "ours": make_step(args.width, args.size, args.batch, ours=True)}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for name, step in steps.items():
        for _ in range(2):
            step()
    for block in range(args.blocks):
        for name, step in steps.items():
            times[name] += [step() for _ in range(args.steps)]
    result = {"size": args.size, "batch": args.batch, "width": args.width, "threads": torch.get_num_threads(),
              "torch": torch.__version__}
    for name in steps:
        median = statistics.median(times[name])
        result[name] = {"median_step_s": round(median, 4), "img_per_s": round(args.batch / median, 2),
                        "steps": len(times[name])}
    result["speedup"] = round(result["peer"]["median_step_s"] / result["ours"]["median_step_s"], 3)
    print(f"Attention-56 width {args.width:g}, {args.size} px, batch {args.batch}, {result['threads']} threads")
    print(f"  peer (NCHW fp32 eager):        {result['peer']['img_per_s']:.2f} img/s")
    print(f"  ours (channels_last + bf16):   {result['ours']['img_per_s']:.2f} img/s")
    print(f"  speed-up: {result['speedup']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
