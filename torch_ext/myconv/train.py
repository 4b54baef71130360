"""A short training run through myconv: a small CNN learns to tell four kinds of
synthetic 16x16 images apart (horizontal bars, vertical bars, diagonals,
blobs), every convolution running through ``torch.ops.myconv.conv2d``.

    python -m myconv.train [--steps 60] [--device cpu|cuda]
"""
import argparse
from typing import List

import torch
from torch import nn

from .modules import Conv2d

CLASSES = ("horizontal", "vertical", "diagonal", "blob")


def make_batch(n: int, generator: torch.Generator, size: int = 16):
    """n noisy images (n, 1, size, size) and their labels."""
    labels = torch.randint(0, len(CLASSES), (n,), generator=generator)
    r = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    phase = torch.randint(0, 4, (n, 1, 1), generator=generator).float()
    patterns = torch.stack([
        ((yy + phase) % 4 < 2).float(),            # horizontal bars
        ((xx + phase) % 4 < 2).float(),            # vertical bars
        ((xx + yy + phase) % 4 < 2).float(),       # diagonals
        (((yy - 8) ** 2 + (xx - 8) ** 2) < 20 + 4 * phase).float(),  # blob
    ], dim=1)  # (n, 4, size, size)
    images = patterns[torch.arange(n), labels].unsqueeze(1)
    images = images + 0.3 * torch.randn(images.shape, generator=generator)
    return images, labels


def small_cnn() -> nn.Module:
    return nn.Sequential(
        Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        Conv2d(16, 16, 3, padding=1, groups=4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, len(CLASSES)),
    )


def run(steps: int = 60, batch: int = 32, device: str = "cpu", seed: int = 0,
        log_every: int = 10, print_fn=print) -> List[float]:
    """Trains for `steps` Adam steps; returns the loss of every step."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = small_cnn().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(1, steps + 1):
        x, y = make_batch(batch, gen)
        x, y = x.to(device), y.to(device)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == 1):
            print_fn(f"  step {step:3d}  loss {loss.item():.4f}")
    x, y = make_batch(256, gen)
    with torch.no_grad():
        accuracy = (model(x.to(device)).argmax(1).cpu() == y).float().mean().item()
    print_fn(f"  held-out accuracy after {steps} steps: {accuracy:.1%} (chance: {1 / len(CLASSES):.0%})")
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    run(args.steps, device=args.device)


if __name__ == "__main__":
    main()
