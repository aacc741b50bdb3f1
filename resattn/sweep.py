"""`python -m resattn.sweep PLAN`: train a list of runs one after another, resumably.

A plan (TOML or JSON) holds `defaults` and a list of `run`s; each run is a set of
`python -m resattn.train` options plus a `name` and `ship`:

    [defaults]
    model = "attention56"
    width = 0.25
    epochs = 24
    precision = "bf16"

    [[run]]
    name = "attention56_mixed_arl_bf16"
    attention = "mixed"
    residual = "arl"
    seed = 0
    ship = false          # true: weights + card go to checkpoints/, else the card to docs/cards/

For each run, in order, the sweep
- skips it when its card is already published (finished earlier),
- otherwise trains it in `RUNS/<name>` (`--resume` when a `last.pt` is there, so a stopped
  sweep loses at most one epoch), logging to `RUNS/<name>/train.log`,
- writes the per-image val predictions (`docs/predictions/<name>.csv`, for paired tests),
- publishes the card (and, for shipped runs, the weights), and
- regenerates the tables of `docs/results.md` from all cards (`python -m resattn.results`).

Run it again after an interruption and it picks up where it stopped. `--status` prints the
plan with what is done, what is in progress (epoch reached) and what is waiting.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ResattnError

PROJECT = Path(__file__).resolve().parents[1]
# The order of train options in the command a card records, so that equal runs read alike.
TRAIN_OPTIONS = ("model", "attention", "residual", "width", "input_size", "eval_size", "epochs", "batch_size",
                 "lr", "weight_decay", "label_smoothing", "min_scale", "warmup", "ema", "precision", "eval_every",
                 "seed", "data", "limit")
# Options that also say which images the published predictions are computed on.
EVALUATE_OPTIONS = ("data", "limit")
PLAN_KEYS = {"name", "ship"}


@dataclass
class Run:
    name: str
    options: dict
    ship: bool = False
    runs_dir: Path = field(default=PROJECT / "runs")
    root: Path = PROJECT  # where checkpoints/ and docs/ are published

    @property
    def out(self) -> Path:
        return self.runs_dir / self.name

    @property
    def card_dest(self) -> Path:
        return self.root / ("checkpoints" if self.ship else "docs/cards") / f"{self.name}.json"

    @property
    def predictions(self) -> Path:
        return self.root / "docs" / "predictions" / f"{self.name}.csv"

    def train_args(self) -> list[str]:
        args = []
        for key in sorted(self.options, key=lambda k: TRAIN_OPTIONS.index(k) if k in TRAIN_OPTIONS else 99):
            args += [f"--{key.replace('_', '-')}", str(self.options[key])]
        return args + ["--name", self.name, "--out", str(self.out.relative_to(PROJECT))
                       if self.out.is_relative_to(PROJECT) else str(self.out)]

    def status(self) -> str:
        if self.card_dest.is_file():
            return "done"
        if (self.out / f"{self.name}.safetensors").is_file():
            return "trained, not published"
        log = self.out / "log.jsonl"
        if log.is_file() and log.read_text().strip():
            last = json.loads(log.read_text().strip().splitlines()[-1])
            return f"in progress: epoch {last['epoch']}/{self.options.get('epochs', '?')}"
        return "in progress" if (self.out / "last.pt").is_file() else "waiting"


def load_plan(path: str | Path, runs_dir: Path | None = None, root: Path = PROJECT) -> list[Run]:
    path = Path(path)
    try:
        text = path.read_text()
        plan = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except FileNotFoundError:
        raise ResattnError(f"No plan at {path}; give the path of a TOML or JSON plan.") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ResattnError(f"The plan {path} does not parse ({exc}); fix it and start again.") from None
    defaults = plan.get("defaults", {})
    runs, names = [], set()
    for i, entry in enumerate(plan.get("run", [])):
        merged = {**defaults, **entry}
        if "name" not in merged:
            raise ResattnError(f"Run {i + 1} of {path} has no name; every run needs a unique `name`.")
        if merged["name"] in names:
            raise ResattnError(f"The name {merged['name']!r} appears twice in {path}; names must be unique.")
        names.add(merged["name"])
        unknown = set(merged) - PLAN_KEYS - set(TRAIN_OPTIONS)
        if unknown:
            raise ResattnError(f"Run {merged['name']!r} has unknown keys {sorted(unknown)}; "
                               f"known: name, ship, {', '.join(TRAIN_OPTIONS)}.")
        options = {k: v for k, v in merged.items() if k not in PLAN_KEYS}
        runs.append(Run(merged["name"], options, bool(merged.get("ship", False)), runs_dir or root / "runs", root))
    if not runs:
        raise ResattnError(f"{path} lists no runs; add [[run]] tables.")
    return runs


class Sweep:
    def __init__(self, runs: list[Run], python: str = sys.executable, extra: list[str] | None = None,
                 root: Path = PROJECT) -> None:
        self.runs, self.python, self.extra, self.root = runs, python, extra or [], root
        self.child: subprocess.Popen | None = None
        self.stopping = False

    def stop(self, signum, frame) -> None:
        """Pass the stop on to the training process, which saves its position and exits."""
        self.stopping = True
        if self.child and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def call(self, args: list[str], log: Path) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            self.child = subprocess.Popen([self.python, "-m", *args], stdout=f, stderr=subprocess.STDOUT, cwd=PROJECT)
            return self.child.wait()

    def train(self, run: Run) -> bool:
        resume = ["--resume"] if (run.out / "last.pt").is_file() else []
        say(f"{run.name}: {'resuming' if resume else 'training'} ({run.status()}); log {run.out / 'train.log'}")
        started = time.perf_counter()
        rc = self.call(["resattn.train", *run.train_args(), *resume, *self.extra], run.out / "train.log")
        if rc != 0 or self.stopping:
            say(f"{run.name}: stopped (exit {rc}) after {(time.perf_counter() - started) / 60:.1f} min")
            return False
        say(f"{run.name}: trained in {(time.perf_counter() - started) / 60:.1f} min")
        return True

    def publish(self, run: Run) -> None:
        stem = run.out / run.name
        run.predictions.parent.mkdir(parents=True, exist_ok=True)
        same_images = [arg for key in EVALUATE_OPTIONS if key in run.options
                       for arg in (f"--{key}", str(run.options[key]))]
        rc = self.call(["resattn.evaluate", str(stem), "--predictions", str(run.predictions), *same_images],
                       run.out / "evaluate.log")
        if rc != 0:
            raise ResattnError(f"Evaluating {stem} failed; see {run.out / 'evaluate.log'}.")
        if run.ship:
            (self.root / "checkpoints").mkdir(parents=True, exist_ok=True)
            shutil.copy2(stem.with_name(stem.name + ".safetensors"), self.root / "checkpoints")
        run.card_dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(stem.with_name(stem.name + ".json"), run.card_dest)
        say(f"{run.name}: published {run.card_dest}")

    def regenerate(self) -> None:
        log = self.root / "runs" / "results.log"
        rc = self.call(["resattn.results", "--write", "--root", str(self.root)], log)
        if rc != 0:  # the tables are a view of the cards; a failure must not stop the training
            say(f"warning: regenerating docs/results.md failed; see {log}")

    def run(self) -> int:
        for run in self.runs:
            if self.stopping:
                return 1
            if run.status() == "done":
                continue
            if run.status() != "trained, not published" and not self.train(run):
                return 1
            self.publish(run)
            self.regenerate()
        say("sweep finished: every run is published")
        return 0


def say(message: str) -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m resattn.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", help="the plan, a .toml or .json file")
    p.add_argument("--status", action="store_true", help="print each run's state and exit")
    p.add_argument("--runs", type=Path, help="where runs train (default: runs/ in the project)")
    p.add_argument("--device", help="passed on to every training run (default: auto)")
    p.add_argument("--root", type=Path, default=PROJECT, help=argparse.SUPPRESS)  # tests publish elsewhere
    args = p.parse_args(argv)
    try:
        runs = load_plan(args.plan, args.runs.resolve() if args.runs else None, args.root.resolve())
        if args.status:
            for run in runs:
                print(f"{run.name:<40} {'ship' if run.ship else 'card':<5} {run.status()}")
            return 0
        sweep = Sweep(runs, extra=["--device", args.device] if args.device else [], root=args.root.resolve())
        signal.signal(signal.SIGTERM, sweep.stop)
        signal.signal(signal.SIGINT, sweep.stop)
        return sweep.run()
    except ResattnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
