"""The MDM-Prime 2-D toy (the paper's Fig. 4): a grey image used as a density over pixel
coordinates (x, y) ∈ [0, C)², so a sample is L = 2 tokens of C = 512 classes; ℓ = 1 (MDM) or
ℓ = 2 (base 23) digits per coordinate; an MLP denoiser; samples plotted as a 2-D histogram.

    python -m mdfast.experiments.prime.toy [--image PATH] [--steps 3000] [--out runs/prime-toy]

The density: the image's grey levels (``--image``; the seed used a cat photo of its own),
resized to C × C, normalised; by default the word "MDM" drawn white on black with Pillow's
bundled font (sharp edges, so a sampler that misses the density shows it). The data set is
``--n`` coordinate pairs drawn from it once (seeded). The denoiser (the seed's ``MLPModel``
without its time input: the number of masked digits already tells the time): one embedding of
``hidden`` per digit, the 2ℓ embeddings concatenated, learnable-Swish MLP with LayerNorm and
dropout, C logits per coordinate. Training and sampling are the generic ones
(:class:`~mdfast.diffusion.prime_objective.PrimeObjective` in the MDLM time convention with the
ELBO weight, :func:`mdfast.sampling.prime.prime_sample`); the ELBO uses 128 times per sample as
the seed's ``eval_elbo``. Writes ``samples.png`` (density, then one histogram per ℓ) and
``results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mdfast.digits import prime_base

__all__ = ["ToyMLP", "density_from_image", "draw_points", "main", "plot"]

C = 512


def density_from_image(path: str | None = None, size: int = C) -> np.ndarray:
    """float64 [size, size] summing to 1: the image's grey levels (``path``, or "MDM" drawn in
    white on black) resized to size × size."""
    from PIL import Image, ImageDraw, ImageFont

    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"mdfast: toy image '{path}' not found (--image)")
        img = Image.open(path).convert("L")
    else:
        img = Image.new("L", (512, 512), 0)
        font = ImageFont.load_default(size=200)
        ImageDraw.Draw(img).text((256, 256), "MDM", fill=255, font=font, anchor="mm")
    p = np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.float64)
    if p.sum() <= 0:
        raise ValueError("mdfast: the toy image is black everywhere (no density)")
    return p / p.sum()


def draw_points(density: np.ndarray, n: int, seed: int = 0) -> torch.Tensor:
    """int64 [n, 2]: (row, column) pairs drawn from ``density``."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.from_numpy(density.reshape(-1))
    idx = torch.multinomial(flat, n, replacement=True, generator=g)
    size = density.shape[1]
    return torch.stack([idx // size, idx % size], dim=1)


class _Swish(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.beta = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)


class ToyMLP(nn.Module):
    """digits [B, L, ℓ] -> logits [B, L, C] (L = 2 coordinates)."""

    def __init__(
        self,
        num_classes: int = C,
        num_digits: int = 1,
        length: int = 2,
        hidden: int = 512,
        layers: int = 2,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.num_digits = num_digits
        self.base = prime_base(num_classes, num_digits)
        self.num_classes, self.length = num_classes, length
        self.embedding = nn.Embedding(self.base + 1, hidden)
        width = hidden * length * num_digits
        body: list[nn.Module] = [_Swish(width), nn.Linear(width, hidden), _Swish(hidden)]
        for _ in range(layers):
            body += [
                nn.Linear(hidden, hidden),
                nn.LayerNorm(hidden),
                _Swish(hidden),
                nn.Dropout(dropout),
            ]
        body.append(nn.Linear(hidden, num_classes * length))
        self.main = nn.Sequential(*body)

    def forward(self, digits: torch.Tensor) -> torch.Tensor:
        b = digits.shape[0]
        h = self.embedding(digits).reshape(b, -1)
        return self.main(h).view(b, self.length, self.num_classes)


def plot(
    density: np.ndarray, samples: dict[int, torch.Tensor], path: Path, bins: int = 128
) -> Path:
    """PNG: the density, then a 2-D histogram (``bins`` × ``bins``) of the samples of each ℓ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(samples), figsize=(4 * (1 + len(samples)), 4))
    axes[0].imshow(density, cmap="magma")
    axes[0].set_title("density")
    size = density.shape[0]
    bins = min(bins, size)
    for ax, (ell, pts) in zip(axes[1:], samples.items(), strict=True):
        cell = (pts * bins // size).long()
        hist = torch.zeros(bins * bins)
        hist.index_add_(0, cell[:, 0] * bins + cell[:, 1], torch.ones(pts.shape[0]))
        ax.imshow(hist.view(bins, bins).numpy(), cmap="magma")
        ax.set_title(f"ℓ = {ell} ({'MDM' if ell == 1 else 'Prime'}), {pts.shape[0]:,} samples")
    for ax in axes:
        ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def run(args) -> dict:
    from mdfast.diffusion.prime_objective import PrimeObjective
    from mdfast.experiments.prime.evaluation import draw_samples
    from mdfast.sampling.prime import PrimeSamplerSettings
    from mdfast.train import TrainConfig, train

    out = Path(args.out)
    density = density_from_image(args.image, args.size)
    data = draw_points(density, args.n, args.seed)
    held_out = draw_points(density, 2000, args.seed + 1)
    samples, rows = {}, []
    for ell in args.digits:
        torch.manual_seed(args.seed)
        model = ToyMLP(args.size, ell, hidden=args.hidden)
        objective = PrimeObjective(
            model,
            num_classes=args.size,
            num_digits=ell,
            layout="sequence",
            convention="mdlm",
            loss="joint",
            weighting="elbo",
            eps=5e-3,
        )
        cfg = TrainConfig(
            out_dir=str(out / f"l{ell}"),
            steps=args.steps,
            batch_size=args.batch,
            lr=1e-3,
            clip=0.0,
            ckpt_every=args.steps,
            log_every=max(1, args.steps // 10),
            tensorboard=False,
            progress=False,
            seed=args.seed,
        )
        t0 = time.perf_counter()
        train(objective, data, cfg)
        train_s = time.perf_counter() - t0
        objective.eval()
        elbo = objective.nll(held_out, num_times=128, seed=args.seed)["nll_per_token"]
        elbo = elbo.mean().item()
        t0 = time.perf_counter()
        settings = PrimeSamplerSettings(nfe=args.nfe, seed=args.seed)
        pts = draw_samples(objective, settings, args.samples, 10_000, length=2)
        samples[ell] = pts
        rows.append(
            {
                "digits": ell,
                "base": objective.process.base,
                "train_s": train_s,
                "sample_s": time.perf_counter() - t0,
                "elbo_nats_per_coordinate": elbo,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    png = plot(density, samples, out / "samples.png")
    result = {"rows": rows, "plot": str(png), "settings": vars(args)}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mdfast.experiments.prime.toy", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--image", default=None, help="image file used as the density")
    p.add_argument("--size", type=int, default=C, help="C: classes per coordinate")
    p.add_argument("--digits", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--n", type=int, default=200_000, help="training points drawn once")
    p.add_argument("--nfe", type=int, default=128)
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/prime-toy")
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
