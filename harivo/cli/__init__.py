"""Command line: `harivo generate`, `ui`, `train`, `precompute`, `dreambooth`, `motion-lora`, `eval` and
`eval-videos`, a module per command (or pair of commands). The CLI parses and prints; what a video request means lives in `harivo.request` and
`harivo.generation`, what training does in `harivo.training`."""

import argparse
import sys

from ..errors import USER_ERRORS, describe_error
from ..request import in_flags
from . import evaluation, generate, training, ui
from .generate import parse_generate

# Only the standard library and harivo's light modules are imported here: `harivo --help` answers at once, and torch,
# diffusers and transformers load when a command needs them.

__all__ = ["build_parser", "main", "parse_generate"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harivo", description="HARIVO text-to-video on a frozen SD-1.5-class model.")
    commands = parser.add_subparsers(dest="command", required=True)
    generate.add_command(commands)
    evaluation.add_commands(commands)
    training.add_commands(commands)
    ui.add_command(commands)
    parser.subcommands = commands.choices  # `--from` re-reads the generate parser with the file's settings
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "generate" and args.from_settings:
            args = parse_generate(parser, argv, args)
        if args.command != "ui":  # the UI quiets them itself, once Gradio is there
            from ..generation import quiet_libraries

            quiet_libraries()
        args.run(args)
    except USER_ERRORS as error:
        message = describe_error(error)
        if args.command in ("generate", "ui"):
            message = in_flags(message)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # Ctrl-C: no traceback; what was written stays whole (videos and checkpoints)
        print(f"error: interrupted (harivo {args.command} stopped).", file=sys.stderr)
        raise SystemExit(130) from None
