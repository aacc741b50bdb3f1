"""What a run measures and how much: the sections, the reference models, the zoo's
architectures, issue 7's targets and the sizes and repeat counts of a full and a quick run."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("latency", "trace", "training", "app")
OPTIONAL_SECTIONS = ("profile",)  # run only when asked for (--profile or --only profile)
RESNETS = ("resnet50", "resnet101")
ATTENTION_NETS = ("attention56", "attention92")
BASELINE = "resnet50"
# The zoo's architectures (scripts/train_zoo.sh): Attention-56, width 0.25, 10 classes.
ZOO_VARIANTS = (("mixed", "arl"), ("channel", "arl"), ("spatial", "arl"), ("mixed", "nal"), ("none", "arl"))
ZOO_ARCH, ZOO_WIDTH, ZOO_CLASSES, ZOO_INPUT_SIZE = "attention56", 0.25, 10, 128
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
# Issue 7's targets for this project's CPU (2 threads): (key, what, limit, unit).
TARGETS = (
    ("a56_r50_fused_vs_eager", "Attention-56 (fused) / ResNet-50 (as built), forward, batch 1", 1.5, "x"),
    ("a56_r50_fused_vs_fused", "Attention-56 / ResNet-50, both BN-folded, forward, batch 1", 1.5, "x"),
    ("a56_r50_eager_vs_eager", "Attention-56 / ResNet-50, both as built, forward, batch 1", 1.5, "x"),
    ("trace_fused", "trace / plain forward, Attention-56 fused", 1.05, "x"),
    ("trace_eager", "trace / plain forward, Attention-56 as built", 1.05, "x"),
    ("rerender", "cached re-render of the explorer page", 150.0, "ms"),
    ("new_image_optimised", "new 128 px image through all zoo models (optimised)", 1000.0, "ms"),
    ("new_image_loaded", "new 128 px image through all zoo models (as loaded)", 1000.0, "ms"),
)


@dataclass(frozen=True)
class Plan:
    """Sizes and repeat counts of one run."""
    image_size: int = 224
    batches: tuple[int, ...] = (1, 16)
    repeats: tuple[int, ...] = (15, 5)  # timed passes per case, one entry per batch size
    warmup: int = 2
    width: float = 1.0
    trace_repeats: int = 15
    train_size: int = 96
    train_batch: int = 64
    train_steps: int = 8
    train_warmup: int = 2
    zoo_repeats: int = 9
    app_reruns: int = 5
    app_timeout_s: int = 600


FULL = Plan()
QUICK = Plan(image_size=64, batches=(1, 2), repeats=(2, 2), warmup=1, width=0.25, trace_repeats=2, train_size=32,
             train_batch=8, train_steps=2, train_warmup=1, zoo_repeats=2, app_reruns=1, app_timeout_s=120)
