"""MDM-Prime experiments (partial masking of ℓ-digit tokens): images (CIFAR-10, ImageNet-32;
every ℓ, super-tokens, the uniform mixture), text (OWT with ℓ digits per GPT-2 token), the 2-D
toy and a CPU-scale comparison on 8×8 digits.

The generic pieces live outside this package: the process and losses
(:class:`mdfast.diffusion.Prime`, :class:`mdfast.diffusion.prime_objective.PrimeObjective`), the
sampler with the seed's temperature / corrector / timestep knobs (:mod:`mdfast.sampling.prime`),
the image data (:mod:`mdfast.data.images`), the backbones (:class:`mdfast.models.UNet`,
:class:`mdfast.models.prime_dit.PrimeDiT`), the released checkpoints' layout
(:mod:`mdfast.models.mdm_prime_checkpoint`) and FID (:mod:`mdfast.metrics.fid`). This package
holds what is MDM-Prime's, one job per module:

- :mod:`~.presets`: the ``prime-*`` presets (the seed's training recipes and best samplers);
- :mod:`~.registration`: ``register()`` (objective ``prime``, model ``prime_dit``, data
  ``cifar10`` / ``imagenet32`` / ``digits8``, sampler ``prime``, presets);
- :mod:`~.evaluation`: sampling to files and grids, FID, NLL / bits per dim, imputation;
- :mod:`~.seed_cli`: the seed's command line (``python -m mdfast.experiments.prime_image``);
- :mod:`~.toy`: the 2-D toy (an image as a density over (x, y), L = 2, C = 512);
- :mod:`~.digits8`, :mod:`~.cpu_table`: the CPU-scale experiment and its table.
"""

from mdfast.experiments.prime.presets import PRESETS
from mdfast.experiments.prime.registration import register

__all__ = ["PRESETS", "register"]
