"""Thread CPU time per aten operator of a batch-1 forward: Attention-56 (fused, as the app runs
it) against ResNet-50 (BatchNorm folded, and as built), channels_last, 224 px, one thread.

Thread CPU time (time.thread_time_ns around each operator, through a TorchDispatchMode) is
what the operator itself computed: a job on the other core cannot inflate it, unlike wall
clock. It answers issue 17's question for item 8: where does Attention-56 spend more than its
share of multiply-accumulates, and how low could the ratio go if every operator other than
the convolutions cost nothing?

    python scripts/op_time.py [--passes 5] [--size 224]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from resattn.bench.plan import Plan  # noqa: E402
from resattn.bench.reference import build_reference, fused_variant  # noqa: E402

CONV = ("aten.convolution", "aten.mkldnn_convolution", "aten._convolution", "aten.conv2d")


class OpTimer(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ns: dict[str, int] = defaultdict(int)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.thread_time_ns()
        out = func(*args, **(kwargs or {}))
        self.ns[str(func.overloadpacket)] += time.thread_time_ns() - start
        return out


def macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def profile(model: torch.nn.Module, x: torch.Tensor, passes: int) -> dict[str, float]:
    for _ in range(2):
        model(x)
    timer = OpTimer()
    with timer:
        for _ in range(passes):
            model(x)
    return {op: ns / passes / 1e6 for op, ns in timer.ns.items()}  # ms per pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--top", type=int, default=8, help="operators listed per network")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    plan = Plan(image_size=args.size)
    device = torch.device("cpu")
    x = torch.randn(1, 3, args.size, args.size).to(memory_format=torch.channels_last)
    a56 = fused_variant(build_reference("attention56", plan, device))
    r50 = build_reference("resnet50", plan, device)
    models = {"attention56 fused": a56, "resnet50 fused": fused_variant(r50),
              "resnet50 as built": r50.to(memory_format=torch.channels_last)}
    results = {}
    with torch.inference_mode():
        for name, model in models.items():
            ops = profile(model.eval(), x, args.passes)
            total = sum(ops.values())
            conv = sum(v for k, v in ops.items() if k in CONV)
            results[name] = (total, conv, macs(model, x), ops)
    print(f"thread CPU ms per batch-1 forward, {args.size} px, 1 thread, mean of {args.passes} passes")
    for name, (total, conv, n, ops) in results.items():
        top = sorted(ops.items(), key=lambda kv: -kv[1])[:args.top]
        print(f"\n{name}: {total:.1f} ms, {n / 1e9:.2f} GMACs; convolutions {conv:.1f} ms ({100 * conv / total:.1f} %), "
              f"{conv * 1e9 / n:.1f} ps per MAC")
        for op, ms in top:
            print(f"  {op:32s} {ms:8.2f} ms  {100 * ms / total:5.1f} %")
    a_total, a_conv, a_macs, _ = results["attention56 fused"]
    for ref in ("resnet50 fused", "resnet50 as built"):
        r_total = results[ref][0]
        print(f"\nattention56 fused / {ref}: {a_total / r_total:.3f}x (MAC ratio {a_macs / results[ref][2]:.3f}); "
              f"with every non-convolution operator of Attention-56 free: {a_conv / r_total:.3f}x")


if __name__ == "__main__":
    main()
