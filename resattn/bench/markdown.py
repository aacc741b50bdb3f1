"""A run's JSON as markdown: the tables the command prints and docs/benchmarks.md."""
from __future__ import annotations

import math

from .measure import summarise


def _f(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def tables(result: dict) -> str:
    """The run as markdown tables (what the command prints)."""
    out = []
    machine = result.get("machine", {})
    if result.get("targets"):
        applies = all(t["applies"] for t in result["targets"])
        out += ["### Targets (issue 7" + ("" if applies else "; not applicable to this run: they are for a full "
                                          "run on the CPU with 2 threads") + ")", "",
                "| target | measured | limit | met |", "|---|---|---|---|"]
        for t in result["targets"]:
            met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
            unit = "×" if t["unit"] == "x" else f" {t['unit']}"
            value = _f(t["measured"]) if t["unit"] == "x" else _ms(t["measured"])
            out.append(f"| {t['what']} | {value}{unit if t['measured'] is not None else ''} "
                       f"| ≤ {_f(t['limit']) if t['unit'] == 'x' else _ms(t['limit'])}{unit} | {met} |")
        out.append("")
    if "latency" in result:
        lat = result["latency"]
        out += [f"### Inference latency ({lat['image_size']} px, width {lat['width']}, {lat['memory_format']}, "
                f"{lat['mode']}, {machine.get('torch_threads')} threads, {machine.get('device')})", "",
                "| model | variant | batch | median ms | IQR ms | ratio to ResNet-50 (same variant) "
                "| ratio to ResNet-50 (as built) | ratio of fastest passes (same variant) | MAC ratio "
                "| GMACs/image | page faults/pass |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in lat["rows"]:
            out.append(f"| {r['model']} | {r['variant']} | {r['batch']} | {_ms(r['median_ms'])} "
                       f"| {_ms(r['q1_ms'])}–{_ms(r['q3_ms'])} | {_f(r['ratio_to_resnet50'])} "
                       f"| {_f(r['ratio_to_resnet50_eager'])} | {_f(r.get('min_ratio_to_resnet50'))} "
                       f"| {_f(r['mac_ratio'])} | {_f(r['macs'] / 1e9)} | {r.get('page_faults', '—')} |")
        out.append("")
    if "trace" in result:
        tr = result["trace"]
        out += [f"### Trace against a plain forward (batch 1, {tr['image_size']} px, {tr['memory_format']})", "",
                "| model | variant | forward ms | trace ms | ratio |", "|---|---|---|---|---|"]
        for r in tr["rows"]:
            out.append(f"| {r['model']} | {r['variant']} | {_ms(r['forward_ms'])} | {_ms(r['trace_ms'])} "
                       f"| {_f(r['ratio'], 3)} |")
        out.append("")
    if "training" in result:
        t = result["training"]
        out += ["### Training throughput (" + t["what"] + ")", "",
                "| model | width | input | batch | step ms (median, IQR) | img/s |", "|---|---|---|---|---|---|",
                f"| {t['model']} | {t['width']} | {t['image_size']} px | {t['batch']} | {_ms(t['step']['median_ms'])} "
                f"({_ms(t['step']['q1_ms'])}–{_ms(t['step']['q3_ms'])}) | {_f(t['img_per_s'], 0)} |", ""]
    if "app" in result:
        new, rerender = result["app"]["new_image"], result["app"]["rerender"]
        out += ["### App", "",
                "| measurement | median ms | IQR ms | notes |", "|---|---|---|---|"]
        for kind in ("loaded", "optimised"):
            s = new[kind]
            note = (f"{len(new['models'])} models ({new['source']}), {'/'.join(map(str, new['input_sizes']))} px; "
                    + ("loading took " + _f(new["load_s"]) + " s" if kind == "loaded"
                       else "fuse_for_inference + channels_last took " + _f(new["optimise_s"]) + " s"))
            out.append(f"| new image through the zoo, {'as loaded' if kind == 'loaded' else 'optimised'} "
                       f"| {_ms(s['median_ms'])} | {_ms(s['q1_ms'])}–{_ms(s['q3_ms'])} | {note} |")
        if rerender.get("status") == "measured":
            runs = rerender.get("cached_runs_ms") or [rerender["cached_ms"]]
            iqr = summarise([v / 1000 for v in runs])
            notes = "; ".join(rerender.get("notes") or []).replace("|", "/")
            out.append(f"| cached re-render of the explorer page | {_ms(rerender['cached_ms'])} "
                       f"| {_ms(iqr['q1_ms'])}–{_ms(iqr['q3_ms'])} | {rerender['method']}; first run "
                       f"{_ms(rerender.get('first_ms'))} ms; checkpoints: "
                       f"{rerender.get('checkpoints', new['source'])}"
                       + (f"; {rerender['page_switches_per_run']:g} st.switch_page detours per run (an AppTest "
                          "start, flush sleeps skipped)" if rerender.get("page_switches_per_run") else "")
                       + (f"; the page said: {notes}" if notes else "") + " |")
        else:
            detail = rerender.get("status", "")
            if rerender.get("error"):
                detail += f": {rerender['error'][:200]}"
            out.append(f"| cached re-render of the explorer page | — | — | {detail} |")
        out.append("")
    if "profile" in result:
        prof = result["profile"]
        out += [f"### Where the time goes (torch.profiler, batch 1, {prof['image_size']} px, {prof['memory_format']})",
                "", "| model | variant | profiled ms/pass | operators by self time (share, calls/pass) |",
                "|---|---|---|---|"]
        for r in prof["rows"]:
            ops = ", ".join(f"{o['op'].removeprefix('aten::')} {100 * o['share']:.0f} % ({o['calls_per_pass']:g})"
                            for o in r["ops"] if o["share"] >= 0.005)
            out.append(f"| {r['model']} | {r['variant']} | {_ms(r['self_cpu_ms_per_pass'])} | {ops} |")
        out.append("")
    if result.get("memory"):
        cuda = any("cuda_peak_mb" in m for m in result["memory"].values())
        allocator = result.get("machine", {}).get("allocator", "default")
        out += [f"### Peak memory (allocator: {allocator})", "",
                "| section | RSS peak MB | minor page faults" + (" | CUDA peak MB |" if cuda else " |"),
                "|---|---|---|" + ("---|" if cuda else "")]
        for section, m in result["memory"].items():
            scope = "" if m.get("rss_scope") == "section" else " (whole process)"
            faults = m.get("minor_page_faults")
            out.append(f"| {section} | {_f(m.get('rss_peak_mb'), 0)}{scope} | {'—' if faults is None else faults}"
                       + (f" | {_f(m.get('cuda_peak_mb'), 0)} |" if cuda else " |"))
        out.append("")
    for section, error in result.get("errors", {}).items():
        out.append(f"**{section} failed:** {error}")
    return "\n".join(out).rstrip() + "\n"


def machine_line(result: dict) -> str:
    m = result.get("machine", {})
    parts = [f"{m.get('cpu')} ({m.get('logical_cpus')} logical CPUs, {m.get('torch_threads')} torch threads)"]
    if m.get("gpu"):
        parts.append(f"GPU {m['gpu']}")
    parts += [f"device `{m.get('device')}`", f"torch {m.get('torch')}", f"torchvision {m.get('torchvision')}",
              f"Python {m.get('python')}", f"{m.get('platform')}", f"commit {m.get('commit')}",
              f"allocator: {m.get('allocator', 'default')}"]
    if m.get("load_average_start"):
        parts.append(f"load average {m['load_average_start'][0]} at the start, "
                     f"{(m.get('load_average_end') or ['?'])[0]} at the end")
    return "; ".join(parts)


def targets_across_runs(results: list[dict]) -> list[str]:
    """One row per target, one column per run: how stable each verdict is."""
    out = ["## Targets across the runs below", "",
           "| target | limit | " + " | ".join(f"run {i + 1}" for i in range(len(results))) + " | met in |",
           "|---|---|" + "---|" * len(results) + "---|"]
    for i, target in enumerate(results[0]["targets"]):
        unit = "×" if target["unit"] == "x" else f" {target['unit']}"
        fmt = (lambda v: f"{_f(v, 3)}×") if target["unit"] == "x" else (lambda v: f"{_ms(v)} ms")
        values = [r["targets"][i]["measured"] for r in results]
        met = sum(1 for r in results if r["targets"][i]["met"])
        measured = sum(1 for v in values if v is not None)  # a run with --only skips some targets
        limit = _f(target["limit"]) if target["unit"] == "x" else _ms(target["limit"])
        out.append(f"| {target['what']} | ≤ {limit}{unit} | " + " | ".join("—" if v is None else fmt(v) for v in values)
                   + f" | {met} of {measured} |")
    return out + [""]


def render_markdown(results: list[dict], notes: str = "") -> str:
    """docs/benchmarks.md from one or more runs' JSON (e.g. a CPU run and a GPU run), with
    `notes` (a reader's summary of what they show, markdown) after the introduction."""
    out = ["# Benchmarks", "",
           "Written by `python -m resattn.bench --from-json ... --markdown docs/benchmarks.md` from the JSON of the "
           "runs below; `python -m resattn.bench --help` says what is measured and how. Every model runs in eval "
           "mode under `torch.inference_mode`, channels_last, with the same threads; cases are timed interleaved "
           "after warm-up and the tables give medians. \"eager\" is the model as built, \"fused\" has its "
           "BatchNorm folded away (`resattn.model.fuse.fuse_for_inference` for the attention networks, torch.fx's "
           "conv-BN fusion for torchvision's ResNets).", ""]
    if not any(r.get("machine", {}).get("device", "").startswith("cuda") for r in results):
        out += ["GPU: not measured (these runs had no GPU). On one, run the same command with `--device cuda`, "
                "and again with `--compile`.", ""]
    if notes.strip():
        out += [notes.strip(), ""]
    full = [r for r in results if not r.get("quick") and r.get("targets")]
    if len(full) > 1:
        out += targets_across_runs(full)
    for result in results:
        title = "Quick run (harness check only; figures are not comparable)" if result.get("quick") else "Run"
        out += [f"## {title}: {result.get('started', '')}", "",
                f"Command: `{result.get('command')}`  ", f"Machine: {machine_line(result)}  ",
                f"Wall time: {_f(result.get('wall_s'), 0)} s", "", tables(result), ""]
    return "\n".join(out).rstrip() + "\n"
