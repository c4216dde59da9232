"""``python -m mdfast.experiments.imdm_synthetic``: the synthetic-task pipeline (see
:mod:`~.pipeline`)."""

import sys

from mdfast.experiments.imdm_synthetic.pipeline import main

sys.exit(main())
