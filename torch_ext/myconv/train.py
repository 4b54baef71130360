"""Training a CNN through ``torch.ops.myconv.conv2d``: the script to start from.

Data: scikit-learn's handwritten digits (1,797 8x8 images, shipped inside the
package, no download), split into train / test by the seed; or ``--data DIR``, a
folder of class folders of images (torchvision's ImageFolder layout). Model: a
small CNN (convolutions, a strided one, batch norm, a residual block) written
with ``nn.Conv2d`` and turned into myconv with ``myconv.convert``; ``--conv
torch`` keeps ``nn.Conv2d``, so the two runs are one flag apart.

    python -m myconv.train                              # defaults: digits, CPU, 15 epochs
    python -m myconv.train --conv torch                 # the same with nn.Conv2d
    python -m myconv.train --epochs 20 --resume         # continue a run in --out
    python -m myconv.train --device cuda --amp --compile
    torchrun --nproc_per_node=2 -m myconv.train --ddp   # DistributedDataParallel (gloo / NCCL)

Writes to ``--out`` (default ``runs/train``), per ``--conv``: ``checkpoint-<conv>.pt``
(model, optimizer, scheduler, epoch, RNG states; the model's state_dict loads
into the plain ``nn.Conv2d`` model too), ``metrics-<conv>.csv`` and ``.json``
(per epoch, plus every step's loss), and ``training.png`` (train loss and test
accuracy per epoch of every run in the folder, overlaid).
"""
import argparse
import csv
import json
import math
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .modules import convert


# ---- data -------------------------------------------------------------------------

def split(x: torch.Tensor, y: torch.Tensor, seed: int, test_fraction: float = 0.2):
    """A seeded train / test split."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(y) * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def load_digits(seed: int):
    """scikit-learn's 8x8 digits as (N, 1, 8, 8) images in [0, 1], labels 0-9."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SystemExit("myconv.train needs scikit-learn for its default data: "
                         "pip install scikit-learn (or myconv[train])") from e
    digits = sk_load_digits()
    x = torch.tensor(digits.images, dtype=torch.float64).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    return split(x, y, seed) + (10,)


def load_image_folder(root: str, seed: int, size: int):
    """root/<class>/<image>: grayscale (or RGB if any image is in colour),
    resized to size x size, values in [0, 1]."""
    from PIL import Image

    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise SystemExit(f"--data {root}: expected one folder per class")
    files = [(os.path.join(root, c, f), i) for i, c in enumerate(classes)
             for f in sorted(os.listdir(os.path.join(root, c)))
             if f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"))]
    if not files:
        raise SystemExit(f"--data {root}: no images found")
    images = [Image.open(path) for path, _ in files]
    mode = "RGB" if any(im.mode not in ("L", "1", "I", "I;16", "F") for im in images) else "L"
    arrays = []
    for im in images:
        im = im.convert(mode).resize((size, size))
        t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).to(torch.float64) / 255.0
        arrays.append(t.view(size, size, -1).permute(2, 0, 1))
    x = torch.stack(arrays)
    y = torch.tensor([label for _, label in files], dtype=torch.int64)
    return split(x, y, seed) + (len(classes),)


# ---- model --------------------------------------------------------------------------

class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(out)))


def small_cnn(in_channels: int = 1, classes: int = 10, width: int = 32) -> nn.Module:
    """Written with plain nn.Conv2d; myconv.convert turns it into myconv."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        ResidualBlock(2 * width),
        nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, classes),
    )


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with its gradient (the gradient is summed over ranks too)."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        g = grad.clone()
        dist.all_reduce(g)
        return g


class CrossRankBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics cover the batches of every rank
    (nn.SyncBatchNorm for the CPU, where PyTorch's needs a GPU): per-channel
    sums and sums of squares go through a differentiable all_reduce."""

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        for m in module.modules():
            if type(m) is nn.BatchNorm2d:
                m.__class__ = cls
        return module

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        local = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)),
                           x.new_full((1,), x.numel() / x.size(1))])
        total = _SumOverRanks.apply(local)
        c = x.size(1)
        count = total[-1]
        mean = total[:c] / count
        var = total[c:2 * c] / count - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * count / (count - 1), alpha=m)
        shape = (1, c, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


# ---- training ------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conv", choices=["myconv", "torch"], default="myconv",
                   help="myconv: nn.Conv2d converted with myconv.convert; torch: plain nn.Conv2d")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64, help="per process with --ddp")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train", help="folder for checkpoint, metrics and plot")
    p.add_argument("--data", help="an image folder (class folders of images) instead of the digits")
    p.add_argument("--image-size", type=int, default=32, help="side of --data images after resizing")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--amp", action="store_true", help="autocast (bfloat16 on CPU, float16 on CUDA)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--ddp", action="store_true", help="DistributedDataParallel; launch with torchrun")
    p.add_argument("--steps", type=int, help="stop after this many optimizer steps (short runs, tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-plot", action="store_true", help="skip training.png")
    return p.parse_args(argv)


class Distributed:
    """Rank, world size and the process group of a --ddp run (one process otherwise)."""

    def __init__(self, enabled: bool, device: str):
        self.enabled = enabled
        self.rank, self.world, self.local_rank = 0, 1, 0
        if enabled:
            if "RANK" not in os.environ:
                raise SystemExit("--ddp: launch with torchrun, e.g. torchrun --nproc_per_node=2 -m myconv.train --ddp")
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend)
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            self.local_rank = int(os.environ.get("LOCAL_RANK", 0))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def close(self):
        if self.enabled:
            dist.destroy_process_group()


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device):
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, autocast) -> Tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad(), autocast():
        for i in range(0, len(y), batch):
            logits = model(x[i:i + batch])
            logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
            loss += F.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
            correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return loss / len(y), correct / len(y)


def train(args: argparse.Namespace, print_fn: Callable[[str], None] = print) -> Dict:
    """Runs the training the arguments describe; returns the metrics (also
    written to --out on rank 0)."""
    ddp = Distributed(args.ddp, args.device)
    device = torch.device(args.device)
    if device.type == "cuda" and args.ddp:
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    dtype = getattr(torch, args.dtype)
    log = print_fn if ddp.main else (lambda *a, **k: None)

    # data and model (the same initial weights for --conv myconv and torch)
    if args.data:
        x_train, y_train, x_test, y_test, classes = load_image_folder(args.data, args.seed, args.image_size)
    else:
        x_train, y_train, x_test, y_test, classes = load_digits(args.seed)
    x_train, x_test = x_train.to(device, dtype), x_test.to(device, dtype)
    y_train, y_test = y_train.to(device), y_test.to(device)
    torch.manual_seed(args.seed)
    model = small_cnn(x_train.size(1), classes).to(device, dtype)
    if args.conv == "myconv":
        convert(model)
    if args.ddp:
        model = (nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda"
                 else CrossRankBatchNorm2d.convert(model))
    raw_model = model  # what the checkpoint holds: plain module names, loads into nn.Conv2d models

    sampler = torch.utils.data.DistributedSampler(range(len(y_train)), num_replicas=ddp.world, rank=ddp.rank,
                                                  shuffle=True, seed=args.seed, drop_last=True)
    steps_per_epoch = math.ceil(len(sampler) / args.batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                                    steps_per_epoch=steps_per_epoch, pct_start=0.2)

    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, f"checkpoint-{args.conv}.pt")
    history: List[dict] = []
    step_losses: List[float] = []
    start_epoch, step = 0, 0
    # Where a run stopped by --steps left its epoch: batches done, their loss sum and images.
    partial = {"batches": 0, "loss_sum": 0.0, "seen": 0, "seconds": 0.0}
    if args.resume:
        if not os.path.exists(ckpt_path):
            raise SystemExit(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"], device)
        start_epoch, step = ckpt["epoch"], ckpt["step"]
        history, step_losses = ckpt["history"], ckpt["step_losses"]
        partial = ckpt["partial"]
        log(f"resuming {ckpt_path} at epoch {start_epoch + 1}, step {step}"
            + (f" ({partial['batches']} of its batches done)" if partial["batches"] else ""))

    if args.ddp:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        model = torch.compile(model)
    amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if args.amp else (
        lambda: torch.autocast(device.type, enabled=False))
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and amp_dtype == torch.float16)

    def save(epoch: int):
        """epoch: epochs completed; `partial` tells how far the next one got."""
        if not ddp.main:
            return
        torch.save({"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch, "step": step, "partial": partial,
                    "rng": rng_state(device), "args": vars(args), "history": history,
                    "step_losses": step_losses}, ckpt_path)

    log(f"training {args.conv} on {len(y_train)} images ({classes} classes, {tuple(x_train.shape[1:])}), "
        f"testing on {len(y_test)}; device {device}, {args.dtype}"
        + (f", {ddp.world} processes" if args.ddp else "") + (", amp" if args.amp else "")
        + (", compiled" if args.compile else ""))
    run_start = time.perf_counter()
    train_seconds = 0.0
    images_trained = 0  # by all ranks, in this run (not before a resume)
    stop = False
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), device=device)
        bar = None
        if ddp.main and not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{args.epochs}", unit="step",
                       file=sys.stderr, leave=False)
        skip = partial["batches"]  # batches this epoch already did before a resume
        epoch_loss, seen, earlier_seconds = partial["loss_sum"], partial["seen"], partial["seconds"]
        epoch_start = time.perf_counter()
        if bar is not None and skip:
            bar.update(skip)
        for i in range(skip * args.batch_size, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            with autocast():
                logits = model(xb)
            # under autocast the logits are reduced precision: the loss in float32
            loss = F.cross_entropy(logits.float() if args.amp else logits, yb)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            if args.ddp:  # the loss of the whole (all ranks') batch
                total = loss.detach().to(torch.float64).clone()
                dist.all_reduce(total)
                value = total.item() / ddp.world
            else:
                value = loss.item()
            step_losses.append(value)
            epoch_loss += value * len(yb)
            seen += len(yb)
            images_trained += len(yb) * ddp.world
            if bar is not None:
                rate = seen * ddp.world / max(time.perf_counter() - epoch_start, 1e-9)
                bar.set_postfix(loss=f"{value:.4f}", img_s=f"{rate:.0f}")
                bar.update(1)
            if args.steps is not None and step >= args.steps and i + args.batch_size < len(order):
                stop = True  # in the middle of the epoch
                break
        if bar is not None:
            bar.close()
        epoch_seconds = time.perf_counter() - epoch_start + earlier_seconds
        train_seconds += time.perf_counter() - epoch_start
        if stop:
            partial = {"batches": i // args.batch_size + 1, "loss_sum": epoch_loss, "seen": seen,
                       "seconds": epoch_seconds}
            save(epoch)
            break
        partial = {"batches": 0, "loss_sum": 0.0, "seen": 0, "seconds": 0.0}
        # every rank's mean loss, averaged
        totals = torch.tensor([epoch_loss, float(seen)], dtype=torch.float64, device=device)
        if args.ddp:
            dist.all_reduce(totals)
        train_loss = (totals[0] / totals[1]).item()
        test_loss, test_acc = evaluate(raw_model, x_test, y_test, 256, autocast)
        images_per_s = totals[1].item() / epoch_seconds
        history.append({"epoch": epoch + 1, "step": step, "train_loss": train_loss, "test_loss": test_loss,
                        "test_accuracy": test_acc, "images_per_s": images_per_s,
                        "lr": scheduler.get_last_lr()[0], "wall_s": time.perf_counter() - run_start})
        log(f"epoch {epoch + 1:3d}/{args.epochs}  train loss {train_loss:.4f}  test loss {test_loss:.4f}  "
            f"test accuracy {test_acc:.2%}  {images_per_s:.0f} images/s")
        save(epoch + 1)
        if args.steps is not None and step >= args.steps:
            break

    # every rank must hold the same parameters
    identical = True
    if args.ddp:
        flat = torch.cat([p.detach().reshape(-1) for p in raw_model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(ddp.world)]
        dist.all_gather(gathered, flat)
        identical = all(torch.equal(g, gathered[0]) for g in gathered)

    wall = time.perf_counter() - run_start
    final = dict(history[-1]) if history else {}
    if stop:  # stopped inside an epoch: the model as it is now
        final["test_loss"], final["test_accuracy"] = evaluate(raw_model, x_test, y_test, 256, autocast)
    result = {"conv": args.conv, "args": vars(args), "world_size": ddp.world, "ranks_identical": identical,
              "history": history, "step_losses": step_losses, "steps": step,
              "test_accuracy": final.get("test_accuracy"),
              "images_per_s": images_trained / max(train_seconds, 1e-9),
              "wall_s": wall, "train_s": train_seconds}
    if ddp.main:
        write_metrics(args.out, args.conv, result)
        if not args.no_plot:
            plot(args.out)
        log(f"[{args.conv}] test accuracy {final.get('test_accuracy', float('nan')):.2%}, "
            f"{result['images_per_s']:.0f} images/s, wall time {wall:.1f} s"
            + ("" if identical else "  (WARNING: parameters differ across ranks)"))
    ddp.barrier()
    ddp.close()
    return result


def write_metrics(out: str, conv: str, result: Dict):
    with open(os.path.join(out, f"metrics-{conv}.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out, f"metrics-{conv}.csv"), "w", newline="") as f:
        fields = ["epoch", "step", "train_loss", "test_loss", "test_accuracy", "images_per_s", "lr", "wall_s"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in result["history"]:
            writer.writerow(row)


def plot(out: str) -> Optional[str]:
    """training.png: train loss and test accuracy per epoch of every run
    (metrics-*.json) in the folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for name in sorted(os.listdir(out)):
        if name.startswith("metrics-") and name.endswith(".json"):
            with open(os.path.join(out, name)) as f:
                runs.append(json.load(f))
    if not runs:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for run, style in zip(runs, ["-o", "--s", ":^", "-.v"]):
        epochs = [h["epoch"] for h in run["history"]]
        label = f"--conv {run['conv']}"
        ax_loss.plot(epochs, [h["train_loss"] for h in run["history"]], style, label=label, markersize=4)
        ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in run["history"]], style, label=label, markersize=4)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("train loss")
    ax_loss.set_yscale("log")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("test accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("myconv.train: " + ", ".join(f"{r['conv']} {r['test_accuracy']:.2%}" for r in runs))
    fig.tight_layout()
    path = os.path.join(out, "training.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> Dict:
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
