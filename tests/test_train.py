"""The training CLI: resume is exact, signals save and exit, torchrun with 2 processes agrees,
bad output folders fail before training. All on a tiny synthetic set."""
from __future__ import annotations

import json
import os
import re
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


# Steps short enough to be interrupted inside an epoch: the 48 images in batches of 4 are 12
# steps per epoch; 2 epochs.
LONG = [a if a != "8" else "4" for a in TINY]
STEPS_PER_EPOCH = 12
PROGRESS = re.compile(r"epoch (\d+)/\d+:\s*\d+%\|[^|]*\|\s*(\d+)/(\d+)")


def last_progress(text: str) -> tuple[int, int, int] | None:
    """(epoch, steps done, steps per epoch) of the last progress bar update tqdm printed."""
    found = PROGRESS.findall(text)
    return tuple(int(v) for v in found[-1]) if found else None


def logged_epochs(out: Path) -> list[int]:
    log = out / "log.jsonl"
    return [json.loads(line)["epoch"] for line in log.read_text().splitlines()] if log.exists() else []


def start_until_inside_epoch(out: Path, err_path: Path, epoch: int = 2, min_steps: int = 2):
    """Start training and return (process, progress) once epoch `epoch` is under way: at
    least `min_steps` of its steps done and not all of them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "resattn.train", *LONG, "--out", str(out)], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 240
    while time.time() < deadline:
        progress = last_progress(err_path.read_text(errors="replace"))
        if progress and progress[0] == epoch and min_steps <= progress[1] < progress[2]:
            return proc, progress
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"training never got inside epoch {epoch}:\n{err_path.read_text()[-2000:]}")


def test_sigterm_saves_state_inside_the_epoch_and_resume_finishes(tmp_path, reliability):
    out, err_path = tmp_path / "run", tmp_path / "stderr.txt"
    proc, seen = start_until_inside_epoch(out, err_path)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    err = err_path.read_text()
    state = torch.load(out / "last.pt", weights_only=True)
    said = [line.strip() for line in err.replace("\r", "\n").splitlines() if "state saved" in line]
    resumed = run_train(*LONG, "--out", str(out), "--resume")
    epochs = logged_epochs(out)
    reliability("training", "SIGTERM during an epoch", "saves the position inside the epoch, exit 0; resume "
                "finishes the run", f"exit {proc.returncode}; signalled at step {seen[1]}/{seen[2]} of epoch "
                f"{seen[0]}; saved at epoch {state['epoch'] + 1} step {state['step']}; said: "
                f"{said[-1] if said else err[-200:]}; resume exit {resumed.returncode}, logged epochs {epochs}")
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    # The position inside epoch 2: at least the steps seen done, not the whole epoch.
    assert state["epoch"] == 1 and seen[1] <= state["step"] < STEPS_PER_EPOCH
    assert said and said[-1].startswith(f"stopped at epoch 2 step {state['step']};")
    assert resumed.returncode == 0, resumed.stderr
    assert epochs == [1, 2]


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
    out, err_path = tmp_path / "run", tmp_path / "stderr.txt"
    proc, seen = start_until_inside_epoch(out, err_path)
    proc.kill()
    proc.wait(timeout=30)
    # Where it died: epoch 1 logged and saved, epoch 2 under way and not finished (tqdm prints
    # the epoch's full count when its loop ends; the last count it printed is below it).
    at_death = last_progress(err_path.read_text(errors="replace"))
    logged = logged_epochs(out)
    state = torch.load(out / "last.pt", weights_only=True)  # a whole file, never half-written
    resumed = run_train(*LONG, "--out", str(out), "--resume")
    epochs = logged_epochs(out)
    reliability("training", "kill -9 during an epoch", "died mid-epoch; last.pt whole; resume loses at most one "
                "epoch", f"exit {proc.returncode} at step {at_death[1]}/{at_death[2]} of epoch {at_death[0]} (last "
                f"progress printed); last.pt at epoch {state['epoch']} (whole, loads); resume exit "
                f"{resumed.returncode}, logged epochs {epochs}")
    assert proc.returncode == -signal.SIGKILL
    assert at_death[0] == 2 and seen[1] <= at_death[1] < at_death[2] == STEPS_PER_EPOCH, at_death
    assert logged == [1] and (state["epoch"], state["step"]) == (1, 0)
    # Resume starts again at the beginning of epoch 2: what was lost is part of one epoch.
    assert resumed.returncode == 0, resumed.stderr
    assert epochs == [1, 2]


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
