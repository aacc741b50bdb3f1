"""`python -m resattn.bench`: inference, trace, training and app timings side by side, in one
run (`python -m resattn.bench --help`, or `cli`'s docstring, says what is measured and how).

One module per job:

    plan            the sections, reference models, zoo architectures, targets; Plan, FULL, QUICK
    measure         interleaved timing, summaries, peak memory and page faults, MAC counts
    reference       the reference models, as built, fused and compiled
    latency         section "latency": Attention-56/92 against ResNet-50/101
    trace_overhead  section "trace": resattn.trace against a plain forward
    training        section "training": the zoo's training step
    app             section "app": a new image through the zoo; the explorer's re-render,
                    timed by the app's own probe (ui/bench_probe.py) in a subprocess
    profiling       section "profile": torch.profiler per operator
    runner          one run: machine, sections, targets
    markdown        the tables and docs/benchmarks.md
    cli             the command line (`__main__` runs it)

Importing it never imports streamlit.
"""
from .app import measure_rerender, new_image_through, run_app, zoo_models
from .cli import main
from .markdown import render_markdown, tables
from .measure import PeakMemory, count_macs, retain_freed_memory, summarise, time_interleaved
from .plan import FULL, OPTIONAL_SECTIONS, QUICK, SECTIONS, TARGETS, Plan
from .runner import evaluate_targets, machine_info, run

__all__ = ["FULL", "OPTIONAL_SECTIONS", "QUICK", "SECTIONS", "TARGETS", "PeakMemory", "Plan", "count_macs",
           "evaluate_targets", "machine_info", "main", "measure_rerender", "new_image_through", "render_markdown",
           "retain_freed_memory", "run", "run_app", "summarise", "tables", "time_interleaved", "zoo_models"]
