"""Forward processes and losses of masked discrete diffusion models, as modules."""

from mdfast.diffusion import ambient as ambient
from mdfast.diffusion.prime import Prime  # noqa: F401
