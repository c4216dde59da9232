"""The layering rule: generic packages never import experiment code.

Generic = every module of ``mdfast`` outside ``mdfast/experiments/`` and the ``mdfast`` command
(``mdfast/cli/``): the ops, reference, schedules, rng, losses, diffusion, sampling, models,
train, metrics and data packages, whatever modules they hold now or later. Only the deprecated
aliases of moved experiment modules (``SHIMS``) may import ``mdfast.experiments``, and they must be
pure re-exports that warn. Experiments are found lazily by the registry, so importing the
registry machinery loads no experiment and experiment ↔ builder imports form no cycle.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "mdfast"

# Deprecated aliases of modules that moved into mdfast/experiments/mnist/ (old import paths).
SHIMS = {
    "mdfast/data/mnist.py",
    "mdfast/diffusion/ambient.py",
    "mdfast/metrics/digit_frechet.py",
    "mdfast/models/mnist_unet.py",
}


def _generic_files() -> list[Path]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("mdfast/experiments/", "mdfast/cli/")):
            continue
        out.append(path)
    return out


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_names(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement and every constant-string
    ``importlib.import_module`` / ``__import__`` / ``alias_module`` target in the file of module
    ``module``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args:
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            # import_module / __import__ (module first), alias_module(__name__, module)
            index = {"import_module": 0, "__import__": 0, "alias_module": 1}.get(name)
            if index is not None and len(node.args) > index:
                arg = node.args[index]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append((node.lineno, arg.value))
    return found


def _is_experiment(module: str) -> bool:
    return module == "mdfast.experiments" or module.startswith("mdfast.experiments.")


def test_generic_sources_import_no_experiment():
    files = _generic_files()
    assert len(files) > 30  # the walk found the package
    bad = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel in SHIMS:
            continue
        found = _imported_names(path, _module_name(path))
        bad += [f"{rel}:{line}: {m}" for line, m in found if _is_experiment(m)]
    assert not bad, "generic modules import experiment code:\n" + "\n".join(bad)


def test_the_source_check_sees_every_import_form(tmp_path):
    """The AST check flags absolute, from-, relative and importlib imports of experiments."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import mdfast.experiments.mnist\n"
        "from mdfast.experiments import registry\n"
        "from mdfast import experiments\n"
        "from ..experiments.mnist import model\n"
        "import importlib\n"
        "importlib.import_module('mdfast.experiments.mnist.data')\n"
        "from mdfast.models import dit\n"
        "alias_module(__name__, 'mdfast.experiments.mnist.model')\n"
    )
    hits = [(line, m) for line, m in _imported_names(probe, "mdfast.models.probe")]
    assert {line for line, m in hits if _is_experiment(m)} == {1, 2, 3, 4, 6, 8}, hits


def test_shims_are_pure_deprecated_aliases():
    """Each alias holds only a docstring and ``alias_module(__name__, "<new path>")`` (the old
    module becomes the new one), and warns on import."""
    for rel in sorted(SHIMS):
        tree = ast.parse((ROOT / rel).read_text())
        body = [
            n
            for n in tree.body
            if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
        ]
        assert ast.unparse(body[0]) == "from mdfast._deprecation import alias_module", rel
        assert len(body) == 2 and ast.unparse(body[1]).startswith(
            "alias_module(__name__, 'mdfast.experiments."
        ), rel
    code = (
        "import importlib, json, warnings\n"
        "out = {}\n"
        f"for name in {sorted(_module_name(ROOT / r) for r in SHIMS)!r}:\n"
        "    with warnings.catch_warnings(record=True) as w:\n"
        "        warnings.simplefilter('always')\n"
        "        importlib.import_module(name)\n"
        "    out[name] = [str(x.message) for x in w if x.category is DeprecationWarning]\n"
        "print(json.dumps(out))\n"
    )
    warned = json.loads(_python(code).splitlines()[-1])
    assert set(warned) == {_module_name(ROOT / r) for r in SHIMS}
    for name, messages in warned.items():
        assert any(f"{name} is deprecated" in m for m in messages), (name, messages)


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_importing_generic_modules_loads_no_experiment():
    """In a fresh interpreter, import every generic module in turn; none may bring an
    ``mdfast.experiments*`` module into ``sys.modules``."""
    names = [
        _module_name(p) for p in _generic_files() if p.relative_to(ROOT).as_posix() not in SHIMS
    ]
    code = (
        "import importlib, json, sys\n"
        f"names = {names!r}\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "    loaded = sorted(m for m in sys.modules if m.startswith('mdfast.experiments'))\n"
        "    if loaded:\n"
        "        print(json.dumps([name, loaded]))\n"
        "        break\n"
        "else:\n"
        "    print(json.dumps(None))\n"
    )
    offender = json.loads(_python(code).splitlines()[-1])
    assert offender is None, f"importing {offender[0]} loaded {offender[1]}"


def test_experiments_load_lazily_without_cycles():
    """The registry machinery imports no experiment until a lookup; an experiment imported
    first (before the registry) imports cleanly; the MNIST presets are then found."""
    code = (
        "import sys, json\n"
        "import mdfast.experiments, mdfast.experiments.build\n"
        "eager = sorted(m for m in sys.modules if m.startswith('mdfast.experiments.mnist'))\n"
        "names = mdfast.experiments.preset_names()\n"
        "print(json.dumps([eager, names]))\n"
    )
    eager, names = json.loads(_python(code).splitlines()[-1])
    assert eager == []
    assert {"mnist-demo", "mnist-baseline", "mnist-naive", "mnist-ambient"} <= set(names)
    assert {"tiny-mdlm", "interpolant-imagenet-uvit"} <= set(names)
    code = (
        "import mdfast.experiments.mnist.registration\n"
        "from mdfast.experiments import build, get, resolve\n"
        "cfg = resolve(get('mnist-demo'))\n"
        "model = build.build_model(cfg['model'])\n"
        "objective = build.build_objective(cfg['objective'], model)\n"
        "print(type(model).__name__, type(objective).__name__)\n"
    )
    assert _python(code).split()[-2:] == ["MNISTUNet", "MDLMBaseline"]


def test_old_import_paths_still_work():
    """The names that were public before the move resolve to the moved objects."""
    import warnings

    import mdfast.data
    import mdfast.diffusion
    import mdfast.metrics
    import mdfast.models
    from mdfast.experiments import mnist
    from mdfast.experiments.mnist import data, demo, frechet, model, objectives, table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert mdfast.models.MNISTUNet is model.MNISTUNet
        assert mdfast.data.mnist is data and mdfast.diffusion.ambient is objectives
        assert mdfast.data.mnist.CorruptedMNIST is data.CorruptedMNIST
        assert mdfast.data.mnist.MASK == data.MASK == 2
        assert mdfast.diffusion.ambient.AmbientMDLM is objectives.AmbientMDLM
        assert mdfast.diffusion.ambient.pixel_ce is objectives.pixel_ce
        assert mdfast.metrics.digit_frechet.digit_frechet is frechet.digit_frechet
        assert (
            mdfast.metrics.digit_frechet.frechet_distance
            is mdfast.metrics.frechet.frechet_distance_features
        )
    from mdfast.experiments import mnist_demo, mnist_table

    assert mnist_demo.main is demo.main and mnist_table.main is table.main
    for name in ("train_experiment", "sample", "evaluate", "save_grid", "load_checkpoint",
                 "save_checkpoint", "training_data", "make_objective", "train_main",
                 "sample_main", "MODEL_PRESETS", "EXPERIMENTS", "PRESETS", "register"):  # fmt: skip
        assert hasattr(mnist, name), name
