"""``python -m mdfast.cli`` (and ``torchrun ... -m mdfast.cli``): the ``mdfast`` command."""

import sys

from mdfast.cli import main

sys.exit(main())
