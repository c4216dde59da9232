"""SDTT's round schedule: the teacher's step size doubles every ``round_steps`` optimiser steps.

Round r (steps [r·R, (r+1)·R)) distils ``num_distill_steps`` = n teacher steps of size
dt_r = (1 − ε)/T₀ · nʳ into one student step of size n·dt_r (T₀ = ``start_steps``, ε = the
objective's ``sampling_eps``, as SDTT / IMDM's ``IMSDTT``). After round r the student samples
with T₀/n^(r+1) steps. At every round boundary the student is copied into the teacher. A round
runs only while its student still takes at least ``min_steps`` steps, T₀/n^(r+1) ≥ min_steps; the
run stops after the last such round (``fewer than one step remains``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RoundSchedule"]


def _positive_int(value, option: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"mdfast: option '{option}' must be an int >= {low}, got {value!r}")
    return value


@dataclass(frozen=True)
class RoundSchedule:
    """The rounds of an SDTT run; bad values raise a ``ValueError`` naming the option."""

    start_steps: int = 1024
    num_distill_steps: int = 2
    round_steps: int = 10_000
    min_steps: int = 1
    sampling_eps: float = 1e-3

    def __post_init__(self):
        _positive_int(self.start_steps, "objective.start_steps", 1)
        _positive_int(self.num_distill_steps, "objective.num_distill_steps", 2)
        _positive_int(self.round_steps, "objective.round_steps", 1)
        _positive_int(self.min_steps, "objective.min_steps", 1)
        if self.rounds == 0:
            raise ValueError(
                f"mdfast: option 'objective.start_steps'={self.start_steps} leaves zero steps: "
                f"its first round distils {self.num_distill_steps} teacher steps into a student "
                f"that takes {self.start_steps / self.num_distill_steps:g} steps, fewer than "
                f"'objective.min_steps'={self.min_steps}"
            )

    @property
    def rounds(self) -> int:
        """Rounds whose student takes at least ``min_steps`` steps."""
        r, n = 0, self.num_distill_steps
        while self.start_steps >= self.min_steps * n ** (r + 1):
            r += 1
        return r

    @property
    def total_steps(self) -> int:
        """Optimiser steps until fewer than ``min_steps`` sampling steps would remain."""
        return self.rounds * self.round_steps

    def round_of(self, step: int) -> int:
        """The round of optimiser step ``step`` (0-based)."""
        r = step // self.round_steps
        if r >= self.rounds:
            raise ValueError(
                f"mdfast: step {step + 1} is past the last round: the schedule (objective."
                f"start_steps={self.start_steps}, num_distill_steps={self.num_distill_steps}, "
                f"round_steps={self.round_steps}, min_steps={self.min_steps}) ends after "
                f"{self.total_steps} steps; set train.steps <= {self.total_steps}"
            )
        return r

    def dt(self, r: int) -> float:
        """The teacher's step size in round ``r``."""
        return (1 - self.sampling_eps) / self.start_steps * self.num_distill_steps**r

    def student_steps(self, r: int) -> float:
        """Sampling steps of the student after round ``r``: T₀/n^(r+1)."""
        return self.start_steps / self.num_distill_steps ** (r + 1)
