"""FID: the Fréchet distance between Inception-v3 pool features of samples and of real images.

The feature network is torch-fidelity's ``FeatureExtractorInceptionV3`` (the TF-FID-compatible
port that ``torchmetrics.image.fid`` also uses: bilinear resize to 299² as TF1 did, 2048-d pool3
features), with weights read from a LOCAL file, never downloaded:
``weights-inception-2015-12-05-6726825d.pth``, looked for in this order:

1. the ``weights`` argument;
2. ``$MDFAST_INCEPTION_WEIGHTS``;
3. ``$MDFAST_CACHE_DIR/`` (default ``~/.cache/mdfast/``) + the file name;
4. torch hub's cache (``~/.cache/torch/hub/checkpoints/``), where torch-fidelity and torchmetrics
   put it on a machine with network.

FID = frechet_distance(μ_real, Σ_real, μ_gen, Σ_gen) (:mod:`mdfast.metrics.frechet`). Papers use
50k generated samples against the training set's statistics; for sweeps 2k–10k samples are
common, which biases FID upwards: compare numbers computed with the same sample count, as the
``n`` stored with every statistic lets you check.

Any other feature network (a small classifier for MNIST-scale work, a test's tiny network) plugs
in as ``FID(extractor=module)``: ``module(images) -> [N, D]`` features.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from mdfast.metrics.frechet import GaussianStats

__all__ = ["FID", "INCEPTION_WEIGHTS_FILE", "find_inception_weights", "inception_v3"]

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_FILE
)
_INCEPTION_SHA256_PREFIX = "6726825d"


def _candidates(weights: str | os.PathLike | None) -> list[Path]:
    if weights:
        return [Path(weights)]
    out = []
    if os.environ.get("MDFAST_INCEPTION_WEIGHTS"):
        out.append(Path(os.environ["MDFAST_INCEPTION_WEIGHTS"]))
    cache = Path(os.environ.get("MDFAST_CACHE_DIR", Path.home() / ".cache" / "mdfast"))
    out.append(cache / INCEPTION_WEIGHTS_FILE)
    out.append(Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE)
    return out


def find_inception_weights(weights: str | os.PathLike | None = None) -> Path:
    """The local Inception weights file, or FileNotFoundError saying which file is needed and where
    to put it."""
    tried = _candidates(weights)
    for p in tried:
        if p.is_file():
            return p
    raise FileNotFoundError(
        "mdfast: FID needs the Inception-v3 weights file "
        f"'{INCEPTION_WEIGHTS_FILE}' (torch-fidelity's TF-FID port, 91 MB). Looked in: "
        + ", ".join(str(p) for p in tried)
        + f". Download it on a machine with network from {INCEPTION_WEIGHTS_URL} and put it at "
        f"{tried[-2] if not weights else tried[0]} (or set MDFAST_INCEPTION_WEIGHTS=/path/to/it)."
    )


def _sha256_prefix(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:8]


class _InceptionPool(nn.Module):
    """uint8 images [N, 3, H, W] -> float32 pool3 features [N, 2048]."""

    def __init__(self, net: nn.Module, name: str):
        super().__init__()
        self.net = net
        self.fid_name = name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)[0].float()


def inception_v3(
    weights: str | os.PathLike | None = None, device=None, *, verify: bool = True
) -> nn.Module:
    """The FID Inception network from a local weights file (see the module docstring), in eval
    mode, no gradients. ``verify`` checks the file's SHA-256 prefix against the published weights
    and warns when it differs (scores are then not comparable with published FIDs)."""
    path = find_inception_weights(weights)
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as e:
        raise ImportError(
            "mdfast: FID needs torch-fidelity (`pip install torch-fidelity`), which provides the "
            "TF-compatible Inception-v3"
        ) from e
    name = "inception-v3-compat"
    if verify and _sha256_prefix(path) != _INCEPTION_SHA256_PREFIX:
        import warnings

        warnings.warn(
            f"mdfast: '{path}' is not the published FID Inception weights (SHA-256 prefix differs "
            f"from {_INCEPTION_SHA256_PREFIX}); scores will not match published FIDs",
            RuntimeWarning,
            stacklevel=2,
        )
        name += "-custom"
    net = FeatureExtractorInceptionV3(name, ["2048"], feature_extractor_weights_path=str(path))
    return _InceptionPool(net, name).to(device or "cpu").eval()


def _as_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"mdfast: FID images must be [N, 3, H, W] or [N, 1, H, W], got {list(images.shape)}"
        )
    if images.dtype != torch.uint8:
        if not images.is_floating_point():
            raise ValueError(
                f"mdfast: FID images must be uint8 in [0, 255] or float in [0, 1], got "
                f"{images.dtype}"
            )
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images


def _batches(images, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size]
    else:
        yield from images


class FID:
    """FID (or any Fréchet score) between generated samples and reference statistics.

    ``extractor``: a module mapping images to features (default: :func:`inception_v3` from
    ``weights``). The default network takes uint8 RGB; float images in [0, 1] and one-channel
    images are converted (×255, rounded; channel repeated). A custom extractor receives the
    images as given.

    ``stats(images)``: :class:`~mdfast.metrics.frechet.GaussianStats` of a tensor [N, C, H, W] or
    an iterable of such batches (e.g. a DataLoader yielding images), summed over
    ``torch.distributed`` ranks when a process group is up (each rank passes its shard).
    ``reference_stats(images, cache=path)``: the same, saved to / reused from ``cache`` when the
    cached statistics were made with the same network and sample count.
    ``score(samples, reference)``: the Fréchet distance.
    """

    def __init__(
        self,
        extractor: nn.Module | None = None,
        *,
        weights: str | os.PathLike | None = None,
        device=None,
        batch_size: int = 100,
        progress: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"mdfast: argument 'batch_size' must be >= 1, got {batch_size}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.default_network = extractor is None
        self.extractor = inception_v3(weights, self.device) if extractor is None else extractor
        self.extractor = self.extractor.to(self.device).eval()
        self.name = getattr(self.extractor, "fid_name", type(self.extractor).__name__)
        self.batch_size = batch_size
        self.progress = progress

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        if self.default_network:
            images = _as_uint8_rgb(images)
        return self.extractor(images.to(self.device)).double()

    def stats(self, images, *, meta: dict | None = None, total: int | None = None) -> GaussianStats:
        stats = None
        bar = None
        if self.progress:
            from tqdm import tqdm

            n = total or (images.shape[0] if isinstance(images, torch.Tensor) else None)
            bar = tqdm(total=n, desc="FID features", unit="img")
        for batch in _batches(images, self.batch_size):
            f = self.features(batch)
            if stats is None:
                stats = GaussianStats(f.shape[1], {"network": self.name, **(meta or {})})
            stats.update(f)
            if bar is not None:
                bar.update(batch.shape[0])
        if bar is not None:
            bar.close()
        if stats is None:
            raise ValueError("mdfast: FID got no images")
        stats.all_reduce()
        return stats

    def reference_stats(
        self, images, *, cache: str | os.PathLike | None = None, meta: dict | None = None
    ) -> GaussianStats:
        """Statistics of real images, computed once: ``images`` may be a zero-argument callable
        returning the images (so a cache hit never loads the data set). A cache file whose
        network or ``meta`` differs is recomputed (and overwritten)."""
        want = {"network": self.name, **(meta or {})}
        if cache is not None and Path(cache).is_file():
            cached = GaussianStats.load(cache)
            if all(cached.meta.get(k) == v for k, v in want.items()):
                return cached
        stats = self.stats(images() if callable(images) else images, meta=meta)
        rank0 = not (torch.distributed.is_available() and torch.distributed.is_initialized())
        rank0 = rank0 or torch.distributed.get_rank() == 0
        if cache is not None and rank0:
            stats.save(cache)
        return stats

    def score(self, samples, reference: GaussianStats) -> float:
        return self.stats(samples).frechet(reference)
