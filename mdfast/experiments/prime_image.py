"""``python -m mdfast.experiments.prime_image``: the MDM-Prime image seed's command line (its
``main.py`` / ``eval.py`` / ``parallel_sampling.py`` flags); see
:mod:`mdfast.experiments.prime.seed_cli`."""

from mdfast.experiments.prime.seed_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
