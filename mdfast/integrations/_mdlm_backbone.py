"""Running a patched MDLM-family ``Diffusion``'s network: raw logits, or the output layer's input.

The patched loss and samplers call the codebase's own ``forward(x, sigma)`` (so its
``_process_sigma``, autocast and backbone wrapping stay as they are) with the SUBS
parameterisation switched off, which returns the backbone's raw logits. Where the backbone
exposes its vocabulary projection as ``output_layer.linear`` (MDLM's ``DIT``: the projection sits
inside ``DDitFinalLayer`` after the adaLN-modulated LayerNorm), that projection's ``forward`` can
be replaced for one call by a capture that returns its input: the network then returns the
features ``h`` [B, L, D] and the caller applies the projection itself, fused with the loss
(:func:`mdfast.ops.linear_masked_ce`) or only on the rows a sampler draws from.

That is valid only if the backbone returns the projection's output untouched, which is checked
once per model on a real call (the capture passes through and records the object the projection
returned; the model's output must be that very object). Backbones that post-process the logits,
call the projection more than once, or shard its weight (FSDP, DTensor) are never fused.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

_HEAD_PATHS = ("output_layer.linear", "backbone.output_layer.linear")


def find_output_linear(backbone: nn.Module) -> nn.Linear | None:
    """The backbone's vocabulary projection (MDLM ``DIT``: ``output_layer.linear``; the HF
    ``MDLM`` wrapper: ``backbone.output_layer.linear``), or None."""
    for path in _HEAD_PATHS:
        module = backbone
        for name in path.split("."):
            module = getattr(module, name, None)
            if module is None:
                break
        if isinstance(module, nn.Linear):
            return module
    return None


def _sharded(backbone: nn.Module, linear: nn.Linear) -> bool:
    """FSDP-wrapped backbones or DTensor weights: the projection's weight is not a whole local
    tensor outside its forward, so it cannot be used after the network returns."""
    if any("FullyShardedDataParallel" in type(m).__name__ for m in backbone.modules()):
        return True
    w = linear.weight
    return (
        type(w).__name__ == "DTensor"
        or tuple(w.shape) != (linear.out_features, linear.in_features)
        or w.untyped_storage().size() == 0
    )


@contextlib.contextmanager
def raw_logits(diffusion):
    """While active, the patched ``_subs_parameterization`` returns the backbone's logits
    unchanged, so ``diffusion.forward`` yields raw logits."""
    previous = diffusion.__dict__.get("_mdfast_raw", False)
    diffusion.__dict__["_mdfast_raw"] = True
    try:
        yield
    finally:
        diffusion.__dict__["_mdfast_raw"] = previous


@dataclass
class _Capture:
    hidden: torch.Tensor | None = None
    returned: object = None
    autocast: torch.dtype | None = None
    calls: int = 0


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


@contextlib.contextmanager
def _capture(linear: nn.Linear, passthrough: bool):
    """Replace ``linear.forward`` for one network call by a function that records its input (and
    the autocast dtype in force there) and returns either the real projection (``passthrough``)
    or the input itself."""
    rec = _Capture()
    had_own = "forward" in linear.__dict__
    own = linear.__dict__.get("forward")
    real = linear.forward

    def capture(h):
        rec.calls += 1
        rec.hidden = h
        rec.autocast = _autocast_dtype(h.device.type)
        rec.returned = real(h) if passthrough else h
        return rec.returned

    linear.forward = capture
    try:
        yield rec
    finally:
        if had_own:
            linear.forward = own
        else:
            del linear.forward


@dataclass
class Features:
    """The network's output for one call: ``logits`` [B, L, V], or the projection's input
    ``hidden`` [B, L, D] with the dtype the projection ran in (the autocast dtype, if any)."""

    logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    head_dtype: torch.dtype | None = None

    def head_rows(self, linear: nn.Linear, rows: torch.Tensor) -> torch.Tensor:
        """Logits [R, V] of the flattened positions ``rows``."""
        if self.logits is not None:
            return self.logits.reshape(-1, self.logits.shape[-1])[rows]
        h = self.hidden.reshape(-1, self.hidden.shape[-1])[rows]
        weight, bias = head_params(linear, self.head_dtype or h.dtype)
        return torch.nn.functional.linear(h.to(weight.dtype), weight, bias)


def head_params(linear: nn.Linear, dtype: torch.dtype):
    """The projection's weight and bias in the dtype it runs in (autocast casts both)."""
    bias = linear.bias.to(dtype) if linear.bias is not None else None
    return linear.weight.to(dtype), bias


class Network:
    """Calls ``diffusion.forward`` for raw logits or, once validated, for the projection's input.

    ``fuse``: None (fuse when valid), False (never) or True (fuse, and raise if it is not valid).
    """

    def __init__(self, diffusion, fuse: bool | None):
        self.linear = find_output_linear(diffusion.backbone) if fuse is not False else None
        if fuse and self.linear is None:
            raise ValueError(
                "mdfast.integrations.mdlm: fuse_output_layer=True but the backbone "
                f"({type(diffusion.backbone).__name__}) has no nn.Linear at "
                f"{' or '.join(_HEAD_PATHS)}"
            )
        if self.linear is not None and _sharded(diffusion.backbone, self.linear):
            if fuse:
                raise ValueError(
                    "mdfast.integrations.mdlm: fuse_output_layer=True but the output layer's "
                    "weight is sharded (FSDP / DTensor)"
                )
            self.linear = None
        self.fuse = fuse
        self.valid: bool | None = None if self.linear is not None else False

    def __call__(self, diffusion, x: torch.Tensor, sigma) -> Features:
        if not self.valid:
            if self.valid is False:
                with raw_logits(diffusion):
                    return Features(logits=diffusion.forward(x, sigma))
            return self._first_call(diffusion, x, sigma)
        with raw_logits(diffusion), _capture(self.linear, passthrough=False) as rec:
            out = diffusion.forward(x, sigma)
        if out is not rec.returned or rec.calls != 1:
            raise RuntimeError(
                "mdfast.integrations.mdlm: the backbone no longer returns its output layer's "
                "result unchanged (it did on the first call); patch with "
                "fuse_output_layer=False"
            )
        return Features(hidden=rec.hidden, head_dtype=rec.autocast)

    def _first_call(self, diffusion, x, sigma) -> Features:
        with raw_logits(diffusion), _capture(self.linear, passthrough=True) as rec:
            out = diffusion.forward(x, sigma)
        h = rec.hidden
        self.valid = (
            not _sharded(diffusion.backbone, self.linear)  # wrapped since the patch (FSDP setup)
            and rec.calls == 1
            and out is rec.returned
            and isinstance(h, torch.Tensor)
            and tuple(h.shape[:-1]) == tuple(x.shape)
            and h.shape[-1] == self.linear.in_features
        )
        if self.fuse and not self.valid:
            raise ValueError(
                "mdfast.integrations.mdlm: fuse_output_layer=True but the backbone's output is "
                "not output_layer.linear's output for the whole [B, L] input (post-processed, "
                "or the projection is called more than once)"
            )
        return Features(logits=out)
