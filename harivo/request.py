"""
What a user asks for when making a video: `GenerateRequest`, one typed object that the command line (`harivo
generate`), the web UI's form and a settings file (`harivo generate --from`) all become, validated once when it is
made, and run on a loaded model by `harivo.generation.generate`; the settings file beside each video is that object
written out.

Each option is declared once below, with its flag and help: `harivo generate`'s parser is made from these
declarations (`add_arguments`), a settings file or a form is checked against them as if typed (`from_options`), and
the checks that need no model run in `validate`. Only light modules are imported here: making and checking a
request loads no model.
"""

import argparse
import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import settings as settings_file
from .loras import parse_loras

SCHEDULER_NAMES = ("ddim", "ddpm", "pndm", "euler", "euler-ancestral", "dpm-solver++", "unipc", "lcm", "tcd")
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")  # schedulers.TIMESTEP_SPACINGS
DTYPES = ("float32", "float16", "bfloat16")
WINDOW_WEIGHTINGS = ("flat", "pyramid", "overlap-linear", "gaussian")  # free_noise.WEIGHTING_SCHEMES
# The options that say which model to load, and how to run it: the other commands that load a model take them too
MODEL_OPTIONS = ("base_model", "base_config", "adapter", "lora", "allow_pickle")
RUNTIME_OPTIONS = ("scheduler", "timestep_spacing", "device", "dtype")
# Pipeline keywords whose flag has another name, for library messages in the user's words (`in_flags`)
FLAG_OF_KEYWORD = {
    "num_inference_steps": "--steps", "conditioning_frames": "--control", "controlnet_frame_indices": "--control-frames",
    "controlnet_conditioning_scale": "--control-scale", "motion_path": "--motion", "context_length": "--context-length",
    "context_stride": "--context-stride",
}  # fmt: skip
FAST_OF_ADAPTER = "adapter"  # `--fast` without a folder: the adapter's own few-step variant (ADAPTER/fast)
MAX_MOTION_SCALE_TEXT = 10_000  # characters: a per-frame list for the longest video, with room


def option(default: Any, help: str | None, flags: tuple[str, ...] | None = None, **argparse_options: Any) -> Any:
    """A request field: its default, its help, its flags (default `--name-with-dashes`) and argparse's options."""
    return dataclasses.field(default=default, metadata={"help": help, "flags": flags, "argparse": argparse_options})


@dataclasses.dataclass
class GenerateRequest:
    """
    One video to make: every option of `harivo generate` and the web UI, under the command's names (`dest`s). Making
    one checks it (`validate`): a bad value raises one line that says what to change, before any model loads.

    Examples:
        ```py
        >>> from harivo.generation import generate
        >>> from harivo.request import GenerateRequest

        >>> request = GenerateRequest("a large red circle moving right on a plain black background", seed=3)
        >>> generate(request)  # out.mp4 and out.mp4.json
        ```
    """

    prompt: str | None = option(None, "What the video shows (from frame 0, with --prompt-at).", nargs="?")
    output: str | None = option(
        None,
        (
            "Output file, .mp4 or .gif (default: out.mp4; with --from, NAME-again.mp4 beside the original). Its "
            "settings go beside it as OUTPUT.json and into its metadata."
        ),
        flags=("-o", "--output"),
    )
    base_model: str | None = option(
        None,
        (
            "Base text-to-image model: a diffusers folder, a hub id, or a single-file checkpoint (.safetensors; "
            ".ckpt with --allow-pickle) (default: the embedded Shapes-world model)."
        ),
    )
    base_config: str | None = option(
        None,
        (
            "For a single-file --base-model: a diffusers folder (or hub id) of its architecture, read for the "
            "configs, tokenizer and scheduler (default: the embedded Shapes base when the adapter is the embedded "
            "one, else Stable Diffusion 1.5's from the hub or its cache)."
        ),
        metavar="DIR",
    )
    adapter: str | None = option(
        None,
        (
            "HARIVO adapter: a folder or a hub id (default: the embedded Shapes adapter, unless --base-model is a "
            "saved HARIVO pipeline, which brings its own); without --base-model, on the embedded Shapes base "
            "model."
        ),
    )
    lora: list[str] | None = option(
        None,
        (
            "A LoRA for the base model (image or motion; diffusers or kohya / A1111 format): a file, folder or "
            "hub id, at SCALE (default 1; 0 is exactly without it). Repeat for several."
        ),
        action="append",
        metavar="PATH[:SCALE]",
    )
    allow_pickle: bool = option(False, "Accept pickle weights (.bin/.ckpt); they can run code.", action="store_true")
    negative_prompt: str | None = option(None, "What the video should not show.")
    seed: int = option(0, "Random seed (default: 0).", type=int)
    num_frames: int | None = option(
        None,
        (
            "Frames (default: 16, or --video's length); more than the adapter's temporal layers take are made in "
            "overlapping windows (FreeNoise)."
        ),
        type=int,
    )
    max_frames: int = option(
        1024, "Refuse --num-frames past this (default: 1024): a long video's time grows with its frames.", type=int
    )
    prompt_at: list[list[str]] | None = option(
        None,
        (
            "Prompt travel: from FRAME on the video shows PROMPT (interpolated from the previous keyframe); "
            "repeat for more keyframes. The positional prompt is frame 0's."
        ),
        action="append",
        nargs=2,
        metavar=("FRAME", "PROMPT"),
    )
    video: str | None = option(
        None,
        "Video-to-video: re-generate this video (a video file or a folder of frames) with the prompt.",
        metavar="IN",
    )
    strength: float | None = option(
        None,
        "With --video / --image: how much of the input is re-generated, 0 (nothing) to 1 (all; default: 0.8).",
        type=float,
    )
    video_motion: bool = option(
        False, "With --video: keep the moving content on the path it takes in the input video.", action="store_true"
    )
    image: str | None = option(None, "Image-to-video: animate this first frame.", metavar="IN.png")
    context_length: int | None = option(
        None,
        "Frames per window for videos longer than the temporal layers take (default: 16, at most theirs).",
        type=int,
    )
    context_stride: int | None = option(None, "Frames between windows (default: 4; cost ~ length / stride).", type=int)
    loop: bool = option(
        False,
        (
            "A seamless loop: the windows wrap around and the motion goes out along the path and back, so the last "
            "frame flows into the first (needs more frames than --context-length, default 16)."
        ),
        action="store_true",
    )
    window_weighting: str = option(
        "pyramid",
        "How overlapping windows blend (default: pyramid).",
        choices=WINDOW_WEIGHTINGS,
    )
    ip_adapter: str | None = option(
        None,
        (
            "An IP-Adapter weight file (.safetensors) whose folder holds its image_encoder/ (the h94/IP-Adapter "
            "layout); use with --ip-adapter-image."
        ),
        metavar="FILE",
    )
    ip_adapter_image: str | None = option(None, "The image the video should look like.", metavar="IMG")
    ip_adapter_scale: float | None = option(None, "The IP-Adapter's weight (default: 1).", type=float)
    free_init: int | None = option(
        None,
        "FreeInit: sample ITERS times, each from the last result's low frequencies (ITERS times the cost).",
        type=int,
        metavar="ITERS",
    )
    cache: int | None = option(
        None,
        (
            "DeepCache: run the whole U-Net every INTERVAL-th step and only its outermost blocks in between, "
            "reusing the deep blocks' features (faster; 1 is off)."
        ),
        type=int,
        metavar="INTERVAL",
    )
    height: int | None = option(None, "Height in pixels (default: the model's).", type=int)
    width: int | None = option(None, "Width in pixels (default: the model's).", type=int)
    steps: int | None = option(
        None, "Denoising steps (default: what the adapter recommends, 15 with the embedded model; else 25).", type=int
    )
    guidance_scale: float = option(7.5, "Classifier-free guidance (default: 7.5).", type=float)
    fast: str | None = option(
        None,
        (
            "Sample with a few-step variant of the model, distilled with guidance folded in (4 steps, no "
            "classifier-free guidance; the embedded model's is about 4x faster): the adapter's own (ADAPTER/fast) "
            "without a value, or the folder harivo train wrote with stage: distill."
        ),
        nargs="?",
        const=FAST_OF_ADAPTER,
        metavar="DIR",
    )
    eta: float = option(
        0.0,
        "DDIM's share of fresh noise per step, 0-1 (default: 0, deterministic); with --scheduler ddim.",
        type=float,
    )
    guidance_rescale: float | None = option(
        None, "Rescale of the guided output, 0-1 (default: 0.7 for zero-terminal-SNR models, else 0).", type=float
    )
    mg_scale: float = option(
        0.0, "MG guidance alpha; 0 is off (paper: 40).", flags=("--mg-scale", "--alpha"), type=float
    )
    mg_window: Sequence[float] = option(
        (0.0, 0.5),
        "Fraction of the schedule with MG guidance (default: 0 0.5).",
        type=float,
        nargs=2,
        metavar=("START", "END"),
    )
    mg_energy: str = option("frame_difference", None, choices=("frame_difference", "attention", "motion_path"))
    mg_gradient: str | None = option(
        None,
        (
            "x0 (default): MG's gradient with the model output held constant, no backward (a guided step costs a "
            "plain one); full: through the U-Net, the paper's (~3 plain steps; the default for --mg-energy "
            "attention)."
        ),
        choices=("full", "x0"),
    )
    motion_path_projection: float | None = option(
        None,
        (
            "Pull the early steps onto content that travels the motion path, 0 (off) to 1 (default with a path "
            "predictor)."
        ),
        type=float,
    )
    motion_path_mask: str | None = option(
        None,
        (
            "What the projection moves: the prompt's subject, the rest held still (default), or the whole frame "
            "(a pan)."
        ),
        choices=("subject", "frame"),
    )
    motion_subject: str | None = option(None, "The prompt's words naming what moves (default: before the verb).")
    motion_scene: str | None = option(
        None, "The prompt's words naming what stands still ('' for none; default: after 'on', 'in', ...)."
    )
    temporal_window: Sequence[float] | None = option(
        None,
        (
            "Fraction of the schedule in which the temporal layers run; outside it, the image model alone "
            "(default: the adapter's, else 0 1)."
        ),
        type=float,
        nargs=2,
        metavar=("START", "END"),
    )
    pag_scale: float = option(
        0.0,
        (
            "Perturbed-attention guidance (diffusers' pag_scale; 0: off, e.g. 3): a third branch with the mid "
            "block's self-attention perturbed, which the video moves away from (about 1.5x the sampling time)."
        ),
        type=float,
        metavar="S",
    )
    motion_scale: str | None = option(
        None,
        (
            "How much the temporal layers move things: 1 the trained model (default), 0 the image model frame by "
            "frame, up to 10; one per frame (0,0.5,1,...) or per U-Net block (down=1,mid=0.5,up=1.2)."
        ),
        metavar="S",
    )
    motion_path_window: Sequence[float] | None = option(
        None,
        "Fraction of the schedule with the motion-path projection (default: the adapter's, else 0 0.5).",
        type=float,
        nargs=2,
        metavar=("START", "END"),
    )
    motion_path_core_window: Sequence[float] | None = option(
        None,
        (
            "Fraction of the schedule in which the subject projection moves only what is near the subject's core, "
            "so that a texture the subject's mask also covers stands still (default: the adapter's, else off; "
            "measured: 0.4 1)."
        ),
        type=float,
        nargs=2,
        metavar=("START", "END"),
    )
    motion: Sequence[float] | None = option(
        None,
        (
            "Make the content travel DX, DY latent pixels per frame (x right, y down) instead of the path the "
            "adapter predicts from the prompt."
        ),
        type=float,
        nargs=2,
        metavar=("DX", "DY"),
    )
    control: list[str] | None = option(
        None,
        (
            "ControlNet condition images: a folder of images (sorted by name, one per controlled frame) or a "
            "video file; once per --controlnet."
        ),
        action="append",
        metavar="PATH",
    )
    control_frames: str | None = option(
        None, "Control only these frames, e.g. 0,15 (default: every frame).", metavar="I,J,..."
    )
    controlnet: list[str] | None = option(
        None,
        (
            "A ControlNet for the base model: folder or hub id; repeat for several. Default with the embedded "
            "model: the Shapes ControlNet (silhouettes, white on black)."
        ),
        action="append",
        metavar="DIR",
    )
    control_scale: Sequence[float] | None = option(
        None,
        "ControlNet conditioning scale: one value, or one per --controlnet (default: 1).",
        type=float,
        nargs="+",
        metavar="S",
    )
    control_path: bool | None = option(
        None,
        (
            "Move the prompt's subject along the path the conditions' bright part (a silhouette) travels, "
            "interpolated between controlled frames: with keyframes only, it fills the frames in between. "
            "Default: on with the embedded Shapes ControlNet and --control-frames, else off."
        ),
        flags=("--control-path", "--no-control-path"),
        action=argparse.BooleanOptionalAction,
    )
    scheduler: str | None = option(
        None,
        (
            "Sampler: ddim, ddpm, pndm, euler, euler-ancestral, dpm-solver++, unipc, lcm, tcd (default for "
            "generate: what the adapter recommends, dpm-solver++ with the embedded model; else the model's). lcm "
            "and tcd are for few-step (consistency-distilled) models."
        ),
    )
    timestep_spacing: str | None = option(
        None,
        (
            "How the sampler spaces its steps (diffusers' timestep_spacing; trailing for AnimateDiff-Lightning- "
            "style models; default: the model's)."
        ),
        choices=TIMESTEP_SPACINGS,
    )
    device: str | None = option(None, "cpu, cuda, cuda:1, mps, ... (default: cuda if available).")
    dtype: str | None = option(None, "Default: float16 on GPU, float32 on CPU.", choices=DTYPES)
    fps: int = option(8, "Frames per second of the file (default: 8).", type=int)
    skip_memory_check: bool = option(
        False, "Run even if the estimated memory need exceeds what is free.", action="store_true"
    )

    def __post_init__(self):
        for name in ("mg_window", "temporal_window", "motion_path_window", "motion_path_core_window", "motion"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        self.validate()

    # Making a request

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> "GenerateRequest":
        """The request of a parsed `harivo generate` command line."""
        return cls(**{field.name: getattr(args, field.name) for field in dataclasses.fields(cls)})

    @classmethod
    def from_options(cls, options: dict[str, Any], origin: str = "the settings") -> "GenerateRequest":
        """
        The request of option values from anywhere but a command line (a settings file, a form), each checked as if
        typed: the type, count and choices its flag takes; unset options keep their defaults.

        Raises:
            `ValueError`: One line, starting with `origin`, naming the option and what it takes.
        """
        actions = {action.dest: action for action in parser()._actions if action.dest != "help"}
        unknown = sorted(set(options) - set(actions))
        if unknown:
            raise ValueError(f"{origin}: unknown option(s) {', '.join(unknown)}.")
        return cls(**settings_file.check_options(options, actions, origin))

    @classmethod
    def from_settings(cls, path: str | Path, **overrides: Any) -> "GenerateRequest":
        """The request a video's settings file (or the video itself) records, with `overrides` on top."""
        known = {field.name for field in dataclasses.fields(cls)}
        options = settings_file.read_settings(path, known)
        return cls.from_options({**options, **overrides}, f"--from {path}")

    def settings(self, resolved: dict[str, Any]) -> dict[str, Any]:
        """The settings file of the video this request made (`resolved`: what the run chose, for the reader)."""
        return settings_file.record(dataclasses.asdict(self), resolved)

    # Checks and derived values

    def validate(self) -> None:
        """Every check that needs no model (the pipeline checks the rest, against the loaded model)."""
        from .video_io import check_output_path

        if not self.prompt:
            raise ValueError("Give a prompt (what the video shows), or --from the settings of an earlier video.")
        check_output_path(self.output or "out.mp4", self.fps)
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"--seed must be from 0 to 2**64 - 1, got {self.seed}.")
        if self.num_frames is not None and self.num_frames > self.max_frames:
            raise ValueError(
                f"--num-frames {self.num_frames} is more than --max-frames ({self.max_frames}): a long video's time"
                " grows with its frames (each window of the temporal layers costs about one short clip); raise"
                " --max-frames to make it anyway."
            )
        self.motion_scale_value()  # a malformed value stops here
        if self.cache is not None and self.cache < 1:
            raise ValueError(f"--cache must be a positive number of steps, got {self.cache}.")
        if self.scheduler is not None and self.scheduler.lower() not in SCHEDULER_NAMES:
            raise ValueError(f"Unknown --scheduler {self.scheduler!r}; choose one of: {', '.join(SCHEDULER_NAMES)}.")
        self._validate_control()
        self._validate_inputs()
        self._validate_fast()
        self.keyframes()
        parse_loras(self.lora)

    def _validate_fast(self) -> None:
        if self.fast is None:
            return
        for name in ("scheduler", "timestep_spacing"):
            if getattr(self, name) is not None:
                raise ValueError(
                    f"--fast samples with the sampler its model was distilled for: leave {flag(name)} out."
                )
        if self.guidance_scale not in (1.0, GenerateRequest.guidance_scale):
            raise ValueError(
                "--fast samples without classifier-free guidance (the distilled model has it folded in): leave"
                " --guidance-scale out."
            )

    def _validate_control(self) -> None:
        if not self.control:
            for name in ("controlnet", "control_frames", "control_scale", "control_path"):
                if getattr(self, name):
                    raise ValueError(f"{flag(name)} needs --control (a folder of condition images or a video file).")
            return
        if self.control_path and self.motion is not None:
            raise ValueError("Pass at most one of --control-path and --motion.")
        nets = len(self.controlnet) if self.controlnet else 1
        if len(self.control) != nets:
            raise ValueError(
                f"Got {len(self.control)} --control for {nets} ControlNet(s); give one --control per --controlnet."
            )
        self.control_frame_indices()
        if self.control_scale is not None and len(self.control_scale) not in (1, nets):
            raise ValueError(
                f"Got {len(self.control_scale)} --control-scale values for {nets} ControlNet(s); give one, or one"
                " per --controlnet."
            )
        if not self.controlnet and self.base_model:
            raise ValueError("--control needs --controlnet (a ControlNet trained for this base model).")

    def _validate_inputs(self) -> None:
        if self.strength is not None and not (self.video or self.image):
            raise ValueError("--strength needs --video or --image (the input it re-generates).")
        if self.video_motion and not self.video:
            raise ValueError("--video-motion needs --video (the input video).")
        if self.video and self.image:
            raise ValueError("Pass at most one of --video and --image.")
        if self.control and (self.video or self.image):
            raise ValueError("--control does not combine with --video or --image yet; use one of them.")
        if self.video_motion and self.motion is not None:
            raise ValueError("Pass at most one of --video-motion and --motion.")
        if bool(self.ip_adapter) != bool(self.ip_adapter_image):
            raise ValueError(
                "--ip-adapter and --ip-adapter-image go together: give the IP-Adapter file and the image."
            )
        if self.ip_adapter_scale is not None and not self.ip_adapter:
            raise ValueError("--ip-adapter-scale needs --ip-adapter.")
        if self.ip_adapter:
            weights = Path(self.ip_adapter).expanduser()
            if not weights.is_file() or not (weights.parent / "image_encoder").is_dir():
                raise FileNotFoundError(
                    f"--ip-adapter {weights} must be a weight file in a folder that also holds image_encoder/ (the"
                    " h94/IP-Adapter layout, e.g. models/ip-adapter_sd15.safetensors)."
                )

    def keyframes(self) -> str | dict[int, str]:
        """The prompt, or with --prompt-at the keyframe prompts `{frame: prompt}` (the positional prompt is frame 0's)."""
        if not self.prompt_at:
            return self.prompt
        keyframes = {0: self.prompt}
        for frame, text in self.prompt_at:
            if not re.fullmatch(r"[0-9]+", str(frame)):
                raise ValueError(f"--prompt-at FRAME must be a frame number (0, 1, ...), got {frame!r}.")
            if int(frame) in keyframes:
                what = "the positional prompt's" if int(frame) == 0 else "given twice"
                raise ValueError(f"--prompt-at frame {int(frame)} is {what}: give each keyframe once.")
            keyframes[int(frame)] = text
        return keyframes

    def motion_scale_value(self) -> float | list[float] | dict[str, float]:
        """`--motion-scale`: `1.2`, one per frame `0,0.5,1`, or per U-Net block `down=1,up=0.5` (checked by the
        pipeline against the frames and blocks)."""
        text = self.motion_scale
        if text is None:
            return 1.0
        try:
            if "=" in text:
                pairs = [item.split("=", 1) for item in text.split(",")]
                return {key.strip(): float(value) for key, value in pairs}
            if "," in text:
                return [float(item) for item in text.split(",")]
            return float(text)
        except ValueError:
            raise ValueError(
                f"--motion-scale {text!r}: give a number (1.2), one per frame (0,0.5,1) or one per U-Net block"
                " (down=1,mid=0.5,up=1.2)."
            ) from None

    def control_frame_indices(self) -> list[int] | None:
        """`--control-frames` as frame numbers."""
        if self.control_frames is None:
            return None
        try:
            return [int(i) for i in self.control_frames.split(",")]
        except ValueError:
            raise ValueError(
                f"--control-frames must be frame numbers separated by commas (e.g. 0,15), got {self.control_frames!r}."
            ) from None

    def follows_control_path(self) -> bool:
        """--control-path, by default on for silhouettes on keyframes with the embedded model (the path between
        them fills the other frames)."""
        if self.control_path is not None or not self.control:
            return bool(self.control_path)
        embedded = not (self.controlnet or self.base_model)
        return embedded and self.control_frames is not None and self.motion is None

    def controlnets(self) -> list[str] | None:
        """The ControlNets to load: --controlnet, else with the embedded model and --control its Shapes ControlNet."""
        if not self.control:
            return None
        if self.controlnet:
            return list(self.controlnet)
        from .defaults import default_controlnet_path

        return [str(default_controlnet_path())]

    def model_key(self) -> tuple:
        """What picks the loaded model: requests with the same key run on the same one (LoRA and IP-Adapter scales
        are set for each request, on the loaded model)."""
        loras = tuple(path for path, _ in parse_loras(self.lora))
        return (
            self.base_model, self.base_config, self.adapter, tuple(self.controlnets() or ()), loras, self.ip_adapter,
            self.allow_pickle, self.fast,
        )  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser, names: Sequence[str] | None = None) -> None:
    """The request's options (all, or `names`) as `parser`'s arguments, with their flags, help and defaults."""
    for field in dataclasses.fields(GenerateRequest):
        if names is not None and field.name not in names:
            continue
        meta, default = field.metadata, field.default
        if field.name == "prompt":
            parser.add_argument("prompt", default=default, help=meta["help"], **meta["argparse"])
            continue
        flags = meta["flags"] or (f"--{field.name.replace('_', '-')}",)
        parser.add_argument(*flags, dest=field.name, default=default, help=meta["help"], **meta["argparse"])


def parser() -> argparse.ArgumentParser:
    """An argument parser of every request option (`harivo generate`'s, without its `--from`)."""
    result = argparse.ArgumentParser(add_help=False)
    add_arguments(result)
    return result


def flag(name: str) -> str:
    """The flag of the request option `name` (its longest)."""
    meta = GenerateRequest.__dataclass_fields__[name].metadata
    return max(meta["flags"] or (f"--{name.replace('_', '-')}",), key=len)


def in_flags(message: str) -> str:
    """A library message in the command line's words: each `keyword` that is a request option becomes its flag
    (`num_frames` -> --num-frames)."""
    flags = {name: flag(name) for name in GenerateRequest.__dataclass_fields__ if name != "prompt"}
    flags = {**flags, **FLAG_OF_KEYWORD}
    return re.sub(r"`(\w+)`", lambda match: flags.get(match[1], match[0]), message)
