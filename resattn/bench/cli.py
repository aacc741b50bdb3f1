"""`python -m resattn.bench`: inference, trace, training and app timings side by side, in one run.

    python -m resattn.bench [--device D] [--threads N] [--json OUT] [--markdown OUT] [--quick]
                            [--only SECTIONS] [--compile] [--profile] [--retain-freed-memory]
                            [--checkpoints DIR]
    python -m resattn.bench --from-json RUN.json [RUN2.json ...] --markdown docs/benchmarks.md [--notes FILE]

Sections (all by default, `--only latency,trace` for some):

latency   Attention-56 and Attention-92 (width 1.0) and torchvision's ResNet-50 and ResNet-101,
          built in this process, at batch 1 and 16 and 224 px. Two variants of every model:
          "eager" (as built) and "fused" (BatchNorm folded away: `fuse_for_inference` for the
          attention networks, torch.fx's conv-BN fusion for the ResNets); with `--compile` a
          third, "compiled" (torch.compile of the eager model). Reported as ratios to
          ResNet-50 (same variant and batch, and as-built ResNet-50) next to the MAC ratios,
          which FlopCounterMode counts on the same models.
trace     `resattn.trace` against a plain forward of the same Attention-56, batch 1, 224 px.
training  Attention-56 at the zoo's width, input size and batch (scripts/train_zoo.sh):
          forward, backward and SGD step on random tensors, images per second.
app       a new image (JPEG bytes -> load_image -> preprocess -> trace and softmax) through
          every checkpoint in checkpoints/ (or five random-weight models of the zoo's
          architectures when there are none; the "source" field says which), as loaded and
          optimised; and a cached re-render of the explorer page, measured in a subprocess
          (resattn never imports streamlit) when the app has one.
profile   only with `--profile`: torch.profiler's self time per operator of batch-1 forwards of
          Attention-56 and ResNet-50, as built and fused (where the time goes).
Every section records its peak memory (RSS; CUDA peak allocation on a GPU) and minor page
faults; the latency rows record page faults per pass. `--retain-freed-memory` keeps glibc
from unmapping large freed blocks (see `retain_freed_memory`), for every model alike.

Method. Every model is in eval mode under `torch.inference_mode`, in channels_last with
channels_last inputs, with the same number of threads (2 on the CPU unless `--threads`). The
cases of a section run interleaved: one pass of each in turn, the order reversed every
repetition, after warm-up passes; the tables give medians and interquartile ranges. Ratios
of interleaved medians survive a busy machine better than absolute times do; the load
average at the start is recorded so a reader can tell. `--quick` shrinks every size and
repeat count so that the whole run takes well under a minute: it checks the harness, its
figures mean nothing.

What the profiler showed, and what `resattn.model.fuse` does about it, is in that module's
docstring and in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from ..device import pick_device
from ..errors import ResattnError
from .markdown import render_markdown, tables
from .measure import retain_freed_memory
from .plan import FULL, OPTIONAL_SECTIONS, QUICK, ROOT, SECTIONS
from .runner import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resattn.bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default on the CPU: 2, as issue 7's targets assume, 1 with --quick; "
                             "0 = torch's default)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    parser.add_argument("--markdown", metavar="OUT", help="write the tables for docs/benchmarks.md")
    parser.add_argument("--notes", metavar="FILE", help="with --from-json: markdown to put after the introduction "
                                                         "(docs/benchmarks-notes.md)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and repeats: checks the harness (< 1 min)")
    parser.add_argument("--only", metavar="SECTIONS",
                        help=f"comma-separated subset of {','.join(SECTIONS + OPTIONAL_SECTIONS)}")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models (latency)")
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="glibc: keep freed memory for reuse instead of unmapping large blocks "
                             "(see retain_freed_memory); applies to every model alike")
    parser.add_argument("--profile", action="store_true",
                        help="also profile Attention-56 and ResNet-50 per operator (torch.profiler)")
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="the zoo folder (app section)")
    parser.add_argument("--from-json", nargs="+", metavar="RUN", help="render earlier runs' JSON; measure nothing")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "resattn.bench", *(sys.argv[1:] if argv is None else argv)])

    def log(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    if args.from_json:
        try:
            results = [json.loads(Path(p).read_text()) for p in args.from_json]
        except (OSError, json.JSONDecodeError) as exc:
            print(f"error: cannot read {exc}; pass JSON files written by --json.", file=sys.stderr)
            return 2
        try:
            notes = Path(args.notes).read_text() if args.notes else ""
        except OSError as exc:
            print(f"error: cannot read the notes {args.notes} ({exc.strerror}).", file=sys.stderr)
            return 2
        text = render_markdown(results, notes)
        if args.markdown:
            Path(args.markdown).write_text(text)
        else:
            print(text)
        return 0

    sections = SECTIONS
    if args.only:
        sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
        unknown = [s for s in sections if s not in SECTIONS + OPTIONAL_SECTIONS]
        if unknown:
            print(f"error: unknown section(s) {', '.join(unknown)}; choose from "
                  f"{', '.join(SECTIONS + OPTIONAL_SECTIONS)}.", file=sys.stderr)
            return 2
    if args.profile and "profile" not in sections:
        sections += ("profile",)
    try:
        device = pick_device(args.device)
    except ResattnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Quick runs use one thread: they check the harness, and share the CI machine with others
    # (two OpenMP threads on an oversubscribed CPU wait on each other at every operation).
    threads = args.threads if args.threads is not None else (0 if device.type != "cpu" else 1 if args.quick else 2)
    if threads > 0:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # same for every model; picks the fastest kernels per shape
    allocator = "default"
    if args.retain_freed_memory:
        allocator = ("glibc, freed memory retained (M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GiB)" if retain_freed_memory()
                     else "default (retaining freed memory is not supported here)")
    plan = QUICK if args.quick else FULL
    result = run(plan, device, sections=sections, compile_model=args.compile, checkpoints=Path(args.checkpoints),
                 quick=args.quick, command=command, allocator=allocator, log=log)
    print(tables(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(render_markdown([result]))
    return 1 if result["errors"] else 0
