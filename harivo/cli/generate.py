"""`harivo generate`: its arguments are the request's options (`harivo.request`), plus `--from` a settings file."""

import argparse
from pathlib import Path

from ..request import GenerateRequest, add_arguments


def add_command(commands) -> None:
    command = commands.add_parser("generate", help="Generate a video from a text prompt.")
    command.add_argument(
        "--from", dest="from_settings", default=None, metavar="SETTINGS",
        help="Make a video again from the settings another run wrote (out.mp4.json, or the video itself); options"
        " given as well override the file's (e.g. --seed).",
    )  # fmt: skip
    add_arguments(command)
    command.set_defaults(run=run)


def parse_generate(parser: argparse.ArgumentParser, argv: list[str] | None, args: argparse.Namespace):
    """`harivo generate --from SETTINGS ...`: the file's options, overridden by those given on the command line."""
    from ..settings import check_options, read_settings

    command = parser.subcommands["generate"]
    actions = {action.dest: action for action in command._actions if action.dest != "help"}
    options = check_options(read_settings(args.from_settings, set(actions)), actions, f"--from {args.from_settings}")
    command.set_defaults(**options)
    try:
        args = parser.parse_args(argv)
    finally:
        command.set_defaults(**{action.dest: action.default for action in command._actions if action.dest in options})
    if args.output is None:  # beside the original, never over it
        source = Path(args.from_settings)
        name = source.name.removesuffix(".json")
        original = source.with_name(name)
        args.output = str(original.with_name(f"{original.stem}-again{original.suffix or '.mp4'}"))
    return args


def run(args: argparse.Namespace) -> None:
    from ..generation import generate

    generate(GenerateRequest.from_namespace(args))
