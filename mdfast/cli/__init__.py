"""The ``mdfast`` command: ``mdfast train|eval|sample|eval-samples|distill|prepare-text PRESET
[section.key=value ...]``.

Presets live in :mod:`mdfast.experiments`; any field can be overridden with a dotted
``section.key=value`` argument (``--print-config`` shows them all). Distributed training: launch
the same command under ``torchrun --nproc_per_node=N -m mdfast.cli train ...``.

One module per command (:mod:`.train`, :mod:`.prepare`, :mod:`.evaluate`, :mod:`.sample`,
:mod:`.distill`), the options in :mod:`.parser`, what they share (presets with overrides, a run's
checkpoint and objective, the device) in :mod:`.runs`; :func:`main` dispatches and turns bad
input into one ``error: ...`` line and a non-zero exit code.
"""

from __future__ import annotations

import os
import sys

from mdfast.cli.distill import distill_command
from mdfast.cli.evaluate import eval_command, eval_samples_command
from mdfast.cli.parser import build_parser
from mdfast.cli.prepare import prepare_text_command
from mdfast.cli.sample import sample_command
from mdfast.cli.train import train_command

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from mdfast.experiments import ConfigError
    from mdfast.train import CheckpointError, NonFiniteLossError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may also follow options (`eval p --ckpt X key=v`): argparse leaves those over
    bad = [e for e in extra if e.startswith("-") or "=" not in e]
    if bad or (extra and args.command in ("presets", "eval-samples")):
        parser.error(f"unrecognized arguments: {' '.join(bad or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    clean = False  # set once every rank is known to leave normally (or with the same error)
    try:
        if args.command == "presets":
            from mdfast.experiments import preset_names

            print("\n".join(preset_names()))
            return 0
        cmds = {"train": train_command, "eval": eval_command, "sample": sample_command,
                "distill": distill_command, "eval-samples": eval_samples_command,
                "prepare-text": prepare_text_command}  # fmt: skip
        rc = cmds[args.command](args)
        clean = True
        return rc
    except (ConfigError, CheckpointError, NonFiniteLossError, FileNotFoundError,
            FileExistsError, ValueError, KeyError) as e:  # fmt: skip
        msg = str(e).strip("\"'")
        if (
            isinstance(e, (ValueError, KeyError))
            and not isinstance(e, ConfigError)
            and (not msg.startswith("mdfast"))
        ):
            raise  # not one of our bad-input errors: a bug, keep the traceback
        clean = True  # raised identically on every rank (shared files, all-reduced loss)
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"error: {msg}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    finally:
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                if clean:
                    dist.barrier()  # leave together: gloo aborts if a peer vanishes mid-teardown
                dist.destroy_process_group()
        except Exception:
            pass
