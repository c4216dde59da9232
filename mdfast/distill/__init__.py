"""Few-step distillation of masked diffusion models, on the trainer of :mod:`mdfast.train`.

* :class:`SDTT` — SDTT (MDLM student) and IMDM's IM-SDTT (IMDM student): a frozen teacher's
  ``num_distill_steps`` steps become one student step; rounds double the step size
  (:class:`RoundSchedule`) and copy the student into the teacher (:mod:`mdfast.distill.sdtt`).
* :func:`generate_coupling`, :class:`ReDi` — ReDi / IM-ReDi: a teacher's (x_t, t, ε seed) → x̂₀
  couplings, written as memory-mapped arrays (:class:`CouplingFile`), and the NELBO towards x̂₀
  with ε regenerated from the stored seed (:mod:`mdfast.distill.redi`).
* :func:`transfer_weights` — start a student from a teacher's backbone (an MDLM DiT into an IMDM
  backbone keeps the zero-initialised ε branch).

The command line is ``mdfast distill sdtt|redi-data|redi PRESET ...``.
"""

from mdfast.distill.coupling import CouplingFile, CouplingWriter, read_coupling_header
from mdfast.distill.redi import ReDi, generate_coupling
from mdfast.distill.rounds import RoundSchedule
from mdfast.distill.sdtt import DIVERGENCES, SDTT, divergence, subs_log_probs, teacher_targets
from mdfast.distill.weights import transfer_weights

__all__ = [
    "DIVERGENCES",
    "SDTT",
    "CouplingFile",
    "CouplingWriter",
    "ReDi",
    "RoundSchedule",
    "divergence",
    "generate_coupling",
    "read_coupling_header",
    "subs_log_probs",
    "teacher_targets",
    "transfer_weights",
]
