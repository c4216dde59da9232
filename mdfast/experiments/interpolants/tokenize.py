"""Images ↔ VQ index files for the interpolant presets, through a local VQ model
(:class:`mdfast.models.vq.VQTokenizer`):

    # an ImageFolder (one sub-folder per class) -> tokens.npz with input_ids [N, h, w] and label
    python -m mdfast.experiments.interpolants.tokenize encode --vq VQ_DIR --images DIR \\
        --out tokens.npz [--size 256] [--batch-size 64]
    # samples of `mdfast sample ... sample.out=samples.pt` -> a PNG grid
    python -m mdfast.experiments.interpolants.tokenize decode --vq VQ_DIR --tokens samples.pt \\
        --out samples.png
    # FID of the decoded samples against reference statistics (.npz with mu, sigma), Inception
    # weights from a local file (mdfast.metrics.fid): prints {"fid": ..., "samples": N, ...}
    python -m mdfast.experiments.interpolants.tokenize fid --vq VQ_DIR --tokens samples.pt \\
        --ref imagenet256_fidstat.npz [--weights weights-inception-2015-12-05-6726825d.pth]

Images are resized so the shorter side is ``--size`` and centre-cropped (the ADM / seed
preprocessing), scaled to [−1, 1] and encoded in batches; the ``.npz`` is what
``data.name=vq-tokens data.path=tokens.npz`` trains on (``data.codebook_size`` = the VQ model's).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from mdfast.data.vq_tokens import save_vq_tokens
from mdfast.models.vq import VQTokenizer

__all__ = ["decode_to_grid", "decoded_fid", "encode_folder", "main"]


def encode_folder(
    vq: VQTokenizer, images: str | Path, out: str | Path, *, size: int = 256,
    batch_size: int = 64, progress: bool = True,
) -> Path:  # fmt: skip
    """Encode a torchvision ``ImageFolder`` into ``out`` (``.npz``: input_ids, label)."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize([0.5] * 3, [0.5] * 3),
    ])  # fmt: skip
    folder = datasets.ImageFolder(str(images), transform=tf)
    loader = torch.utils.data.DataLoader(folder, batch_size=batch_size, shuffle=False)
    ids, labels = [], []
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="encoding", unit="batch")
    for x, y in loader:
        ids.append(vq.encode(x).cpu())
        labels.append(y)
    return save_vq_tokens(out, torch.cat(ids), torch.cat(labels))


def decode_to_grid(vq: VQTokenizer, tokens: torch.Tensor, out: str | Path, nrow=None) -> Path:
    """Decode index grids [N, h, w] and save them as one PNG grid."""
    from torchvision.utils import save_image

    images = vq.decode(tokens)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or math.ceil(math.sqrt(images.shape[0]))
    save_image((images + 1) / 2, out, nrow=nrow)
    return out


def decoded_fid(vq: VQTokenizer, tokens: torch.Tensor, fid, reference, *,
                batch_size: int = 50, progress: bool = False) -> float:  # fmt: skip
    """FID (:class:`mdfast.metrics.fid.FID` ``fid``) of index grids ``tokens`` [N, h, w] decoded
    in batches of ``batch_size`` (images in [0, 1]) against ``reference``
    (:class:`~mdfast.metrics.frechet.GaussianStats`)."""
    if batch_size < 1:
        raise ValueError(f"mdfast: argument 'batch_size' must be >= 1, got {batch_size}")
    starts = range(0, tokens.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="decoding", unit="batch")
    images = ((vq.decode(tokens[i : i + batch_size]) + 1) / 2 for i in starts)
    return fid.score(images, reference)


def _load_tokens(path) -> torch.Tensor:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj["input_ids"] if isinstance(obj, dict) else obj


def main(argv=None) -> Path | dict:
    p = argparse.ArgumentParser(prog="python -m mdfast.experiments.interpolants.tokenize",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encode", help="image folder -> tokens.npz")
    e.add_argument("--vq", required=True, help="local diffusers VQModel directory")
    e.add_argument("--images", required=True, help="ImageFolder root (class sub-folders)")
    e.add_argument("--out", required=True)
    e.add_argument("--size", type=int, default=256)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device", default=None)
    d = sub.add_parser("decode", help="sampled tokens (.pt) -> PNG grid")
    d.add_argument("--vq", required=True)
    d.add_argument("--tokens", required=True, help="a .pt of `mdfast sample` (or a tensor)")
    d.add_argument("--out", required=True)
    d.add_argument("--device", default=None)
    f = sub.add_parser("fid", help="sampled tokens (.pt) -> FID against reference statistics")
    f.add_argument("--vq", required=True)
    f.add_argument("--tokens", required=True, help="a .pt of `mdfast sample` (or a tensor)")
    f.add_argument("--ref", required=True, help="reference statistics .npz (mu, sigma)")
    f.add_argument("--weights", default=None, help="Inception weights file (mdfast.metrics.fid)")
    f.add_argument("--batch-size", type=int, default=50)
    f.add_argument("--device", default=None)
    a = p.parse_args(argv)
    vq = VQTokenizer.from_pretrained(a.vq, device=a.device)
    if a.command == "encode":
        return encode_folder(vq, a.images, a.out, size=a.size, batch_size=a.batch_size)
    tokens = _load_tokens(a.tokens)
    if a.command == "decode":
        return decode_to_grid(vq, tokens, a.out)
    from mdfast.metrics.fid import FID
    from mdfast.metrics.frechet import GaussianStats

    if not Path(a.ref).is_file():
        raise FileNotFoundError(f"mdfast: --ref '{a.ref}' is not a file (reference statistics)")
    reference = GaussianStats.load(a.ref)
    fid = FID(weights=a.weights, device=a.device or vq.device, batch_size=a.batch_size)
    score = decoded_fid(vq, tokens, fid, reference, batch_size=a.batch_size, progress=True)
    out = {"fid": score, "samples": int(tokens.shape[0]), "reference": a.ref, "network": fid.name}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    result = main()
    if isinstance(result, Path):
        print(result)
