"""The training CLI: resume is exact, signals save and exit, torchrun with 2 processes agrees,
bad output folders fail before training. All on a tiny synthetic set."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "attention56_cifar", "--width", "0.5", "--synthetic", "48", "--input-size", "32",
        "--eval-size", "32", "--batch-size", "8", "--epochs", "2", "--workers", "0"]


def run_train(*args: str, timeout: int = 300, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "resattn.train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "attention56_cifar_mixed_arl.safetensors"))


def test_resume_after_stop_matches_uninterrupted_run(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    done = run_train(*TINY, "--out", str(straight))
    assert done.returncode == 0, done.stderr
    # 7 steps: the stop falls inside epoch 2 (6 steps per epoch), not on a boundary.
    stopped = run_train(*TINY, "--out", str(resumed), "--stop-after", "7")
    assert stopped.returncode == 0, stopped.stderr
    assert "continue with --resume" in stopped.stderr
    assert not (resumed / "attention56_cifar_mixed_arl.safetensors").exists()
    state = torch.load(resumed / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 1)
    finished = run_train(*TINY, "--out", str(resumed), "--resume")
    assert finished.returncode == 0, finished.stderr
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5, msg=key)
    epochs = [json.loads(line)["epoch"] for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    card = json.loads((resumed / "attention56_cifar_mixed_arl.json").read_text())
    assert card["recipe"]["epochs"] == 2 and card["metrics"]["val_images"] == 24


def test_sigterm_saves_state_and_exits_cleanly(tmp_path, reliability):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [a if a != "2" else "50" for a in TINY]  # many epochs: it is still running when signalled
    proc = subprocess.Popen([sys.executable, "-m", "resattn.train", *args, "--out", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "log.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    state = torch.load(out / "last.pt", weights_only=True)
    said = [line for line in err.splitlines() if "state saved" in line]
    reliability("training", "SIGTERM during an epoch", "saves the position inside the epoch, exit 0",
                f"exit {proc.returncode}; saved at epoch {state['epoch'] + 1} step {state['step']}; "
                f"said: {said[-1].strip() if said else err[-200:]}")
    assert proc.returncode == 0, err
    assert "state saved" in err and "Traceback" not in err
    assert state["epoch"] >= 1


def test_existing_run_needs_resume_and_bad_out_fails_before_training(tmp_path, reliability):
    out = tmp_path / "run"
    assert run_train(*TINY, "--epochs", "1", "--out", str(out)).returncode == 0
    again = run_train(*TINY, "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    bad = run_train(*TINY, "--out", str(blocked / "sub"))
    reliability("training", "output folder that cannot be created (its parent is a file)",
                "one-line error before training, exit 2", f"exit {bad.returncode}: {bad.stderr.strip()}")
    reliability("training", "starting again over an existing run without --resume",
                "refused with what to do, exit 2", f"exit {again.returncode}: {again.stderr.strip()}")
    assert bad.returncode == 2 and bad.stderr.startswith("error: Cannot write")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_kill_9_mid_epoch_loses_at_most_one_epoch(tmp_path, reliability):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [a if a != "2" else "4" for a in TINY]
    proc = subprocess.Popen([sys.executable, "-m", "resattn.train", *args, "--out", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # into the next epoch
    proc.kill()
    proc.wait(timeout=30)
    state = torch.load(out / "last.pt", weights_only=True)  # a whole file, never half-written
    assert state["step"] == 0 and state["epoch"] >= 1
    resumed = run_train(*args, "--out", str(out), "--resume")
    epochs = [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()]
    reliability("training", "kill -9 during an epoch", "last.pt whole; resume loses at most one epoch",
                f"last.pt at epoch {state['epoch']} (whole, loads); resume exit {resumed.returncode}, "
                f"logged epochs {epochs}")
    assert resumed.returncode == 0, resumed.stderr
    assert epochs[-1] == 4 and sorted(set(epochs)) == [1, 2, 3, 4]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_agree(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "resattn.train", *TINY, "--device", "cpu", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    digests = [(out / f"weights_rank{r}.sha256").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    card = json.loads((out / "attention56_cifar_mixed_arl.json").read_text())
    assert card["recipe"]["processes"] == 2 and card["recipe"]["batch_size"] == 16


def test_snapshot_of_unfinished_run_is_marked(tmp_path):
    out = tmp_path / "run"
    assert run_train(*TINY, "--out", str(out), "--stop-after", "7").returncode == 0
    snap = run_train("--out", str(out), "--resume", "--snapshot", str(tmp_path / "snap"))
    assert snap.returncode == 0, snap.stderr
    card = json.loads((tmp_path / "snap.json").read_text())
    assert card["weights"].startswith("snapshot of an unfinished training run after epoch 1 of 2")
    assert card["recipe"]["epochs"] == 1 and card["recipe"]["planned_epochs"] == 2
    assert "--epochs 2" in card["recipe"]["command"]
    assert not list(out.glob("*.safetensors"))  # the run itself is untouched and can go on
