"""Discrete-interpolant data and tools: memory-mapped VQ token files, the k-means codebook, the
VQ tokenizer (a tiny diffusers VQModel saved locally, and the error without diffusers), the
generic classifier, ``mdfast sample`` of an interpolant run, and the CPU-scale table at tiny
settings."""

from __future__ import annotations

import builtins
import json
import re

import numpy as np
import pytest
import torch

from mdfast.cli import main
from mdfast.data.quantize import assign, decode, fit_kmeans
from mdfast.data.vq_tokens import MappedArray, load_vq_tokens, save_vq_tokens
from mdfast.experiments.build import build_data
from mdfast.metrics.classifier import ConvClassifier, intended_class_accuracy, train_classifier
from mdfast.train.data import StepBatches


def test_vq_token_files_round_trip_memory_mapped(tmp_path, fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    ids = torch.randint(0, 300, (40, 4, 4), generator=g)
    lab = torch.randint(0, 10, (40,), generator=g)
    ctx = torch.randn(40, 3, 5, generator=g)
    path = save_vq_tokens(tmp_path / "t.npz", ids, lab, ctx)
    cols = load_vq_tokens(path, codebook_size=300)
    assert isinstance(cols["input_ids"].array, np.memmap)  # stored members are mapped in place
    idx = torch.tensor([7, 3, 3, 39, 0])
    assert torch.equal(cols["input_ids"][idx], ids[idx]) and torch.equal(cols["label"], lab)
    torch.testing.assert_close(cols["context"][idx], ctx[idx].half().float())
    # the trainer's batching reads rows of the mapped columns directly
    batch = StepBatches(cols, 8).get(0, 0)
    assert batch["input_ids"].shape == (8, 4, 4) and batch["input_ids"].dtype == torch.int64
    # .npy + labels .npy, and a compressed .npz (read into memory)
    np.save(tmp_path / "i.npy", ids.numpy().astype(np.int16))
    np.save(tmp_path / "l.npy", lab.numpy())
    cols = load_vq_tokens(tmp_path / "i.npy", codebook_size=300, labels_path=tmp_path / "l.npy")
    assert torch.equal(cols["input_ids"][idx], ids[idx]) and torch.equal(cols["label"], lab)
    np.savez_compressed(tmp_path / "c.npz", indices=ids.numpy())
    assert torch.equal(load_vq_tokens(tmp_path / "c.npz", codebook_size=300)["input_ids"][idx],
                       ids[idx])  # fmt: skip
    view = MappedArray(ids.numpy(), torch.int64).split(10, 20)
    assert len(view) == 10 and torch.equal(view[torch.tensor([0, 9])], ids[[10, 19]])


def test_vq_index_beyond_the_codebook_is_an_error(tmp_path):
    ids = torch.zeros(5, 2, 2, dtype=torch.long)
    ids[3, 1, 0] = 16384  # the mask id of a 16384-code VQ-f8
    path = save_vq_tokens(tmp_path / "bad.npz", ids)
    with pytest.raises(ValueError, match=r"VQ index 16384 at row 3.*data.codebook_size=16384"):
        load_vq_tokens(path, codebook_size=16384)
    with pytest.raises(ValueError, match=r"data\.codebook_size"):
        build_data({"name": "vq-tokens", "path": str(path), "codebook_size": 16384,
                    "labels_path": "", "context_path": "", "val_path": "", "val_labels_path": "",
                    "val_context_path": "", "val_fraction": 0.1})  # fmt: skip
    with pytest.raises(FileNotFoundError, match=r"data\.path"):
        load_vq_tokens(tmp_path / "missing.npz", codebook_size=4)


def test_vq_tokens_preset_data_splits_lazily(tmp_path):
    ids = torch.randint(0, 16, (50, 2, 2))
    path = save_vq_tokens(tmp_path / "t.npz", ids, torch.arange(50) % 3)
    d = {"name": "vq-tokens", "path": str(path), "codebook_size": 16, "labels_path": "",
         "context_path": "", "val_path": "", "val_labels_path": "", "val_context_path": "",
         "val_fraction": 0.1}  # fmt: skip
    train, val = build_data(d)
    assert isinstance(train["input_ids"], MappedArray) and len(train["input_ids"]) == 45
    assert torch.equal(val["input_ids"][torch.arange(5)], ids[45:])
    assert torch.equal(val["label"], torch.arange(45, 50) % 3)


def test_kmeans_codebook(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    centres = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    x = centres[torch.randint(0, 3, (3000,), generator=g)] + 0.01 * torch.randn(3000, generator=g)
    c = fit_kmeans(x, 3, seed=fresh_seed % 1000)
    torch.testing.assert_close(c, centres, atol=2e-3, rtol=0)
    codes = assign(x, c)
    assert torch.equal(codes, (x[:, None] - centres).abs().argmin(1))
    torch.testing.assert_close(decode(codes, c), c[codes])
    assert torch.equal(fit_kmeans(x, 3, seed=4), fit_kmeans(x, 3, seed=4))
    pts = torch.randn(200, 2, generator=g)
    assert fit_kmeans(pts, 4).shape == (4, 2)
    with pytest.raises(ValueError, match="argument 'k'"):
        fit_kmeans(torch.tensor([1.0, 1.0]), 2)


def test_classifier_trainer_is_deterministic(fresh_seed):
    g = torch.Generator().manual_seed(fresh_seed)
    labels = torch.randint(0, 2, (256,), generator=g)
    images = torch.rand(256, 8, 8, generator=g) * 0.3
    images[labels == 1, :4] += 0.7  # class 1: a bright top half

    def make():
        return ConvClassifier(8, 2, width=4, feature_dim=8)

    a = train_classifier(make, images, labels, epochs=6, lr=1e-2, batch_size=64, seed=1)
    b = train_classifier(make, images, labels, epochs=6, lr=1e-2, batch_size=64, seed=1)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    with torch.no_grad():
        probs = a(images).softmax(-1)
    assert intended_class_accuracy(probs, labels) > 0.9
    assert intended_class_accuracy(torch.eye(2)[[0, 1, 1]], torch.tensor([0, 1, 0])) == 2 / 3


def _tiny_vqmodel(path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    m = diffusers.VQModel(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4,
                          down_block_types=("DownEncoderBlock2D",) * 2,
                          up_block_types=("UpDecoderBlock2D",) * 2, num_vq_embeddings=32,
                          vq_embed_dim=4, norm_num_groups=4, sample_size=16)  # fmt: skip
    m.save_pretrained(path)
    return m.eval()


def test_vq_tokenizer_encode_decode(tmp_path, fresh_seed):
    from mdfast.models.vq import VQTokenizer

    model = _tiny_vqmodel(tmp_path / "vq")
    tok = VQTokenizer.from_pretrained(tmp_path / "vq")
    assert tok.codebook_size == 32 and tok.downsample == 2
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(fresh_seed)) * 2 - 1
    idx = tok.encode(x)
    assert idx.shape == (2, 8, 8) and idx.dtype == torch.int64
    with torch.no_grad():  # the model's own quantise-and-decode path
        h = model.encode(x).latents
        want = model.decode(model.quantize(h)[0], force_not_quantize=True).sample.clamp(-1, 1)
    torch.testing.assert_close(tok.decode(idx), want, rtol=1e-4, atol=1e-4)
    assert torch.equal(tok.encode(tok.decode(idx) * 0 + x), idx)  # encode is deterministic
    with pytest.raises(ValueError, match=r"codebook_size=32"):
        tok.decode(torch.full((1, 8, 8), 32))
    # the command line: an ImageFolder -> tokens.npz -> trainable columns; tokens -> PNG grid
    from PIL import Image

    from mdfast.experiments.interpolants.tokenize import main as tokenize

    for c, cls in enumerate(("cat", "dog")):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(2):
            pixels = torch.randint(0, 256, (20, 24, 3), dtype=torch.uint8) // (c + 1)
            Image.fromarray(pixels.numpy()).save(tmp_path / "img" / cls / f"{i}.png")
    npz = tokenize(["encode", "--vq", str(tmp_path / "vq"), "--images", str(tmp_path / "img"),
                    "--out", str(tmp_path / "t.npz"), "--size", "16"])  # fmt: skip
    cols = load_vq_tokens(npz, codebook_size=32)
    assert cols["input_ids"].shape == (4, 8, 8) and cols["label"].tolist() == [0, 0, 1, 1]
    torch.save({"input_ids": cols["input_ids"][torch.arange(4)]}, tmp_path / "s.pt")
    png = tokenize(["decode", "--vq", str(tmp_path / "vq"), "--tokens", str(tmp_path / "s.pt"),
                    "--out", str(tmp_path / "s.png")])  # fmt: skip
    assert Image.open(png).size[0] > 16


class _PixelFeatures(torch.nn.Module):
    """A fixed linear map of the pixels: a feature network small enough for a unit test."""

    def __init__(self, pixels: int, dim: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(pixels, dim, generator=g, dtype=torch.float64))

    def forward(self, images):
        return images.flatten(1).double() @ self.w


def test_fid_of_decoded_tokens(tmp_path, fresh_seed):
    """Decoded in batches and scaled to [0, 1], the samples' statistics are those of the whole
    decoded set: FID 0 against it, and the closed form (a shift of the mean) against a shifted
    copy."""
    from mdfast.experiments.interpolants.tokenize import decoded_fid
    from mdfast.metrics.fid import FID
    from mdfast.models.vq import VQTokenizer

    _tiny_vqmodel(tmp_path / "vq")
    vq = VQTokenizer.from_pretrained(tmp_path / "vq")
    g = torch.Generator().manual_seed(fresh_seed)
    tokens = torch.randint(0, 32, (7, 8, 8), generator=g)
    net = _PixelFeatures(3 * 16 * 16, 6, fresh_seed)
    fid = FID(net, device="cpu")
    images = (vq.decode(tokens) + 1) / 2
    ref = fid.stats(images)
    assert decoded_fid(vq, tokens, fid, ref, batch_size=3) == pytest.approx(0.0, abs=1e-8)
    delta = 0.1
    shifted = fid.stats(images + delta)
    want = float((delta * net.w.sum(0)).square().sum())
    # float32 features: the shift's closed form holds to float32 rounding of the decoded images
    assert decoded_fid(vq, tokens, fid, shifted, batch_size=2) == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="'batch_size'"):
        decoded_fid(vq, tokens, fid, ref, batch_size=0)


def test_fid_command_names_missing_files(tmp_path, monkeypatch):
    from mdfast.experiments.interpolants.tokenize import main as tokenize
    from mdfast.metrics.fid import INCEPTION_WEIGHTS_FILE
    from mdfast.metrics.frechet import GaussianStats

    _tiny_vqmodel(tmp_path / "vq")
    torch.save({"input_ids": torch.zeros(2, 8, 8, dtype=torch.long)}, tmp_path / "s.pt")
    args = ["fid", "--vq", str(tmp_path / "vq"), "--tokens", str(tmp_path / "s.pt")]
    with pytest.raises(FileNotFoundError, match=r"--ref '.*nowhere\.npz'"):
        tokenize([*args, "--ref", str(tmp_path / "nowhere.npz")])
    GaussianStats.of(torch.randn(4, 3, dtype=torch.float64)).save(tmp_path / "ref.npz")
    monkeypatch.setenv("MDFAST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MDFAST_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=INCEPTION_WEIGHTS_FILE.replace(".", r"\.")):
        tokenize([*args, "--ref", str(tmp_path / "ref.npz")])


def test_vq_tokenizer_errors_name_what_is_needed(tmp_path, monkeypatch):
    from mdfast.models.vq import VQTokenizer

    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        VQTokenizer.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "vq").mkdir()
    (tmp_path / "vq" / "config.json").write_text("{}")
    real_import = builtins.__import__

    def no_diffusers(name, *args, **kwargs):
        if name == "diffusers" or name.startswith("diffusers."):
            raise ImportError("No module named 'diffusers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_diffusers)
    with pytest.raises(ImportError, match=r"needs the 'diffusers' package.*VQModel directory"):
        VQTokenizer.from_pretrained(tmp_path / "vq")


def test_cli_sample_interpolant(tmp_path, capsys):
    base = ["tiny-interpolant-uvit", "train.steps=2", "train.batch_size=8",
            "train.progress=false", f"train.out_dir={tmp_path}"]  # fmt: skip
    assert main(["train", *base]) == 0
    out_file = tmp_path / "s.pt"
    for sampler in ("euler", "maskgit"):
        opts = [f"sample.sampler={sampler}", "sample.steps=3", "sample.cfg_scale=2",
                "sample.batch_size=5", f"sample.out={out_file}"]  # fmt: skip
        rc = main(["sample", *base, *opts])
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert rc == 0 and res["shape"] == [5, 8, 8] and res["nfe"] == 3
        saved = torch.load(out_file)
        assert saved["input_ids"].max() < 8 and torch.equal(saved["y"], torch.arange(5) % 4)
    rc = main(["sample", *base, "sample.sampler=maskgit", "sample.steps=0"])
    assert rc == 2 and "option 'sample.steps'" in capsys.readouterr().err
    rc = main(["sample", *base, "sample.sampler=ddpm"])
    assert rc == 2 and "'euler' or 'maskgit'" in capsys.readouterr().err
    # and the other way round: an MDLM run is not sampled by an interpolant sampler
    rc = main(["sample", "tiny-mdlm", f"train.out_dir={tmp_path / 'mdlm'}",
               "model.random_init=true", "sample.sampler=maskgit"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "sample.sampler 'maskgit' samples discrete interpolants" in err
    assert "ddpm_cache" in err


def test_cli_sample_interpolant_text_conditioned(tmp_path, capsys, fresh_seed):
    """``sample.context`` conditions sample i on embedding row i mod N: at s = 0 the samples do
    not depend on the embeddings, under guidance they do."""
    # lr 0.05 from the first step: two steps move the zero-initialised output layer
    base = ["tiny-interpolant-uvit", "model.num_classes=0", "objective.num_classes=0",
            "model.context_dim=5", "model.context_len=3", "train.steps=2", "train.warmup=0",
            "train.lr=0.05", "train.batch_size=8", "train.progress=false",
            f"train.out_dir={tmp_path}"]  # fmt: skip
    assert main(["train", *base]) == 0
    g = torch.Generator().manual_seed(fresh_seed)
    np.save(tmp_path / "a.npy", (3 * torch.randn(3, 3, 5, generator=g)).numpy())
    save_vq_tokens(tmp_path / "b.npz", torch.zeros(2, 8, 8, dtype=torch.long),
                   context=3 * torch.randn(2, 3, 5, generator=g))  # fmt: skip

    def run(ctx, scale):
        out = tmp_path / "s.pt"
        rc = main(["sample", *base, "sample.sampler=euler", "sample.steps=3", "sample.batch_size=4",
                   "sample.num_batches=2", f"sample.cfg_scale={scale}", f"sample.out={out}",
                   f"sample.context={tmp_path / ctx}"])  # fmt: skip
        capsys.readouterr()
        assert rc == 0
        return torch.load(out)

    a0, b0 = run("a.npy", 0), run("b.npz", 0)
    assert torch.equal(a0["context_row"], torch.arange(8) % 3)
    assert torch.equal(b0["context_row"], torch.arange(8) % 2)
    assert torch.equal(a0["input_ids"], b0["input_ids"])
    assert not torch.equal(run("a.npy", 3)["input_ids"], run("b.npz", 3)["input_ids"])
    np.save(tmp_path / "flat.npy", np.zeros((4, 5), dtype=np.float32))
    for name, code, err in (
        ("flat.npy", 2, r"sample\.context must hold embeddings \[N, T, C\]"),  # bad option
        ("none.npy", 1, r"sample\.context '.*none\.npy' not found"),  # missing file
    ):
        rc = main(["sample", *base, "sample.sampler=euler", f"sample.context={tmp_path / name}"])
        assert rc == code and re.search(err, capsys.readouterr().err)


def test_cpu_table_runs_at_tiny_settings(tmp_path):
    from mdfast.experiments.interpolants.table import run

    rows = run(tmp_path, samples=20, batch=10, samplers=("euler", "maskgit"), steps=(2,),
               scales=(0.0, 2.0), classifier_epochs=1, progress=False,
               overrides=["train.steps=3", "train.batch_size=16", "model.dim=32",
                          "model.depth=2"])  # fmt: skip
    assert [(r["sampler"], r["cfg_scale"], r["nfe"]) for r in rows] == [
        ("euler", 0.0, 2), ("euler", 2.0, 4), ("maskgit", 0.0, 2), ("maskgit", 2.0, 4)
    ]  # fmt: skip
    assert all(r["frechet"] >= 0 and 0 <= r["class_acc"] <= 1 for r in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["classifier_test_acc"] > 0.5 and len(summary["codebook"]) == 16
    assert "| maskgit | 2 | 2 | 4 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "grids" / "euler-2-s2.png").is_file()
