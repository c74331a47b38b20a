"""
`harivo ui`: a local web app (Gradio) on one model in memory.

Each click turns the form into a `GenerateRequest` (the object `harivo generate`'s command line and settings files
become too) and runs it with `harivo.generation.generate` on the model the app holds: the same checks, the same
one-line errors (shown in the page), the same video and settings file (`<video>.json`, shown beside the video).
Several tabs queue on the one model.
"""

import hashlib
import itertools
import os
import random
import re
import shutil
import threading
import time
from pathlib import Path

from .errors import USER_ERRORS
from .generation import LoadedModel, generate, quiet_libraries, runtime
from .loras import parse_loras
from .request import FAST_OF_ADAPTER, SCHEDULER_NAMES, WINDOW_WEIGHTINGS, GenerateRequest
from .settings import settings_path

MODEL_DEFAULT = "the model's"
PROMPT_MOTION = "from the prompt"
# Motion in latent pixels per frame (x right, y down), as `--motion DX DY`
MOTIONS = {"none (still)": (0.0, 0.0), "right": (1.0, 0.0), "left": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
KEYFRAME_LINE = re.compile(r"\s*(\S+?)\s*:\s*(.*)")


class Studio:
    """What the app's clicks share: the model options of the launch (`GenerateRequest` names: base_model, adapter,
    lora, controlnet, device, dtype, ...), the loaded model and the folder the videos go to."""

    def __init__(self, model: dict, output_dir: str | os.PathLike):
        self.model_options = {name: value for name, value in model.items() if value not in (None, False, [])}
        self.loras = parse_loras(self.model_options.get("lora"))  # each with a slider in the page
        self.output_dir = Path(output_dir).expanduser().resolve()
        self.model = LoadedModel()
        self._names, self._names_lock = set(), threading.Lock()  # the output paths given out

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

    def request(self, form: dict) -> GenerateRequest:
        """The request of the form's values, on the launch's model; checked as if typed on the command line."""
        if form["seed"] is None:  # a cleared box
            raise ValueError("Seed is empty: give a whole number from 0, or press Random seed.")
        seed = int(form["seed"])
        options = {
            "prompt": form["prompt"] or "", "output": str(self.new_output(seed)), "seed": seed,
            "num_frames": int(form["num_frames"]), "steps": int(form["steps"]),
            "guidance_scale": form["guidance_scale"], "mg_scale": form["mg_scale"], **self.model_options,
        }  # fmt: skip
        for name in ("height", "width"):
            if form[name]:
                options[name] = int(form[name])
        if form["negative_prompt"]:
            options["negative_prompt"] = form["negative_prompt"]
        if form["scheduler"] and form["scheduler"] != MODEL_DEFAULT:
            options["scheduler"] = form["scheduler"]
        if form.get("fast"):  # the few-step variant samples with its own steps and sampler, without guidance
            for name in ("steps", "guidance_scale", "scheduler"):
                options.pop(name, None)
            options["fast"] = FAST_OF_ADAPTER
        if form["motion"] in MOTIONS:
            dx, dy = MOTIONS[form["motion"]]
            options["motion"] = [dx * form["speed"], dy * form["speed"]]
        keyframes = []
        for line in (form["keyframes"] or "").splitlines():
            if line.strip():
                match = KEYFRAME_LINE.fullmatch(line)
                if not match:
                    raise ValueError(f"Keyframe line {line.strip()!r}: write FRAME: PROMPT, e.g. 8: a blue square.")
                keyframes.append([match[1], match[2]])
        if keyframes:
            options["prompt_at"] = keyframes
        for name in ("video", "image"):
            if form[name]:
                options.update({name: self.keep(form[name]), "strength": form["strength"]})
        if form["control"]:
            options["control"] = [self.keep(form["control"])]
            if form["control_frames"]:
                options["control_frames"] = form["control_frames"].replace(" ", "")
        else:
            options.pop("controlnet", None)  # the launch's ControlNets serve condition videos only
        if form.get("motion_scale", 1) != 1:
            options["motion_scale"] = str(form["motion_scale"])
        for name in ("pag_scale", "loop", "window_weighting"):
            if form.get(name) is not None:
                options[name] = form[name]
        for name in ("free_init", "context_length", "context_stride"):  # 0 or empty: the default
            if form.get(name):
                options[name] = int(form[name])
        if form.get("ip_adapter_image"):
            if not self.model_options.get("ip_adapter"):
                raise ValueError(
                    "An IP-Adapter image needs an IP-Adapter: start the app with harivo ui --ip-adapter FILE."
                )
            options.update(
                ip_adapter_image=self.keep(form["ip_adapter_image"]), ip_adapter_scale=form["ip_adapter_scale"]
            )
        else:
            options.pop("ip_adapter", None)  # loaded on the first click with an image
        if self.loras:
            options["lora"] = [
                f"{path}:{form.get(f'lora_{index}', scale)}" for index, (path, scale) in enumerate(self.loras)
            ]
        return GenerateRequest.from_options(options, "the form")

    def generate(self, form: dict, on_step=None) -> tuple[str, str]:
        """Make one video; returns its path and its settings (JSON text)."""
        path = generate(self.request(form), self.model, on_step)
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
                    fast = gr.Checkbox(
                        label="Fast: the model's few-step variant (4 steps, no guidance; steps, guidance and sampler"
                        " ignored)",
                        elem_id="fast",
                    )  # fmt: skip
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
                with gr.Accordion("Motion strength, PAG, FreeInit", open=False), gr.Row():
                    motion_scale = gr.Slider(
                        0, 1.5, value=1, step=0.05, elem_id="motion-scale",
                        label="Motion scale (1: the trained model; 0: the image model frame by frame)",
                    )  # fmt: skip
                    pag_scale = gr.Slider(
                        0, 5, value=0, step=0.5, elem_id="pag-scale",
                        label="Perturbed-attention guidance (0: off; about 1.5x the time)",
                    )  # fmt: skip
                    free_init = gr.Number(
                        0, precision=0, minimum=0, elem_id="free-init",
                        label="FreeInit samplings (0: off; each one more costs a sampling)",
                    )  # fmt: skip
                with gr.Accordion("Long videos and loops", open=False), gr.Row():
                    context_length = gr.Number(
                        0, precision=0, minimum=0, label="Frames per window (0: 16)", elem_id="context-length"
                    )
                    context_stride = gr.Number(
                        0, precision=0, minimum=0, label="Frames between windows (0: 4)", elem_id="context-stride"
                    )
                    weighting = gr.Dropdown(
                        WINDOW_WEIGHTINGS, value="pyramid", label="How windows blend", elem_id="window-weighting"
                    )
                    loop = gr.Checkbox(label="Seamless loop (more frames than a window)", elem_id="loop")
                with gr.Accordion("IP-Adapter: the look of an image", open=False):
                    if not studio.model_options.get("ip_adapter"):
                        gr.Markdown("Start the app with `harivo ui --ip-adapter FILE` to use an image's look.")
                    with gr.Row():
                        ip_image = gr.Image(
                            label="Image to look like", type="filepath", sources=["upload"], elem_id="ip-image"
                        )
                        ip_scale = gr.Slider(0, 1.5, value=1, step=0.05, label="IP-Adapter scale", elem_id="ip-scale")
                lora_sliders = {}
                if studio.loras:
                    with gr.Accordion("LoRAs", open=True):
                        for index, (path, scale) in enumerate(studio.loras):
                            lora_sliders[f"lora_{index}"] = gr.Slider(
                                -1, 2, value=scale, step=0.05, label=f"{Path(path).name} (0: off)",
                                elem_id=f"lora-{index}",
                            )  # fmt: skip
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
            "prompt": prompt, "negative_prompt": negative, "num_frames": frames, "steps": steps, "fast": fast,
            "guidance_scale": guidance, "mg_scale": mg, "height": height, "width": width, "scheduler": scheduler,
            "seed": seed, "motion": motion, "speed": speed, "keyframes": keyframes, "video": video_in,
            "image": image_in, "strength": strength, "control": control, "control_frames": control_frames,
            "motion_scale": motion_scale, "pag_scale": pag_scale, "free_init": free_init,
            "context_length": context_length, "context_stride": context_stride, "window_weighting": weighting,
            "loop": loop, "ip_adapter_image": ip_image, "ip_adapter_scale": ip_scale, **lora_sliders,
        }  # fmt: skip
        names = list(inputs)
        dice.click(lambda: random.randrange(2**32), outputs=seed, api_visibility="private")
        button.click(run, inputs=list(inputs.values()), outputs=[video_out, download, settings], api_name="generate")
        prompt.submit(run, inputs=list(inputs.values()), outputs=[video_out, download, settings])
    return app.queue(default_concurrency_limit=1)


def launch(
    model: dict, output_dir: str | os.PathLike = "outputs/ui", host: str = "127.0.0.1", port: int = 7860,
    share: bool = False, block: bool = True,
):  # fmt: skip
    """`harivo ui`: load the model of `model` (`GenerateRequest`'s model options: base_model, adapter, lora,
    controlnet, device, dtype, ...), then serve the page until interrupted (or, with `block=False`, return the app)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SystemExit("error: harivo ui needs Gradio: pip install 'harivo[ui]' (or pip install gradio).") from None
    quiet_libraries()
    studio = Studio(model, output_dir)
    studio.output_dir.mkdir(parents=True, exist_ok=True)
    print("Loading the model ...", flush=True)
    options = {name: value for name, value in studio.model_options.items() if name not in ("controlnet", "ip_adapter")}
    first = GenerateRequest.from_options({"prompt": "-", **options}, "harivo ui")  # what every click carries
    studio.model.get(first, runtime(first.device, first.dtype)[1])
    app = build_app(studio)
    app.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
        allowed_paths=[str(studio.output_dir)], ssr_mode=False, footer_links=[], show_error=True,
    )  # fmt: skip
    return app
