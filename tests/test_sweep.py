"""python -m resattn.sweep: a plan of runs trained one after another, published, skipped when
done, resumed when stopped. Trains tiny networks on a few pack images per class."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resattn import sweep
from resattn.data import pack_available
from resattn.errors import ResattnError

ROOT = Path(__file__).resolve().parents[1]
PLAN = """
[defaults]
model = "attention56_cifar"
width = 0.25
input_size = 32
eval_size = 32
epochs = 1
batch_size = 8
limit = 2
eval_every = 1
precision = "bf16"

[[run]]
name = "tiny_arl"
attention = "mixed"
residual = "arl"
seed = 0

[[run]]
name = "tiny_nal"
attention = "mixed"
residual = "nal"
seed = 0
ship = true
"""


def write_plan(folder: Path, text: str = PLAN, suffix: str = ".toml") -> Path:
    path = folder / f"plan{suffix}"
    path.write_text(text)
    return path


# Tiny networks: one thread each is faster than two fighting over a busy machine's cores.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resattn.sweep", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600, env=ENV)


def test_plan_merges_defaults_and_orders_the_train_command(tmp_path):
    runs = sweep.load_plan(write_plan(tmp_path), root=tmp_path)
    assert [r.name for r in runs] == ["tiny_arl", "tiny_nal"]
    assert runs[1].ship and not runs[0].ship
    assert runs[0].card_dest == tmp_path / "docs" / "cards" / "tiny_arl.json"
    assert runs[1].card_dest == tmp_path / "checkpoints" / "tiny_nal.json"
    args = runs[0].train_args()
    assert args[:2] == ["--model", "attention56_cifar"] and args[args.index("--precision") + 1] == "bf16"
    assert args[-4:] == ["--name", "tiny_arl", "--out", str(tmp_path / "runs" / "tiny_arl")]
    assert [r.status() for r in runs] == ["waiting", "waiting"]


def test_json_plans_work_too(tmp_path):
    plan = {"defaults": {"epochs": 2}, "run": [{"name": "a", "attention": "channel", "seed": 1}]}
    (run,) = sweep.load_plan(write_plan(tmp_path, json.dumps(plan), ".json"), root=tmp_path)
    assert run.options == {"epochs": 2, "attention": "channel", "seed": 1}


@pytest.mark.parametrize("text, message", [
    ("[[run]]\nattention = 'mixed'\n", "has no name"),
    ("[[run]]\nname = 'a'\n[[run]]\nname = 'a'\n", "appears twice"),
    ("[[run]]\nname = 'a'\nlearning_rate = 0.1\n", "unknown keys ['learning_rate']"),
    ("[defaults]\nepochs = 3\n", "lists no runs"),
    ("[[run]\nname = ", "does not parse"),
])
def test_bad_plans_get_one_clear_sentence(tmp_path, text, message):
    with pytest.raises(ResattnError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sweep.load_plan(write_plan(tmp_path, text), root=tmp_path)
    result = run_sweep(str(write_plan(tmp_path, text)), "--root", str(tmp_path))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_missing_plan_is_a_one_line_error(tmp_path):
    result = run_sweep(str(tmp_path / "nope.toml"))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "No plan at" in result.stderr


@pytest.mark.slow
def test_sweep_trains_publishes_and_skips_finished_runs(tmp_path):
    if not pack_available():
        pytest.skip("the Imagenette pack is not available")
    plan = write_plan(tmp_path)
    first = run_sweep(str(plan), "--root", str(tmp_path))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "sweep finished" in first.stdout
    # Published: cards of both, weights only of the shipped one, predictions for every val image used.
    arl = json.loads((tmp_path / "docs" / "cards" / "tiny_arl.json").read_text())
    assert arl["recipe"]["precision"].startswith("bf16") and arl["recipe"]["seed"] == 0
    assert "--precision bf16" in arl["recipe"]["command"] and "--resume" not in arl["recipe"]["command"]
    assert (tmp_path / "checkpoints" / "tiny_nal.safetensors").is_file()
    assert not (tmp_path / "checkpoints" / "tiny_arl.safetensors").exists()
    with open(tmp_path / "docs" / "predictions" / "tiny_arl.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == arl["metrics"]["val_images"] == 20  # 2 per class, 10 classes
    right = sum(r["label"] == r["prediction"] for r in rows)
    assert round(100 * right / len(rows), 2) == arl["metrics"]["val_top1"]  # predictions agree with the card
    results_md = (tmp_path / "docs" / "results.md").read_text()
    assert "| tiny_arl | attention56_cifar | mixed | arl | 0 |" in results_md
    # Again: nothing left to do, nothing retrained.
    log = (tmp_path / "runs" / "tiny_arl" / "train.log").read_text()
    second = run_sweep(str(plan), "--root", str(tmp_path))
    assert second.returncode == 0 and "training" not in second.stdout
    assert (tmp_path / "runs" / "tiny_arl" / "train.log").read_text() == log
    status = run_sweep(str(plan), "--root", str(tmp_path), "--status")
    assert status.stdout.split("\n")[0].split()[-1] == "done"


@pytest.mark.slow
def test_a_stopped_run_is_resumed_not_restarted(tmp_path):
    if not pack_available():
        pytest.skip("the Imagenette pack is not available")
    plan = write_plan(tmp_path, PLAN.replace("epochs = 1", "epochs = 2").split("[[run]]\nname = \"tiny_nal\"")[0])
    (run,) = sweep.load_plan(plan, root=tmp_path)
    # Train the first epoch by hand, as a sweep stopped after it would have left it.
    subprocess.run([sys.executable, "-m", "resattn.train", *run.train_args(), "--stop-after", "1"], cwd=ROOT,
                   capture_output=True, check=True, timeout=600, env=ENV)
    assert (run.out / "last.pt").is_file() and run.status() == "in progress"
    result = run_sweep(str(plan), "--root", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tiny_arl: resuming" in result.stdout
    epochs = [json.loads(line)["epoch"] for line in (run.out / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]  # the stopped epoch was finished, not started again
