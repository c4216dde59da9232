"""The op surface of mdfast: thin wrappers over ``torch.ops.mdfast.*``, one module per op family
as in ``csrc/``:

* :mod:`mdfast.ops.philox` — ``philox4x32``, ``uniform``, ``uniform_rows``
* :mod:`mdfast.ops.masked_ce` — ``masked_ce``, ``linear_masked_ce``
* :mod:`mdfast.ops.sampling` — ``sample_x0``, ``mask_step``
* :mod:`mdfast.ops.prime` — ``prime_ce``, ``prime_sample_step``

Each family module states the argument contract of its ops once and runs it before either path:
the compiled kernel when one exists for the tensors' device, otherwise the pure-PyTorch twin in
:mod:`mdfast.reference`; so a bad argument raises the same error, naming it, on both. Checks that
need tensor values follow :func:`set_validation`. The modules also register the compiled ops'
fake (meta) implementations and autograd formulas, so ``torch.compile(fullgraph=True)`` traces
through every op. (``mdfast.ops.masked_ce`` is the op; its family module is reached by
``from mdfast.ops.masked_ce import ...``.)
"""

from __future__ import annotations

from mdfast.ops._validation import get_validation, set_validation, validation
from mdfast.ops.masked_ce import linear_masked_ce, masked_ce
from mdfast.ops.philox import philox4x32, uniform, uniform_rows
from mdfast.ops.prime import prime_ce, prime_sample_step
from mdfast.ops.sampling import mask_step, sample_x0

__all__ = [
    "get_validation",
    "linear_masked_ce",
    "mask_step",
    "masked_ce",
    "philox4x32",
    "prime_ce",
    "prime_sample_step",
    "sample_x0",
    "set_validation",
    "uniform",
    "uniform_rows",
    "validation",
]
