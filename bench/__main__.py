"""Run every benchmark module in bench/ (each has ``main(argv)``); ``--only name`` picks some.
Other arguments (``--device``, ``--quick``, ...) go to every module. The kernel benchmarks run
first and the long end-to-end ones last."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path

ORDER = ["masked_ce", "prime", "train_step", "sampling"]


def modules() -> list[str]:
    found = {
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name not in ("common", "peers", "__main__") and not m.name.startswith("test_")
    }
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="benchmark module names (default: all)")
    args, rest = parser.parse_known_args()
    for name in args.only or modules():
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "main"):  # a helper module (e.g. a stand-in model), not a benchmark
            continue
        print(f"=== bench.{name}", flush=True)
        module.main(rest)


if __name__ == "__main__":
    main()
