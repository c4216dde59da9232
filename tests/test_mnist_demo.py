"""The binarized-MNIST sampler's stay-masked probability, and `make demo` end to end at tiny
settings (trainer, sampler, metrics, PNG)."""

from __future__ import annotations

import math

import pytest
import torch

from mdfast.experiments import mnist as exp
from mdfast.experiments.mnist.data import MASK


class _Recorder(torch.nn.Module):
    """A denoiser that records the masked fraction of every input and predicts 'on' w.p. 0.3."""

    def __init__(self):
        super().__init__()
        self.fractions = []

    def forward(self, x):
        self.fractions.append((x == MASK).double().mean().item())
        logits = torch.zeros(*x.shape, 3)
        logits[..., 1] = math.log(0.3 / 0.7)
        return logits


@pytest.mark.parametrize("sampler", ["mdfast", "reference"])
def test_stay_masked_probability(sampler):
    """Each step t -> s keeps a masked pixel masked with probability s/t, so the masked fraction
    seen at step k is t_k (the seed kept it with probability s: after 20 of 40 steps its chain has
    ∏(1 − j/40) ≈ 0.2% masked, here 50%)."""
    steps, n = 40, 64
    model = _Recorder()
    x = exp.sample(model, n, steps=steps, seed=7, sampler=sampler)
    grid = torch.linspace(1, 1e-5, steps + 1, dtype=torch.float64)
    pixels = n * 784
    assert len(model.fractions) >= steps - 2  # a step where no pixel changes reuses the output
    assert model.fractions[0] == 1.0
    for k in (5, 10, 20, 30):
        # The k-th call sees the state after k steps (every step changes something here).
        t = grid[k].item()
        sd = math.sqrt(t * (1 - t) / pixels)
        assert abs(model.fractions[k] - t) < 6 * sd + 1e-9, (k, model.fractions[k], t)
    # Pixels drawn from p(on) = 0.3 (noise removal takes the argmax for the few left masked).
    on = (x == 1).double().mean().item()
    assert abs(on - 0.3) < 6 * math.sqrt(0.21 / pixels) + 1e-3
    assert set(x.unique().tolist()) <= {0, 1}


def test_demo_tiny(tmp_path, capsys, monkeypatch):
    """The demo at tiny settings: trains, samples with mdfast and the reference, evaluates, writes
    samples.png and prints the summary lines."""
    from mdfast.experiments import mnist_demo

    monkeypatch.setenv("MDFAST_CACHE_DIR", str(tmp_path / "cache"))
    summary = mnist_demo.run(
        steps=6,
        output_folder=str(tmp_path / "demo"),
        device="cpu",
        num_samples=16,
        grid_samples=16,
        timing_samples=8,
        sampling_steps=5,
        batch_size=16,
        progress=False,
    )
    out = capsys.readouterr().out
    for key in ("training", "ELBO", "Fréchet", "sampling", "samples"):
        assert key in out
    assert (tmp_path / "demo" / "samples.png").is_file()
    assert (tmp_path / "demo" / "baseline_mnist_final.pth").is_file()
    assert 0 < summary["bits_per_pixel"] < 2
    assert summary["frechet"] >= 0 and 0 < summary["confidence"] <= 1
    assert summary["train_images_per_s"] > 0
    _, meta = exp.load_checkpoint(tmp_path / "demo" / "baseline_mnist_final.pth")
    assert meta["experiment"] == "baseline" and meta["step"] == 6


def test_seed_scripts_checkpoints_and_sample(tmp_path, monkeypatch):
    """train_ambient.py's flags on a tiny MNIST root in torchvision's layout: checkpoints every 5
    epochs and final, named as the seed README; sample.py --checkpoint writes the grid; loading
    the checkpoint as another experiment fails naming the mismatch."""
    from test_mnist_data import _fake_mnist

    monkeypatch.setenv("MDFAST_CACHE_DIR", str(tmp_path / "cache"))
    _fake_mnist(tmp_path / "data", n_train=32, n_test=8)
    out = tmp_path / "outputs"
    result = exp.train_main(
        "ambient",
        [
            "--n_epochs", "6", "--device", "cpu", "--output_folder", str(out),
            "--consistency_weight", "0.5", "--masked_fraction", "0.5",
            "--data", str(tmp_path / "data"), "--model", "demo", "--batch_size", "16",
        ],
    )  # fmt: skip
    assert (out / "ambient_mnist_epoch5.pth").is_file()
    assert (out / "ambient_mnist_final.pth").is_file()
    assert result["steps"] == 12
    _, meta = exp.load_checkpoint(out / "ambient_mnist_epoch5.pth", experiment="ambient")
    assert meta["epoch"] == 5 and meta["masked_fraction"] == 0.5
    assert meta["consistency_weight"] == 0.5
    png = exp.sample_main(
        ["--checkpoint", str(out / "ambient_mnist_final.pth"), "--steps", "4", "-b", "4"]
    )
    assert png == out / "ambient_generated.png" and png.is_file()
    with pytest.raises(exp.CheckpointMismatchError, match="'ambient', expected 'baseline'"):
        exp.sample_main(
            ["--checkpoint", str(out / "ambient_mnist_final.pth"), "--experiment", "baseline"]
        )
