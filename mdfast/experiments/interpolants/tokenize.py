"""Images ↔ VQ index files for the interpolant presets, through a local VQ model
(:class:`mdfast.models.vq.VQTokenizer`):

    # an ImageFolder (one sub-folder per class) -> tokens.npz with input_ids [N, h, w] and label
    python -m mdfast.experiments.interpolants.tokenize encode --vq VQ_DIR --images DIR \\
        --out tokens.npz [--size 256] [--batch-size 64]
    # samples of `mdfast sample ... sample.out=samples.pt` -> a PNG grid
    python -m mdfast.experiments.interpolants.tokenize decode --vq VQ_DIR --tokens samples.pt \\
        --out samples.png

Images are resized so the shorter side is ``--size`` and centre-cropped (the ADM / seed
preprocessing), scaled to [−1, 1] and encoded in batches; the ``.npz`` is what
``data.name=vq-tokens data.path=tokens.npz`` trains on (``data.codebook_size`` = the VQ model's).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from mdfast.data.vq_tokens import save_vq_tokens
from mdfast.models.vq import VQTokenizer

__all__ = ["decode_to_grid", "encode_folder", "main"]


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


def main(argv=None) -> Path:
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
    a = p.parse_args(argv)
    vq = VQTokenizer.from_pretrained(a.vq, device=a.device)
    if a.command == "encode":
        return encode_folder(vq, a.images, a.out, size=a.size, batch_size=a.batch_size)
    obj = torch.load(a.tokens, map_location="cpu", weights_only=True)
    tokens = obj["input_ids"] if isinstance(obj, dict) else obj
    return decode_to_grid(vq, tokens, a.out)


if __name__ == "__main__":
    print(main())
