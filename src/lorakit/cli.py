"""The one command-line dispatcher: ``lorakit SUBCOMMAND ...``, ``python -m lorakit SUBCOMMAND ...`` and
``python main.py [SUBCOMMAND] ...`` (where a missing subcommand means ``train``).

Each subcommand is a function ``f(argv: list[str]) -> int``, named as ``"module"`` (its ``main``) or
``"module:function"``, and imported only when used, so ``lorakit score`` does not pay for the
training stack and vice versa.
"""

from __future__ import annotations

import importlib
import sys

from lorakit.errors import LorakitError, step_of

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {}


def register(name: str, module: str, help_text: str) -> None:
    COMMANDS[name] = (module, help_text)


# Registered subcommands (one line each; keep sorted).
# register("NAME", "lorakit.MODULE", "one-line help")
register("convert", "lorakit.convert", "turn a loralib / LoRA-paper checkpoint into a PEFT adapter directory")
register("score", "lorakit.score", "score any system's outputs with the official NLG/NLU metrics")
register("train", "lorakit.train.commands:train_main",
         "run a fine-tuning experiment from a JSON config (= python main.py)")
register("eval", "lorakit.train.commands:eval_main", "evaluate a run's checkpoint or the average of its last K")
register("export", "lorakit.train.commands:export_main",
         "write a trained language-model run (LoRA merged) as a standalone Hugging Face model folder")
register("generate", "lorakit.train.commands:generate_main",
         "predict a split with a trained run: predictions, references and metrics JSON")
register("inspect", "lorakit.train.commands:inspect_main", "parameters, ranks and adapter size, without training")
register("report", "lorakit.train.report", "method x task table (median, mean +- std over seeds) as Markdown and PNG")
register("data", "lorakit.data.prepare", "data prepare TASK --to DIR [--from PATH]: fetch a task's files, checked")
register("lm-eval", "lorakit.lm_eval", "perplexity, bits per char/byte of an LM on a text corpus (--mlm: pseudo-ppl)")


def _usage() -> str:
    width = max((len(n) for n in COMMANDS), default=0)
    lines = ["usage: lorakit SUBCOMMAND [ARGS...]", "", "subcommands:"]
    lines += [f"  {name.ljust(width)}  {help_text}" for name, (_, help_text) in sorted(COMMANDS.items())]
    lines += ["", "Run `lorakit SUBCOMMAND --help` for a subcommand's options; `--debug` (anywhere) shows the",
              "Python traceback of an error. Exit status: 0 success, 1 a data or run error, 2 a bad command",
              "line or config, 130 interrupted."]
    return "\n".join(lines)


# Start-up warnings of dependencies that say nothing about the user's run: transformers imports torchao
# whenever it is installed (the `quant` extra), and torchao then reports its CUDA-only kernels as not loadable on
# a CPU build, and torch deprecates how torchao registers two enums. Dropped unless --debug.
_DEPENDENCY_NOISE = {"torchao": ("Failed to load ",), "torch.utils._pytree": ("is an Enum subclass",)}


def _keep_record(record, noise: tuple[str, ...]) -> bool:
    """A logging filter: False (drop) for a record whose message contains one of the ``noise`` fragments."""
    return not any(fragment in record.getMessage() for fragment in noise)


def _drop_dependency_noise() -> None:
    import functools
    import logging

    for logger_name, noise in _DEPENDENCY_NOISE.items():
        logger = logging.getLogger(logger_name)
        if not any(getattr(f, "func", None) is _keep_record for f in logger.filters):  # once per process
            logger.addFilter(functools.partial(_keep_record, noise=noise))


def main(argv: list[str] | None = None, default: str | None = None) -> int:
    """Run ``argv[0]``'s subcommand on the rest; return its exit status. With ``default`` (``main.py``: train),
    arguments that do not start with a subcommand name all go to that subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if default is not None and (not argv or argv[0] not in COMMANDS):
        argv = [default, *argv]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"lorakit: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    debug = "--debug" in rest
    rest = [a for a in rest if a != "--debug"]
    if not debug:
        _drop_dependency_noise()
    module_name, _, function = COMMANDS[name][0].partition(":")
    try:
        command = getattr(importlib.import_module(module_name), function or "main")
        return int(command(rest) or 0)
    except LorakitError as err:
        if debug:
            raise
        print(f"lorakit {name}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"\nlorakit {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug or an unforeseen input: one line, the traceback on request
        if debug:
            raise
        return _unexpected(name, err)


def _unexpected(name: str, err: Exception) -> int:
    where = step_of(err)
    text = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
    print(f"lorakit {name}: unexpected {type(err).__name__}{f' while {where}' if where else ''}"
          f"{f': {text}' if text else ''}\nThis is likely a bug or an input lorakit does not check yet; "
          f"rerun with --debug for the Python traceback and report it.", file=sys.stderr)
    return 1

if __name__ == "__main__":
    sys.exit(main())
