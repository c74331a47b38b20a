"""
`harivo ui`: a local web app (Gradio) on one model in memory.

Each click builds the `harivo generate` command line of the form and runs it through the CLI's own `generate`, on the
model the app holds: the same checks, the same one-line errors (shown in the page), the same video and settings file
(`<video>.json`, shown beside the video). Several tabs queue on the one model.
"""

import argparse
import contextlib
import hashlib
import io
import itertools
import os
import random
import re
import shutil
import threading
import time
from pathlib import Path

from .cli import SCHEDULER_NAMES, USER_ERRORS, LoadedModel, _runtime, build_parser, generate, quiet_libraries
from .settings import settings_path

MODEL_DEFAULT = "the model's"
PROMPT_MOTION = "from the prompt"
# Motion in latent pixels per frame (x right, y down), as `--motion DX DY`
MOTIONS = {"none (still)": (0.0, 0.0), "right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
KEYFRAME_LINE = re.compile(r"\s*(\S+?)\s*:\s*(.*)")


class Studio:
    """What the app's clicks share: the launch options, the loaded model and the folder the videos go to."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.output_dir = Path(args.output_dir).expanduser().resolve()
        self.model = LoadedModel()
        self.parser = build_parser()
        self._names, self._names_lock = set(), threading.Lock()  # the output paths given out

    def model_argv(self) -> list[str]:
        """The launch's model options, as `harivo generate` flags."""
        args, argv = self.args, []
        for flag, value in (("--base-model", args.base_model), ("--base-config", args.base_config),
                            ("--adapter", args.adapter), ("--device", args.device), ("--dtype", args.dtype)):  # fmt: skip
            if value:
                argv += [flag, value]
        for lora in args.lora or ():
            argv += ["--lora", lora]
        if args.allow_pickle:
            argv.append("--allow-pickle")
        return argv

    def keep(self, upload: str) -> str:
        """An uploaded file copied into the output folder under its content's hash, so that the settings of the
        video made from it point at a file that stays."""
        source = Path(upload)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
        kept = self.output_dir / "inputs" / f"{digest}{source.suffix.lower()}"
        if not kept.exists():
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, kept)
        return str(kept)

    def new_output(self, seed: int) -> Path:
        """A video path no other click has or had: `<time>-<seed>.mp4`, numbered `-2`, `-3`, ... within a second."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with self._names_lock:
            for number in itertools.count(1):
                path = self.output_dir / (f"{stamp}-{seed}.mp4" if number == 1 else f"{stamp}-{seed}-{number}.mp4")
                if path not in self._names and not path.exists() and not settings_path(path).exists():
                    self._names.add(path)
                    return path

    def command(self, form: dict) -> list[str]:
        """The `harivo generate` arguments of the form's values."""
        if form["seed"] is None:  # a cleared box
            raise ValueError("Seed is empty: give a whole number from 0, or press Random seed.")
        seed = int(form["seed"])
        argv = [form["prompt"] or "", "-o", str(self.new_output(seed)), "--seed", str(seed)]
        argv += ["--num-frames", str(int(form["num_frames"])), "--steps", str(int(form["steps"]))]
        argv += ["--guidance-scale", str(form["guidance_scale"]), "--mg-scale", str(form["mg_scale"])]
        for flag, name in (("--height", "height"), ("--width", "width")):
            if form[name]:
                argv += [flag, str(int(form[name]))]
        if form["negative_prompt"]:
            argv += ["--negative-prompt", form["negative_prompt"]]
        if form["scheduler"] and form["scheduler"] != MODEL_DEFAULT:
            argv += ["--scheduler", form["scheduler"]]
        if form["motion"] in MOTIONS:
            dx, dy = MOTIONS[form["motion"]]
            argv += ["--motion", str(dx * form["speed"]), str(dy * form["speed"])]
        for line in (form["keyframes"] or "").splitlines():
            if line.strip():
                match = KEYFRAME_LINE.fullmatch(line)
                if not match:
                    raise ValueError(f"Keyframe line {line.strip()!r}: write FRAME: PROMPT, e.g. 8: a blue square.")
                argv += ["--prompt-at", match[1], match[2]]
        if form["video"]:
            argv += ["--video", self.keep(form["video"]), "--strength", str(form["strength"])]
        if form["image"]:
            argv += ["--image", self.keep(form["image"]), "--strength", str(form["strength"])]
        if form["control"]:
            argv += ["--control", self.keep(form["control"])]
            if form["control_frames"]:
                argv += ["--control-frames", form["control_frames"].replace(" ", "")]
            for net in self.args.controlnet or ():
                argv += ["--controlnet", net]
        return argv + self.model_argv()

    def parse(self, argv: list[str]) -> argparse.Namespace:
        """`harivo generate ARGV` parsed; a bad value raises the one line argparse would print."""
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                return self.parser.parse_args(["generate", *argv])
        except SystemExit:
            lines = [line for line in errors.getvalue().splitlines() if "error:" in line]
            raise ValueError(lines[-1].split("error:", 1)[1].strip() if lines else "invalid settings") from None

    def generate(self, form: dict, on_step=None) -> tuple[str, str]:
        """Make one video; returns its path and its settings (JSON text)."""
        args = self.parse(self.command(form))
        path = generate(args, self.model, on_step)
        return str(path), settings_path(path).read_text()


def build_app(studio: Studio):
    """The page: the form, a generate button, the video with its download and its settings."""
    import gradio as gr

    def run(*values, progress=gr.Progress()):  # noqa: B008 (gradio reads the default)
        form = dict(zip(names, values))
        progress(0, desc="Starting")
        try:
            video, settings = studio.generate(form, lambda done, total: progress((done, total), desc="Denoising"))
        except USER_ERRORS as error:
            raise gr.Error(" ".join(str(error).split()), print_exception=False) from None
        return video, [video, str(settings_path(video))], settings

    with gr.Blocks(title="harivo") as app:
        app.studio = studio
        gr.Markdown("## harivo: text to video on a frozen image model")
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(
                    label="Prompt", lines=2, placeholder="a large red circle moving right", elem_id="prompt"
                )
                negative = gr.Textbox(label="Negative prompt", elem_id="negative-prompt")
                with gr.Row():
                    frames = gr.Slider(1, 128, value=16, step=1, label="Frames", elem_id="frames")
                    steps = gr.Slider(1, 100, value=25, step=1, label="Steps", elem_id="steps")
                with gr.Row():
                    guidance = gr.Slider(1, 20, value=7.5, step=0.5, label="Guidance scale")
                    mg = gr.Slider(
                        0, 100, value=0, step=5, label="MG alpha (0: off; 10 measured best; the paper's 40)"
                    )
                with gr.Row():
                    height = gr.Number(0, precision=0, label="Height (0: the model's)", minimum=0)
                    width = gr.Number(0, precision=0, label="Width (0: the model's)", minimum=0)
                    scheduler = gr.Dropdown([MODEL_DEFAULT, *SCHEDULER_NAMES], value=MODEL_DEFAULT, label="Sampler")
                with gr.Row():
                    seed = gr.Number(0, precision=0, label="Seed", minimum=0, elem_id="seed")
                    dice = gr.Button("Random seed", size="sm")
                with gr.Row():
                    motion = gr.Dropdown([PROMPT_MOTION, *MOTIONS], value=PROMPT_MOTION, label="Motion")
                    speed = gr.Slider(0, 4, value=1, step=0.25, label="Speed (latent px per frame)")
                with gr.Accordion("Keyframes (prompt travel)", open=False):
                    keyframes = gr.Textbox(
                        label="One per line, FRAME: PROMPT; the prompt above is frame 0's",
                        lines=3, placeholder="8: a large blue circle moving right", elem_id="keyframes",
                    )  # fmt: skip
                with gr.Accordion("Start from a video or an image", open=False):
                    with gr.Row():
                        video_in = gr.Video(label="Video to re-generate", sources=["upload"])
                        image_in = gr.Image(label="First frame to animate", type="filepath", sources=["upload"])
                    strength = gr.Slider(0.05, 1, value=0.8, step=0.05, label="Strength (how much is re-generated)")
                with gr.Accordion("ControlNet", open=False):
                    control = gr.Video(label="Condition video (silhouettes, white on black)", sources=["upload"])
                    control_frames = gr.Textbox(label="Controlled frames, e.g. 0,15 (empty: every frame)")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=2):
                video_out = gr.Video(label="Video", autoplay=True, loop=True, elem_id="video")
                download = gr.File(
                    label="Download (the video and its settings)", file_count="multiple", elem_id="download"
                )
                settings = gr.Code(
                    label="Settings (harivo generate --from this file makes it again)", language="json", max_lines=16
                )
        inputs = {
            "prompt": prompt, "negative_prompt": negative, "num_frames": frames, "steps": steps,
            "guidance_scale": guidance, "mg_scale": mg, "height": height, "width": width, "scheduler": scheduler,
            "seed": seed, "motion": motion, "speed": speed, "keyframes": keyframes, "video": video_in,
            "image": image_in, "strength": strength, "control": control, "control_frames": control_frames,
        }  # fmt: skip
        names = list(inputs)
        dice.click(lambda: random.randrange(2**32), outputs=seed, api_visibility="private")
        button.click(run, inputs=list(inputs.values()), outputs=[video_out, download, settings], api_name="generate")
        prompt.submit(run, inputs=list(inputs.values()), outputs=[video_out, download, settings])
    return app.queue(default_concurrency_limit=1)


def launch(args: argparse.Namespace, block: bool = True):
    """`harivo ui`: load the model, then serve the page until interrupted (or, with `block=False`, return the app)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SystemExit("error: harivo ui needs Gradio: pip install 'harivo[ui]' (or pip install gradio).") from None
    quiet_libraries()
    studio = Studio(args)
    studio.output_dir.mkdir(parents=True, exist_ok=True)
    print("Loading the model ...", flush=True)
    launch_options = studio.parse(["-", *studio.model_argv()])  # what every click's command line carries
    studio.model.get(launch_options, _runtime(launch_options)[1])
    app = build_app(studio)
    app.launch(
        server_name=args.host, server_port=args.port, share=args.share, prevent_thread_lock=not block,
        allowed_paths=[str(studio.output_dir)], ssr_mode=False, footer_links=[], show_error=True,
    )  # fmt: skip
    return app
