"""Start a student from a teacher's backbone, checking that they fit."""

from __future__ import annotations

from torch import nn

__all__ = ["backbone_kind", "transfer_weights"]


def backbone_kind(model: nn.Module) -> str:
    """``"imdm"`` for a backbone with an ε branch, ``"mdlm"`` otherwise."""
    return "imdm" if hasattr(model, "eps_mlp") else "mdlm"


def _dit(model: nn.Module) -> nn.Module:
    return model.dit if backbone_kind(model) == "imdm" else model


def transfer_weights(src: nn.Module, dst: nn.Module, *, what: str = "the checkpoint") -> None:
    """Copy ``src``'s weights into ``dst``: IMDM → IMDM and MDLM → MDLM as they are; an MDLM DiT
    into an IMDM backbone's DiT (its ε branch stays zero-initialised, so the student starts as
    exactly the MDLM). An IMDM checkpoint cannot become an MDLM student, and the vocabularies
    and shapes must agree: a ``ValueError`` names the option."""
    sk, dk = backbone_kind(src), backbone_kind(dst)
    if sk == "imdm" and dk == "mdlm":
        raise ValueError(
            f"mdfast: {what} is an IMDM model but the run's student is MDLM; set "
            "objective.base=imdm (or objective.name=imdm) to distil it"
        )
    s_vocab = getattr(getattr(_dit(src), "config", None), "vocab_size", None)
    d_vocab = getattr(getattr(_dit(dst), "config", None), "vocab_size", None)
    if s_vocab is not None and d_vocab is not None and s_vocab != d_vocab:
        raise ValueError(
            f"mdfast: {what} has vocabulary size {s_vocab} but the run has "
            f"model.vocab_size={d_vocab}"
        )
    target = dst if sk == dk else _dit(dst)
    state = src.state_dict()
    mine = target.state_dict()
    missing = sorted(set(mine) - set(state))
    extra = sorted(set(state) - set(mine))
    if missing or extra:
        raise ValueError(
            f"mdfast: {what} does not fit the run's model (missing {missing[:3]}, unexpected "
            f"{extra[:3]}); use the checkpoint's model.* settings"
        )
    for k, v in state.items():
        if tuple(v.shape) != tuple(mine[k].shape):
            raise ValueError(
                f"mdfast: {what} has {k} of shape {list(v.shape)}, the run's model "
                f"{list(mine[k].shape)}; use the checkpoint's model.* settings (hidden_dim, "
                "n_blocks, noise_dim, ...)"
            )
    target.load_state_dict(state)
