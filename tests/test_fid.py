"""FID and the Fréchet math: hand computations, a tiny feature network the test writes, the real
Inception loader on a weights file in torch-fidelity's layout, caching, ranks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from mdfast.metrics.fid import FID, INCEPTION_WEIGHTS_FILE, find_inception_weights, inception_v3
from mdfast.metrics.frechet import GaussianStats, frechet_distance, frechet_distance_features


def _scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = scipy.linalg.sqrtm(ca @ cb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(cross))


def test_frechet_matches_scipy_sqrtm():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=g, dtype=torch.float64)
    a = a @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    b = torch.randn(300, 6, generator=g, dtype=torch.float64) * 2 + 0.5
    want = _scipy_frechet(a.numpy(), b.numpy())
    assert frechet_distance_features(a, b) == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_frechet_of_known_gaussians_closed_form():
    # commuting covariances: tr((Σa Σb)^½) = Σ sqrt(λa λb)
    f64 = torch.float64
    mu_a, mu_b = torch.tensor([0.0, 1.0, 2.0], dtype=f64), torch.tensor([1.0, 1.0, 0.0], dtype=f64)
    la, lb = torch.tensor([1.0, 4.0, 9.0], dtype=f64), torch.tensor([4.0, 1.0, 16.0], dtype=f64)
    g = torch.Generator().manual_seed(1)
    q = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0]
    ca, cb = q @ torch.diag(la) @ q.T, q @ torch.diag(lb) @ q.T
    want = 5.0 + float(la.sum() + lb.sum() - 2 * (la * lb).sqrt().sum())
    assert frechet_distance(mu_a, ca, mu_b, cb) == pytest.approx(want, rel=1e-12)


def test_streaming_stats_equal_batch_and_roundtrip(tmp_path):
    g = torch.Generator().manual_seed(2)
    f = torch.randn(257, 5, generator=g, dtype=torch.float64) * 3 + 1
    s = GaussianStats(5, {"what": "x"})
    for chunk in f.split(40):
        s.update(chunk)
    assert s.n == 257
    torch.testing.assert_close(s.mean, f.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s.cov, torch.cov(f.T), rtol=1e-10, atol=1e-10)
    path = s.save(tmp_path / "ref.npz")
    back = GaussianStats.load(path)
    assert back.n == 257 and back.meta == {"what": "x"}
    torch.testing.assert_close(back.mean, s.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(back.cov, s.cov, rtol=1e-10, atol=1e-10)


class TinyFeatures(nn.Module):
    """A feature network small enough to reason about: a fixed linear map of the pixels."""

    def __init__(self, pixels: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(pixels, dim, bias=False)

    def forward(self, images):
        return self.proj(images.flatten(1).float())


def _tiny_from_file(tmp_path) -> TinyFeatures:
    """The test writes the network's weights to disk and loads them, as a user would."""
    torch.manual_seed(3)
    net = TinyFeatures(3 * 4 * 4, 8)
    path = tmp_path / "tiny.pt"
    torch.save(net.state_dict(), path)
    loaded = TinyFeatures(3 * 4 * 4, 8)
    loaded.load_state_dict(torch.load(path, weights_only=True))
    return loaded


def test_fid_with_tiny_network_same_data_zero_and_shift_closed_form(tmp_path):
    net = _tiny_from_file(tmp_path)
    fid = FID(net, device="cpu", batch_size=7)
    g = torch.Generator().manual_seed(4)
    real = torch.rand(64, 3, 4, 4, generator=g)
    ref = fid.stats(real)
    assert fid.score(real, ref) == pytest.approx(0.0, abs=1e-8)
    # a constant image shift moves every feature by W·δ and leaves the covariance alone
    delta = torch.full((3, 4, 4), 0.25)
    shifted = real + delta
    w = net.proj.weight.detach().double()
    want = float((w @ delta.flatten().double()).square().sum())
    assert fid.score(shifted, ref) == pytest.approx(want, rel=1e-8)


def test_reference_stats_cache_is_reused_and_keyed(tmp_path):
    fid = FID(_tiny_from_file(tmp_path), device="cpu")
    real = torch.rand(20, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    calls = []

    def load():
        calls.append(1)
        return real

    cache = tmp_path / "ref.npz"
    a = fid.reference_stats(load, cache=cache, meta={"dataset": "toy", "n": 20})
    b = fid.reference_stats(load, cache=cache, meta={"dataset": "toy", "n": 20})
    assert len(calls) == 1 and cache.is_file()
    torch.testing.assert_close(a.mean, b.mean)
    fid.reference_stats(load, cache=cache, meta={"dataset": "other", "n": 20})
    assert len(calls) == 2


def test_missing_inception_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MDFAST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MDFAST_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=re.escape(INCEPTION_WEIGHTS_FILE)):
        find_inception_weights()
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        FID(weights=tmp_path / "nowhere.pth", device="cpu")


def test_inception_loads_local_weights_file(tmp_path, monkeypatch):
    pytest.importorskip("torch_fidelity")
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    # a randomly initialised state dict in torch-fidelity's own layout, written by the test
    monkeypatch.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
    monkeypatch.setattr(torch, "load", lambda *a, **k: {})
    torch.manual_seed(6)
    net = fe.FeatureExtractorInceptionV3("x", ["2048"], feature_extractor_weights_path="unused")
    state = {k: v.clone() for k, v in net.state_dict().items()}
    monkeypatch.undo()
    path = tmp_path / INCEPTION_WEIGHTS_FILE
    torch.save(state, path)
    monkeypatch.setenv("MDFAST_INCEPTION_WEIGHTS", str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = inception_v3(device="cpu")
    assert any("not the published" in str(w.message) for w in caught)
    loaded = model.net.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    fid = FID(model, device="cpu")
    fid.default_network = True  # the Inception path: uint8 conversion of float / grey images
    images = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    feats = fid.features(images)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()


def test_bad_images_are_named():
    fid = FID(TinyFeatures(48, 4), device="cpu")
    fid.default_network = True
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        fid.features(torch.rand(2, 4, 4))
    with pytest.raises(ValueError, match="uint8"):
        fid.features(torch.ones(2, 3, 4, 4, dtype=torch.int32))


def test_stats_sum_over_ranks(tmp_path):
    """Two gloo ranks, each with half the features, give the one-process statistics."""
    script = textwrap.dedent(
        f"""
        import os, sys, torch, torch.distributed as dist
        sys.path.insert(0, {os.getcwd()!r})
        from mdfast.metrics.frechet import GaussianStats
        rank = int(sys.argv[1])
        dist.init_process_group("gloo", init_method="file://{tmp_path}/rdv", rank=rank,
                                world_size=2)
        f = torch.randn(100, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
        s = GaussianStats(3)
        s.update(f[rank * 50:(rank + 1) * 50])
        s.all_reduce()
        full = GaussianStats.of(f)
        assert s.n == 100
        torch.testing.assert_close(s.cov, full.cov, rtol=1e-12, atol=1e-12)
        dist.destroy_process_group()
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(r)], env=env, stderr=subprocess.PIPE)
        for r in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
