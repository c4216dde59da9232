"""The synthetic task's result table (Markdown) and the verdict on IMDM's claim."""

from __future__ import annotations

import math

__all__ = ["claim_reproduced", "markdown_table"]


def claim_reproduced(results: dict) -> tuple[bool, str]:
    """IMDM's claim, as tested here: at one step IM-ReDi's samples are (almost) all-equal
    (fraction ≥ 0.9) while the first token stays spread (entropy ≥ 0.9 log V), and both
    ablations stay far below (all-equal < 0.5)."""
    m, logv = results["metrics"], results["log_vocab"]
    one = min(results["steps"])
    redi = _get(m["IM-ReDi"], one)
    ablations = [_get(m[k], one)["all_equal"] for k in ("IM-ReDi, ignore_seed", "IM-ReDi, as_mdlm")]
    ok = redi["all_equal"] >= 0.9 and redi["first_token_entropy"] >= 0.9 * logv
    ok = ok and max(ablations) < 0.5
    why = (f"IM-ReDi at {one} step(s): all-equal {redi['all_equal']:.3f} (claim: → 1), "
           f"first-token entropy {redi['first_token_entropy']:.2f} nats (log V = {logv:.2f}); "
           f"ablations' all-equal {', '.join(f'{a:.3f}' for a in ablations)}")  # fmt: skip
    return ok, why


def _fmt(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "—"
    return f"{v:.3f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


def _get(by_steps: dict, k):
    return by_steps[k] if k in by_steps else by_steps[str(k)]


def markdown_table(results: dict, main_steps: int = 2) -> str:
    """The table at the first ``main_steps`` step counts (all-equal fraction, first-token
    entropy, total correlation), then, when more step counts were run, the all-equal fraction
    and first-token entropy at every step count; then the verdict."""
    steps = results["steps"][:main_steps]
    head = ["model"] + [f"all-equal @{k}" for k in steps] + [f"H(first) @{k}" for k in steps]
    head += [f"TC bits @{k}" for k in steps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ideal = results["ideal_mdlm_all_equal"]
    logv = results["log_vocab"]
    row = ["ideal MDLM (closed form)"] + [_fmt(_get(ideal, k)) for k in steps]
    lines.append("| " + " | ".join(row + [_fmt(logv)] * len(steps) + ["—"] * len(steps)) + " |")
    for label, by_steps in results["metrics"].items():
        get = [_get(by_steps, k) for k in steps]
        cells = [_fmt(g["all_equal"]) for g in get] + [_fmt(g["first_token_entropy"])
                                                       for g in get]  # fmt: skip
        cells += [_fmt(g["tc_bits"]) for g in get]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    if len(results["steps"]) > main_steps:
        lines += ["", _sweep(results)]
    ok, why = claim_reproduced(results)
    lines.append("")
    lines.append(f"Claim {'reproduced' if ok else 'NOT reproduced'}: {why}.")
    return "\n".join(lines)


def _sweep(results: dict) -> str:
    """All-equal fraction / first-token entropy (nats) at every step count."""
    steps = results["steps"]
    head = ["model"] + [f"@{k}" for k in steps]
    lines = ["All-equal fraction / H(first) by sampling steps:", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    ideal = results["ideal_mdlm_all_equal"]
    logv = _fmt(results["log_vocab"])
    lines.append("| ideal MDLM | " + " | ".join(f"{_fmt(_get(ideal, k))} / {logv}"
                                               for k in steps) + " |")  # fmt: skip
    for label, by_steps in results["metrics"].items():
        cells = [f"{_fmt(_get(by_steps, k)['all_equal'])} / "
                 f"{_fmt(_get(by_steps, k)['first_token_entropy'])}" for k in steps]  # fmt: skip
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)
