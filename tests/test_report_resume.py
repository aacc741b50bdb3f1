"""`python -m resattn.report` resumes: an interrupted run (an exception after k images, or a
process killed with SIGKILL) leaves each finished image in OUT/partial/; the same command
then analyses only the missing images and writes files identical, byte for byte, to an
uninterrupted run's (on one process or, resuming, on two torchrun processes). A resume with
another setting, checkpoint or figure choice is refused with one line; --fresh starts over.
A tiny checkpoint and four generated images keep it fast."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_report import CLASSES, FAST, ROOT, generated_images, image_tree

from resattn.analysis import study
from resattn.checkpoints import model_card, save_checkpoint
from resattn.report import main
from resattn.report.partial import FOLDER, MANIFEST, PartialResults

pytestmark = pytest.mark.usefixtures("one_thread")

N_IMAGES = 4
DONE = 2  # images finished before the interruption


class Interrupted(Exception):
    """Stands for the end of a session: raised instead of analysing image DONE + 1."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from conftest import build_tiny

    model = build_tiny(num_classes=len(CLASSES), seed=3)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", model,
                           model_card(model, classes=CLASSES, input_size=32))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return image_tree(tmp_path_factory.mktemp("images") / "tree", per_class=N_IMAGES // 2)


def command(checkpoint: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--images", str(images), "--out", str(out), "--no-figures", *FAST,
            *extra]


def counting_analyse(monkeypatch, stop_after: int | None = None) -> list[int]:
    """Replace study.analyse_image (which the report calls) by one that records the indices
    it analyses and, with `stop_after`, raises Interrupted when asked for one more."""
    calls: list[int] = []
    real = study.analyse_image

    def analyse(model, image, index, *args, **kwargs):
        if stop_after is not None and len(calls) == stop_after:
            raise Interrupted
        calls.append(index)
        return real(model, image, index, *args, **kwargs)

    monkeypatch.setattr(study, "analyse_image", analyse)
    return calls


def report_files(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(out.glob("*.csv"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, checkpoint, images) -> Path:
    out = tmp_path_factory.mktemp("whole") / "out"
    assert main(command(checkpoint, images, out)) == 0
    assert not (out / FOLDER).exists()  # removed once the files are written
    return out


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, checkpoint, images) -> Path:
    """OUT of a run stopped after DONE images (copy it before resuming)."""
    out = tmp_path_factory.mktemp("stopped") / "out"
    with pytest.MonkeyPatch.context() as monkeypatch:
        counting_analyse(monkeypatch, stop_after=DONE)
        with pytest.raises(Interrupted):
            main(command(checkpoint, images, out))
    return out


def saved_images(out: Path) -> list[str]:
    return sorted(p.name for p in (out / FOLDER).glob("image-*.npz"))


def copy_of(out: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(out, tmp_path / "out"))


def test_a_record_round_trips_bit_for_bit(tmp_path, checkpoint):
    from resattn.checkpoints import load_checkpoint

    model, card = load_checkpoint(checkpoint)
    x = card.preprocess_batch(torch.from_numpy(np.random.default_rng(0).integers(0, 255, (1, 32, 32, 3),
                                                                                  dtype=np.uint8)))
    settings = study.StudySettings(steps=2, ig_steps=2, draws=4, batch_size=16)
    record = study.analyse_image(model, x, 7, 1, settings, cascade=study.cascade_models(model, 0))
    partial = PartialResults(tmp_path, {"a": "manifest"})
    partial.prepare(fresh=False)
    partial.save(record)
    back = partial.load(7)

    def same(a, b) -> bool:  # equal values of the same types and dtypes, NaN equal to NaN
        if isinstance(a, dict):
            return type(b) is dict and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
        if isinstance(a, tuple):
            return type(b) is tuple and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, (np.ndarray, np.generic)):
            return (type(a) is type(b) and a.dtype == b.dtype and np.shape(a) == np.shape(b)
                    and np.array_equal(a, b, equal_nan=True))
        return type(a) is type(b) and (a == b or (a != a and b != b))

    for name in ("index", "label", "target", "probability", "native", "kept", "border", "border_chance",
                 "attribution_ranks", "auc", "sanity", "sanity_agreement"):
        assert not isinstance(getattr(record, name), dict) or getattr(record, name), name  # empty proves nothing
        assert same(getattr(record, name), getattr(back, name)), name
    # The check itself tells a float32 array from a float64 one, and a tuple from a list.
    assert not same({"a": np.zeros(2, np.float32)}, {"a": np.zeros(2)}) and not same((1.0,), [1.0])


def test_an_interrupted_run_resumes_to_the_uninterrupted_files(tmp_path, monkeypatch, checkpoint, images,
                                                                interrupted, uninterrupted):
    assert saved_images(interrupted) == ["image-000000.npz", "image-000001.npz"]
    assert (interrupted / FOLDER / MANIFEST).is_file() and not list(interrupted.glob("*.csv"))
    out = copy_of(interrupted, tmp_path)
    calls = counting_analyse(monkeypatch)
    assert main(command(checkpoint, images, out)) == 0
    assert calls == list(range(DONE, N_IMAGES))  # the saved images are not analysed again
    assert report_files(out) == report_files(uninterrupted)
    assert len(report_files(out)) == 10
    assert '"images_resumed": 2' in (out / "report.json").read_text()
    assert not (out / FOLDER).exists()


@pytest.mark.parametrize("change", ["seed", "checkpoint", "figures", "images"])
def test_a_resume_with_another_run_is_refused_and_fresh_starts_over(tmp_path, monkeypatch, capsys, checkpoint,
                                                                     images, interrupted, change):
    out = copy_of(interrupted, tmp_path)
    args = command(checkpoint, images, out)
    if change == "seed":
        args += ["--seed", "1"]
        why = "seed was 0, now 1"
    elif change == "checkpoint":
        from conftest import build_tiny

        other = build_tiny(num_classes=len(CLASSES), seed=4)
        args[1] = str(save_checkpoint(tmp_path / "ckpt" / "tiny", other,
                                      model_card(other, classes=CLASSES, input_size=32)))
        why = "the checkpoint differs"
    elif change == "figures":
        args.remove("--no-figures")
        why = "figures was False, now True"
    else:  # the same file names, other pixels
        args[3] = str(image_tree(tmp_path / "other", per_class=N_IMAGES // 2 + 1))
        why = "n_images was 4, now 6"
    calls = counting_analyse(monkeypatch)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and why in err and "--fresh" in err, err
    assert calls == [] and saved_images(out) == saved_images(interrupted)  # nothing analysed, nothing lost
    if change == "seed":
        assert main(args + ["--fresh"]) == 0
        assert calls == list(range(N_IMAGES))


def test_other_pixels_under_the_same_names_are_another_image_set(tmp_path, monkeypatch, capsys, checkpoint,
                                                                  interrupted):
    out = copy_of(interrupted, tmp_path)
    for c, name in enumerate(("red", "green")):
        generated_images(tmp_path / "other" / name, N_IMAGES // 2, offset=c + 5)
    calls = counting_analyse(monkeypatch)
    assert main(command(checkpoint, tmp_path / "other", out)) == 2
    assert "the images differ" in capsys.readouterr().err and calls == []


def test_a_saved_image_names_its_run(tmp_path, monkeypatch, capsys, checkpoint, images, interrupted):
    """Without its manifest (say a removal cut short), the folder's images still refuse
    another run: each file names the run it belongs to."""
    out = copy_of(interrupted, tmp_path)
    (out / FOLDER / MANIFEST).unlink()
    calls = counting_analyse(monkeypatch)
    assert main(command(checkpoint, images, out, "--seed", "1")) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("error: ") and "image-000000.npz belongs to another report" in last, last
    assert calls == []


def test_a_changed_bootstrap_resumes(tmp_path, monkeypatch, checkpoint, images, interrupted):
    """--bootstrap only enters the tables computed at the end, so it may change on a resume."""
    out = copy_of(interrupted, tmp_path)
    calls = counting_analyse(monkeypatch)
    assert main(command(checkpoint, images, out, "--bootstrap", "60")) == 0
    assert calls == list(range(DONE, N_IMAGES))


def test_a_damaged_record_is_named(tmp_path, capsys, checkpoint, images, interrupted):
    out = copy_of(interrupted, tmp_path)
    damaged = out / FOLDER / "image-000001.npz"
    damaged.write_bytes(damaged.read_bytes()[:100])
    assert main(command(checkpoint, images, out)) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after the progress lines: one error line
    assert last.startswith("error: ") and "image-000001.npz is damaged" in last and "Traceback" not in last, last


def _wait_for(condition, process: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the report did not get there in time"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes(tmp_path, monkeypatch, checkpoint, images, uninterrupted):
    """The real interruption: the process is killed (no exception handler, no cleanup) once
    DONE images are saved; the same command then finishes the report."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "resattn.report", *command(checkpoint, images, out)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: (out / FOLDER).is_dir() and len(saved_images(out)) >= DONE, process)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    done = saved_images(out)
    assert DONE <= len(done) < N_IMAGES and not list(out.glob("*.csv")), done
    calls = counting_analyse(monkeypatch)
    assert main(command(checkpoint, images, out)) == 0
    assert sorted(calls + [int(name[6:12]) for name in done]) == list(range(N_IMAGES))
    assert report_files(out) == report_files(uninterrupted)


@pytest.mark.slow
def test_a_single_process_run_resumes_on_two_torchrun_processes(tmp_path, checkpoint, images, interrupted,
                                                                 uninterrupted):
    out = copy_of(interrupted, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "resattn.report", *command(checkpoint, images, out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming: {DONE} of {N_IMAGES} images" in done.stderr
    assert report_files(out) == report_files(uninterrupted)
    assert '"processes": 2' in (out / "report.json").read_text()
