"""Run every benchmark module in bench/ (each has ``main(argv)``); ``--only name`` picks some."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="benchmark module names (default: all)")
    args, rest = parser.parse_known_args()
    names = [
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name not in ("common", "__main__") and not m.name.startswith("test_")
    ]
    for name in sorted(args.only or names):
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "main"):  # a helper module (e.g. a stand-in model), not a benchmark
            continue
        print(f"=== bench.{name}")
        module.main(rest)


if __name__ == "__main__":
    main()
