"""`harivo ui`: the arguments of the web app, which `harivo.ui` serves."""

import argparse

from ..request import DTYPES, MODEL_OPTIONS, add_arguments


def add_command(commands) -> None:
    ui = commands.add_parser(
        "ui", help="A local web app (Gradio) on one model: prompt, settings, the video and how it was made."
    )
    add_arguments(ui, (*MODEL_OPTIONS, "ip_adapter"))
    ui.add_argument(
        "--controlnet", action="append", default=None, metavar="DIR",
        help="A ControlNet for condition videos given in the page (default with the embedded model: the Shapes one).",
    )  # fmt: skip
    ui.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps, ... (default: cuda if available).")
    ui.add_argument("--dtype", choices=DTYPES, default=None, help="Default: float16 on GPU, float32 on CPU.")
    ui.add_argument("--host", default="127.0.0.1", help="Address to serve on (default: 127.0.0.1, this machine only).")
    ui.add_argument("--port", type=int, default=7860, help="Port (default: 7860).")
    ui.add_argument("--share", action="store_true", help="Also ask Gradio for a public link (off by default).")
    ui.add_argument(
        "-o",
        "--output-dir",
        default="outputs/ui",
        help="Where the videos and their settings go (default: outputs/ui).",
    )
    ui.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..ui import launch

    model = {name: getattr(args, name) for name in (*MODEL_OPTIONS, "ip_adapter", "controlnet", "device", "dtype")}
    launch(model, args.output_dir, host=args.host, port=args.port, share=args.share)
