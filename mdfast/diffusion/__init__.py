"""Forward processes and losses of masked discrete diffusion models, as modules:
``objective(batch) -> (loss, metrics)`` (see ``mdfast.diffusion.base``)."""

from mdfast.diffusion import ambient as ambient
from mdfast.diffusion.ar import AR
from mdfast.diffusion.base import Objective, sample_t
from mdfast.diffusion.imdm import IMDM, IMDMBackbone, imdm_posterior, imdm_update
from mdfast.diffusion.interpolants import Interpolant, dkappa, kappa
from mdfast.diffusion.mdlm import MDLM
from mdfast.diffusion.prime import Prime
from mdfast.diffusion.sedd import SEDD

__all__ = [
    "AR",
    "IMDM",
    "MDLM",
    "SEDD",
    "IMDMBackbone",
    "Interpolant",
    "Objective",
    "Prime",
    "dkappa",
    "imdm_posterior",
    "imdm_update",
    "kappa",
    "sample_t",
]
