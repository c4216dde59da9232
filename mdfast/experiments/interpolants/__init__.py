"""Discrete interpolants ("[MASK] is All You Need") as an experiment: what the generic layers do
not hold.

- :mod:`~.presets`: ImageNet / COCO VQ-f8 recipes, the CPU-scale digits, a tiny synthetic task;
- :mod:`~.registration`: ``register()`` (``data.name=vq-tokens``, ``data.name=digits14`` and the
  presets);
- :mod:`~.digits`: MNIST at 14×14 quantised to 16 grey levels by a fitted k-means codebook;
- :mod:`~.table`: the CPU-scale result (Euler vs MaskGIT, 8/16/32 steps, CFG 0/1/2,
  classifier-Fréchet score and intended-class accuracy), ``python -m``-runnable;
- :mod:`~.tokenize`: images → VQ index ``.npz`` through :class:`mdfast.models.vq.VQTokenizer`.

The objective is :class:`mdfast.diffusion.Interpolant`, the samplers
:func:`mdfast.sampling.euler` / :func:`mdfast.sampling.maskgit`, the backbone
:class:`mdfast.models.UViT`, the metrics :mod:`mdfast.metrics.fid` and
:mod:`mdfast.metrics.classifier`.
"""

from mdfast.experiments.interpolants.registration import register

__all__ = ["register"]
