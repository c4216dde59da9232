"""Drop-in replacements for existing masked-diffusion codebases.

* :mod:`mdfast.integrations.mdlm` — ``patch(Diffusion)`` for ``kuleshov-group/mdlm`` and
  ``kuleshov-group/remdm`` (and forks with the same ``Diffusion`` methods): the SUBS loss through
  mdfast's fused cross-entropy, the MDLM / ReMDM sampling steps through ``mask_step`` with a lazy,
  opaque ``p_x0`` cache, and an exact float64 ``_sample_categorical``.

See ``docs/integrations.md`` for the lines to add in each codebase.
"""

__all__ = ["mdlm"]
