"""`python -m resattn.train`: train a Residual Attention Network on the Imagenette pack or an
ImageFolder tree. Runs unchanged under `torchrun --nproc_per_node=N` (DistributedDataParallel,
gloo on CPU, nccl on GPU).

Every epoch writes `OUT/last.pt` atomically (model, optimiser, schedule, RNG, position) and a
line of `OUT/log.jsonl`; `--resume` continues from `last.pt`. Ctrl-C or SIGTERM finishes the
current step, saves the position inside the epoch, and exits; `--resume` picks it up there.
At the end the model is evaluated and saved as `OUT/<name>.safetensors` + `<name>.json`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from .checkpoints import IMAGENET_MEAN, IMAGENET_STD, atomic_write, save_checkpoint
from .data import TensorImageDataset, eval_transform, load_split, synthetic_set, train_transform
from .errors import ResattnError
from .evaluate import evaluate_model
from .model import create_model, list_models
from .runtime import any_rank, hardware, project_commit, resolve_precision, setup_distributed

STATE_FILE = "last.pt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m resattn.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="attention56", choices=list_models())
    p.add_argument("--attention", default="mixed", choices=["mixed", "channel", "spatial", "none"])
    p.add_argument("--residual", default="arl", choices=["arl", "nal"])
    p.add_argument("--width", type=float, default=0.25, help="channel multiplier (1.0 = the paper)")
    p.add_argument("--input-size", type=int, default=112, help="train crop size")
    p.add_argument("--eval-size", type=int, default=128, help="val / inference input size")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--lr", type=float, default=0.2, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4, help="on conv/linear weights only")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--warmup", type=float, default=0.25, help="fraction of steps spent rising to --lr")
    p.add_argument("--min-scale", type=float, default=0.35, help="smallest random-resized-crop area")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="the pack (.npz) or an ImageFolder root with train/ and val/")
    p.add_argument("--synthetic", type=int, default=0, help="train on N generated images (tests)")
    p.add_argument("--limit", type=int, help="at most this many images per class")
    p.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs (and after the last)")
    p.add_argument("--out", default="runs/attention56", help="output folder")
    p.add_argument("--name", help="checkpoint name (default: <model>_<attention>_<residual>)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--snapshot", metavar="DEST", help="with --resume: evaluate the run's last saved state and "
                   "save it as checkpoint DEST (card marked unfinished), without training")
    p.add_argument("--stop-after", type=int, help="stop (as on SIGTERM) after this many steps (tests)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: forward and loss under torch.autocast in bfloat16; weights, gradients, optimiser "
                        "state and BatchNorm statistics stay float32")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="also keep an exponential moving average of the weights (and BN statistics) with this "
                        "decay per step, e.g. 0.999; the averaged model is the one evaluated and saved")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ setup

def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv and linear weights; none on BN parameters and biases."""
    decay, no_decay = [], []
    for param in model.parameters():
        (decay if param.ndim > 1 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    def __init__(self, args: argparse.Namespace, rank: int, world: int, device: torch.device) -> None:
        self.args, self.rank, self.world, self.device = args, rank, world, device
        self.out = Path(args.out)
        torch.manual_seed(args.seed)  # same initial weights on every rank
        if args.synthetic:
            data = synthetic_set(args.synthetic, size=max(args.input_size, args.eval_size), seed=args.seed)
            self.train_set, self.val_set = data, synthetic_set(args.synthetic // 2, size=data.images.shape[1],
                                                               seed=args.seed + 1)
        else:
            self.train_set = load_split(args.data, "train", limit=args.limit)
            self.val_set = load_split(args.data, "val", limit=args.limit)
        self.classes = self.train_set.classes
        model = create_model(args.model, attention=args.attention, residual=args.residual,
                             width=args.width, num_classes=len(self.classes))
        self.model = model.to(device, memory_format=torch.channels_last)
        self.ddp = DistributedDataParallel(self.model) if world > 1 else self.model
        self.train_data = TensorImageDataset(self.train_set, train_transform(args.input_size, args.min_scale),
                                             seed=args.seed)
        self.sampler = DistributedSampler(self.train_data, num_replicas=world, rank=rank, shuffle=True,
                                          seed=args.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // args.batch_size
        if self.steps_per_epoch == 0:
            raise ResattnError("The batch size is larger than the training set per process; lower --batch-size.")
        self.optimizer = torch.optim.SGD(parameter_groups(self.model, args.weight_decay), lr=args.lr,
                                         momentum=args.momentum, nesterov=True)
        total_steps = max(args.epochs * self.steps_per_epoch, 4)
        # OneCycleLR divides by the length of each phase: keep both at least 2 steps long so
        # very short runs (a quick look, a test) work too.
        warmup = min(max(args.warmup, 2.0 / total_steps), 1.0 - 2.0 / total_steps)
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=args.lr, total_steps=total_steps,
            pct_start=warmup, div_factor=25.0, final_div_factor=1e3)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
        self.precision = resolve_precision(args.precision, device)
        # The average follows the weights and the BN running statistics (use_buffers), so the
        # averaged network can be evaluated as it is, without re-estimating BatchNorm.
        self.ema = (torch.optim.swa_utils.AveragedModel(
            self.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema), use_buffers=True)
            if args.ema else None)
        self.epoch, self.step, self.elapsed = 0, 0, 0.0
        self.stop_requested = False
        self.commit = project_commit()  # the code this process runs; HEAD may move while it trains

    # -- resumable state -------------------------------------------------------------
    def state(self) -> dict:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "schedule": self.schedule.state_dict(), "epoch": self.epoch, "step": self.step,
                 "elapsed": self.elapsed, "args": vars(self.args)}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def save_state(self) -> None:
        if self.rank == 0:
            atomic_write(self.out / STATE_FILE, lambda tmp: torch.save(self.state(), tmp))

    def load_state(self) -> None:
        path = self.out / STATE_FILE
        if not path.is_file():
            raise ResattnError(f"Nothing to resume: {path} does not exist. Start without --resume.")
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.step, self.elapsed = state["epoch"], state["step"], state["elapsed"]

    # -- loop ------------------------------------------------------------------------
    def batches(self) -> DataLoader:
        """This epoch's batches in the sampler's deterministic order, skipping those already
        done when resuming inside an epoch."""
        self.sampler.set_epoch(self.epoch)
        self.train_data.epoch = self.epoch  # augmentation is a function of (seed, epoch, image)
        indices = list(self.sampler)[self.step * self.args.batch_size:self.steps_per_epoch * self.args.batch_size]
        return DataLoader(self.train_data, batch_size=self.args.batch_size, sampler=indices,
                          num_workers=self.args.workers, persistent_workers=False)

    def train_epoch(self) -> dict | None:
        self.ddp.train()
        seen = correct = 0
        loss_sum = 0.0
        started = time.perf_counter()
        bar = tqdm(self.batches(), total=self.steps_per_epoch, initial=self.step, disable=self.rank != 0,
                   desc=f"epoch {self.epoch + 1}/{self.args.epochs}", dynamic_ncols=True)
        for images, labels in bar:
            images = images.to(self.device, memory_format=torch.channels_last, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                logits = self.ddp(images)
                loss = self.criterion(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            self.step += 1
            seen += len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            loss_sum += loss.item() * len(labels)
            rate = seen * self.world / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}", img_s=f"{rate:.0f}")
            if self.args.stop_after and self.epoch * self.steps_per_epoch + self.step >= self.args.stop_after:
                self.stop_requested = True
            if any_rank(self.stop_requested, self.world):
                self.elapsed += time.perf_counter() - started
                return None
        self.elapsed += time.perf_counter() - started
        return {"train_loss": round(loss_sum / max(seen, 1), 4), "train_top1": round(100 * correct / max(seen, 1), 2),
                "img_per_s": round(seen * self.world / (time.perf_counter() - started), 1)}

    @property
    def final_model(self) -> nn.Module:
        """The network that is evaluated and saved: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self, model: nn.Module | None = None) -> dict:
        loader = DataLoader(TensorImageDataset(self.val_set, eval_transform(self.args.eval_size)), batch_size=100)
        return evaluate_model(model or self.final_model, loader, len(self.classes), self.device)

    def run(self) -> Path | None:
        while self.epoch < self.args.epochs:
            row = self.train_epoch()
            if row is None:  # interrupted: keep the position inside the epoch
                self.save_state()
                if self.rank == 0:
                    print(f"stopped at epoch {self.epoch + 1} step {self.step}; state saved to "
                          f"{self.out / STATE_FILE}; continue with --resume", file=sys.stderr)
                return None
            self.epoch, self.step = self.epoch + 1, 0
            last = self.epoch == self.args.epochs
            if self.rank == 0:
                if last or self.epoch % self.args.eval_every == 0:
                    row |= {"val_top1": self.evaluate()["top1"]}
                    if self.ema is not None:  # the raw weights too, to see what the average adds
                        row |= {"val_top1_raw": self.evaluate(self.model)["top1"]}
                row = {"epoch": self.epoch, "lr": self.schedule.get_last_lr()[0], **row,
                       "elapsed_s": round(self.elapsed, 1)}
                with open(self.out / "log.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                tqdm.write(json.dumps(row))
            self.save_state()
        self.write_fingerprint()
        return self.finish() if self.rank == 0 else None

    def write_fingerprint(self) -> None:
        """Under DDP every rank writes a hash of its parameters, so anyone can check that the
        replicas ended identical (the 2-process test does). BN running statistics are left
        out: each rank updates them from its own last batch, and rank 0's are the ones saved."""
        if self.world > 1:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.model.named_parameters()):
                digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
            (self.out / f"weights_rank{self.rank}.sha256").write_text(digest.hexdigest() + "\n")

    def finish(self, dest: Path | None = None) -> Path:
        """Evaluate and save the model with its card; `dest` saves a snapshot of an unfinished
        run instead (its card says so)."""
        metrics = self.evaluate()
        a = self.args
        name = a.name or f"{a.model}_{a.attention}_{a.residual}"
        snapshot = dest is not None
        if snapshot:
            weights = (f"snapshot of an unfinished training run after epoch {self.epoch} of {a.epochs} "
                       f"(step {self.step} of the next); not the final model")
        else:
            weights = "trained with resattn.train (see recipe)"
        command = recipe_command(a)
        card = {
            "arch": a.model, "attention": a.attention, "residual": a.residual, "width": a.width,
            "classes": self.classes, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "input_size": a.eval_size, "train_size": a.input_size,
            "weights": weights,
            "metrics": {"val_top1": metrics["top1"], "val_per_class_top1": metrics["per_class_top1"],
                        "val_images": metrics["images"], "eval_size": a.eval_size},
            "recipe": {
                "command": command,
                "seed": a.seed, "epochs": a.epochs if not snapshot else self.epoch, "planned_epochs": a.epochs,
                "batch_size": a.batch_size * self.world,
                "optimizer": f"SGD nesterov momentum {a.momentum}, weight decay {a.weight_decay}",
                "schedule": f"one-cycle, peak lr {a.lr}, warm-up {a.warmup}",
                "augmentation": f"random-resized crop {a.input_size} px (scale {a.min_scale}-1), flip",
                "label_smoothing": a.label_smoothing,
                "precision": ("bf16 autocast, fp32 weights, optimiser state and BN statistics"
                              if self.precision == "bf16" else "fp32"),
                "weight_average": f"EMA, decay {a.ema} per step (saved weights)" if a.ema else "none",
                "data": "synthetic" if a.synthetic else "imagenette-128 train split",
                "wall_time_s": round(self.elapsed, 1), "hardware": hardware(self.device, self.world),
                "processes": self.world, "torch": torch.__version__, "commit": self.commit,
            },
        }
        path = save_checkpoint(dest if snapshot else self.out / name, self.final_model, card)
        print(f"saved {path} (val top-1 {metrics['top1']:.2f} %)")
        return path


def recipe_command(args: argparse.Namespace) -> str:
    """The command that trains this run from scratch, rebuilt from the run's settings rather
    than this process's argv (a run resumed over several sessions was started with
    --resume). Every training setting is spelled out, since defaults may change; operational
    flags (resume, device, workers, ...) are not."""
    return "python -m resattn.train " + " ".join(
        f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in vars(args).items()
        if k not in ("resume", "snapshot", "stop_after", "workers", "device")
        and v is not None and v is not False and not (k == "synthetic" and v == 0))


def check_writable(out: Path, need_bytes: int = 200 * 1024 * 1024) -> None:
    """Fail before training, not after the first epoch, when checkpoints cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ResattnError(f"Cannot write to the output folder {out} ({exc.strerror or exc}); "
                           "choose another --out or fix its permissions.") from None
    free = shutil.disk_usage(out).free
    if free < need_bytes:
        raise ResattnError(f"Only {free // 2**20} MiB free under {out}; checkpoints need about "
                           f"{need_bytes // 2**20} MiB: free some space or choose another --out.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank, world = 0, 1
    try:
        rank, world, device = setup_distributed(args.device)
        out = Path(args.out)
        if args.resume and (out / STATE_FILE).is_file():
            saved = torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)["args"]
            # The run's own settings win, so a resumed run is the same run.
            keep = {"resume", "device", "workers", "stop_after", "data", "out", "snapshot"}
            # Options added after the run started take their defaults.
            args = argparse.Namespace(**{**vars(parse_args([])), **saved, **{k: getattr(args, k) for k in keep}})
        elif not args.resume and (out / STATE_FILE).is_file():
            raise ResattnError(f"{out} already holds a run; add --resume to continue it or choose another --out.")
        check_writable(out)
        if rank == 0:  # a crash while writing a checkpoint leaves its temporary file; never read, drop it
            for stale in out.glob(f".{STATE_FILE}.*.tmp"):
                stale.unlink(missing_ok=True)
        trainer = Trainer(args, rank, world, device)
        if args.resume:
            trainer.load_state()
        if args.snapshot:
            if not args.resume:
                raise ResattnError("--snapshot needs --resume: it saves the run's last saved state.")
            trainer.finish(Path(args.snapshot))
            return 0

        def request_stop(signum, frame):
            trainer.stop_requested = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            trainer.run()
        except OSError as exc:  # e.g. the disk filled up while a checkpoint was written
            last = out / STATE_FILE
            kept = f"the last complete state is {last}" if last.is_file() else "no state was saved yet"
            print(f"error: Could not write to {out} ({exc.strerror or exc}); {kept}. Free some space or fix the "
                  "folder, then continue with --resume.", file=sys.stderr)
            return 1
        return 0
    except ResattnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
