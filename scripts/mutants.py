"""Proof that the test suite bites: apply named, realistic mistakes ("mutants") one at a time
to a copy of the repository (the committed HEAD, from `git archive`), run the tests that
stand for that behaviour, and check that each mistake makes them fail.

    python scripts/mutants.py                      # every mutant; exit 1 if one is not caught
    python scripts/mutants.py --only arl_as_nal    # some of them
    python scripts/mutants.py --write docs/testing.md   # also write the table there (make mutants)

Before the mutants, each test selection runs once on the unchanged copy and must pass: a
"caught" mutant then means the mistake broke the tests, not that they were broken already.
A mutant whose text no longer appears exactly once in its file is reported as stale (the code
moved on; update the mutant), and counts as a failure of this script.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- mutants:start -->", "<!-- mutants:end -->"


@dataclass(frozen=True)
class Mutant:
    name: str
    mistake: str  # what a developer might plausibly get wrong
    path: str  # file, relative to the repository root
    old: str  # text that must appear exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest arguments: the tests that stand for this behaviour


MUTANTS = [
    Mutant("arl_as_nal", "attention residual learning computes M·T (NAL) instead of (1 + M)·T",
           "resattn/model/attention.py",
           'return trunk * mask + trunk if self.mode == "arl" else trunk * mask',
           'return trunk * mask if self.mode == "arl" else trunk * mask + trunk',
           ("tests/test_trace.py", "-k", "arl or nal")),
    Mutant("channel_norm_over_space", "channel attention L2-normalises over the rows instead of the channels",
           "resattn/model/mask.py",
           "return F.normalize(x, p=2.0, dim=1, eps=CHANNEL_EPS)",
           "return F.normalize(x, p=2.0, dim=2, eps=CHANNEL_EPS)",
           ("tests/test_model.py", "-k", "channel")),
    Mutant("spatial_norm_over_channels", "spatial attention normalises each position over the channels instead "
           "of each channel over the positions",
           "resattn/model/mask.py",
           "    mean = x.mean(dim=(2, 3), keepdim=True)\n    std = x.std(dim=(2, 3), keepdim=True, correction=0)",
           "    mean = x.mean(dim=1, keepdim=True)\n    std = x.std(dim=1, keepdim=True, correction=0)",
           ("tests/test_model.py", "-k", "spatial")),
    Mutant("spatial_sample_std", "spatial attention uses the sample standard deviation (n - 1) instead of the "
           "population one", "resattn/model/mask.py",
           "std = x.std(dim=(2, 3), keepdim=True, correction=0)",
           "std = x.std(dim=(2, 3), keepdim=True, correction=1)",
           ("tests/test_model.py", "-k", "spatial")),
    Mutant("mask_before_activation", "the trace records the mask logits instead of M after the activation f",
           "resattn/trace.py",
           "Hook(module.soft_mask_branch, on_mask)",
           "Hook(module.soft_mask_branch.head, on_mask)",
           ("tests/test_trace.py",)),
    Mutant("hook_not_removed", "the hook helper leaves its hooks registered after the pass",
           "resattn/hooks.py",
           "registered.callback(handle.remove)",
           "pass",
           ("tests/test_trace.py", "-k", "hooks")),
    Mutant("hooks_record_other_threads", "the hooks act on passes of other threads too",
           "resattn/hooks.py",
           "        if threading.get_ident() != thread:\n            return None",
           "        if False:\n            return None",
           ("tests/test_trace.py", "tests/test_hardening_lib.py", "-k", "thread")),
    Mutant("top1_off_by_one", "top-1 divides by one image too many",
           "resattn/evaluate.py",
           '"top1": round(100.0 * confusion.diag().sum().item() / max(1, confusion.sum().item()), 2)',
           '"top1": round(100.0 * confusion.diag().sum().item() / max(1, confusion.sum().item() + 1), 2)',
           ("tests/test_evaluate.py",)),
    Mutant("softmax_over_batch", "evaluation's softmax runs over the batch instead of the classes",
           "resattn/evaluate.py",
           "probability, predicted = logits.softmax(1).max(1)",
           "probability, predicted = logits.softmax(0).max(1)",
           ("tests/test_evaluate.py",)),
    Mutant("eval_ignores_card_normalisation", "evaluation normalises with ImageNet's mean/std, not the card's",
           "resattn/card.py",
           "return eval_transform(self.input_size, self.mean, self.std)",
           "return eval_transform(self.input_size)",
           ("tests/test_evaluate.py",)),
    Mutant("preprocess_mean_std_swapped", "preprocessing passes std as the mean and mean as the std",
           "resattn/data.py",
           "return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])",
           "return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(std), list(mean))])",
           ("tests/test_evaluate.py", "-k", "preprocessing")),
    Mutant("upload_error_swallowed", "the sidebar swallows an unreadable upload instead of showing st.error",
           "ui/sidebar.py",
           'st.error(f"{what}: {exc}")',
           "pass",
           ("tests/test_reliability.py", "-k", "uploader and (empty or truncated)")),
    Mutant("exif_ignored", "photos are loaded without applying their EXIF orientation",
           "resattn/images.py",
           "return _to_rgb(ImageOps.exif_transpose(img))",
           "return _to_rgb(img)",
           ("tests/test_images.py", "-k", "exif")),
    Mutant("card_residual_ignored", "loading a checkpoint ignores the card's residual mode (NAL loads as ARL)",
           "resattn/checkpoints.py",
           "attention=card.attention, residual=card.residual,",
           "attention=card.attention,",
           ("tests/test_checkpoints.py", "-k", "round_trip")),
    Mutant("randomise_touches_batchnorm", "mask-branch randomisation also overwrites the BatchNorm weights",
           "resattn/analysis/interventions.py",
           "if isinstance(layer, nn.Conv2d):",
           "if isinstance(layer, (nn.Conv2d, nn.BatchNorm2d)):",
           ("tests/test_analysis.py", "-k", "randomis")),
    # The README's example now reads images with resattn.load_image and preprocesses through the
    # card, so the export it depends on is load_image (it no longer touches resattn.data).
    Mutant("readme_needs_load_image", "`import resattn` no longer exports load_image (the README example breaks)",
           "resattn/__init__.py",
           "from .images import load_image\n",
           "",
           ("tests/test_docs.py", "-k", "README")),
]


def copy_of_head(into: Path) -> Path:
    """The committed tree (tracked files at HEAD), so local edits in progress do not count."""
    repo = into / "repo"
    repo.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(repo)], input=archive, check=True)
    return repo


def run_tests(repo: Path, tests: tuple[str, ...], env: dict, timeout: int) -> tuple[int, list[str], float]:
    """(pytest exit code, failing test ids, seconds) for one test selection."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "--no-header",
                           "--maxfail=5", *tests], cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    # "FAILED tests/x.py::test[an id with spaces] - AssertionError: ..." (-rf summary lines)
    failed = [m.group(1) for m in re.finditer(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", done.stdout, re.M)]
    if done.returncode not in (0, 1):  # collection or usage error, no tests collected, interrupted
        failed.append(f"(pytest exit {done.returncode}: {' '.join(done.stdout.strip().splitlines()[-1:])})")
    return done.returncode, failed, time.perf_counter() - started


def short(test_id: str) -> str:
    return test_id.removeprefix("tests/").split(" - ")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="names of the mutants to run (default: all)")
    parser.add_argument("--write", metavar="FILE.md", help=f"replace the table between {START} and {END} there")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per pytest run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.only and len(chosen) != len(args.only):
        print(f"unknown mutant(s): {sorted(set(args.only) - {m.name for m in MUTANTS})}", file=sys.stderr)
        return 2
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)  # a skip must stay a skip here: the mistake, not a missing pack, has to fail
    sys.path.insert(0, str(ROOT))
    from resattn.data import find_pack, pack_available

    if pack_available():
        env["RESATTN_DATA"] = str(find_pack())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    rows, problems, started = [], 0, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="resattn-mutants-") as tmp:
        repo = copy_of_head(Path(tmp))
        baseline: dict[tuple, tuple[int, list[str]]] = {}
        for m in chosen:
            target = repo / m.path
            text = target.read_text()
            count = text.count(m.old)
            if count != 1:
                print(f"{m.name}: STALE, the text to change appears {count} times in {m.path}", flush=True)
                rows.append((m, "stale", [f"text found {count} times"], 0.0))
                problems += 1
                continue
            if m.tests not in baseline:
                code, failed, _ = run_tests(repo, m.tests, env, args.timeout)
                baseline[m.tests] = (code, failed)
            code, failed = baseline[m.tests]
            if code != 0:
                print(f"{m.name}: the tests fail WITHOUT the mutant: {failed}", flush=True)
                rows.append((m, "baseline fails", failed, 0.0))
                problems += 1
                continue
            target.write_text(text.replace(m.old, m.new))
            try:
                code, failed, seconds = run_tests(repo, m.tests, env, args.timeout)
            finally:
                target.write_text(text)
            caught = code != 0
            problems += not caught
            rows.append((m, "caught" if caught else "MISSED", failed, seconds))
            print(f"{m.name}: {'caught' if caught else 'MISSED'} in {seconds:.0f} s by {[short(f) for f in failed]}",
                  flush=True)
    total = time.perf_counter() - started
    caught = sum(1 for _, result, _, _ in rows if result == "caught")
    summary = (f"{caught} of {len(rows)} mutants caught; `python scripts/mutants.py` at commit {commit}, "
               f"{datetime.date.today().isoformat()}, {total / 60:.1f} min on {os.cpu_count()} cores.")
    print(summary)
    if args.write:
        write_table(Path(args.write), rows, summary)
    return 1 if problems else 0


def write_table(path: Path, rows, summary: str) -> None:
    lines = [START, "", "| mutant | mistake | where | tests run | failing tests (first 5) | result |",
             "|---|---|---|---|---|---|"]
    for m, result, failed, seconds in rows:
        tests = " ".join(m.tests).replace("|", "\\|")
        shown = "<br>".join(f"`{short(f)}`" for f in failed[:5]) or "none"
        lines.append(f"| `{m.name}` | {m.mistake} | `{m.path}` | `{tests}` | {shown} | {result} "
                     f"({seconds:.0f} s) |")
    lines += ["", summary, "", END]
    text = path.read_text() if path.exists() else ""
    if START in text and END in text:
        text = text[:text.index(START)] + "\n".join(lines) + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + "\n".join(lines) + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
