"""
Making a video from a `GenerateRequest` on a loaded model: the one place where a request (from the command line, the
web UI or a settings file) meets the pipelines.

`generate(request, model)` reads the request's inputs, picks the task pipeline (text-, video- or image-to-video,
ControlNet), sets up the sampler, windows, FreeInit and cache for this call only, samples, and writes the video with
its settings. `LoadedModel` keeps the model between requests (the UI makes many videos on one).
"""

import json
import logging
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .loading import WEIGHT_SUFFIXES
from .loras import apply_loras, carried_motion_path, parse_loras, set_lora_scales
from .request import GenerateRequest

if TYPE_CHECKING:
    import torch

# Library messages that are noise in a command-line or UI run (they are about optional backends, not the result)
NOISE = (
    "requires torchvision (not installed)",
    "should be kept in float32: []",
    "was truncated because CLIP can only handle",  # `warn_truncated` says these two, naming the words
    "Token indices sequence length is longer than",
    "LOAD REPORT",  # transformers lists a text encoder's other LoRAs as "missing" when it loads one more
    "Already found a `peft_config` attribute",  # peft, on a second LoRA: that is what --lora asks for
    "No LoRA keys associated to CLIPTextModel",  # a U-Net-only LoRA (e.g. harivo dreambooth --lora-rank)
    "__array__ implementation doesn't accept a copy keyword",  # numpy 2 on torch tensors inside diffusers' DPM-Solver
)


def resolve_device(name: str | None) -> "torch.device":
    """`--device` as a `torch.device` that exists on this machine, or a one-line `ValueError`."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device; use cpu, cuda, cuda:1, mps, ...") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine; use --device cpu.")
    elif device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise ValueError(f"--device {name!r} is not supported; use cpu, cuda, cuda:1, mps, ...")
    return device


def runtime(device: str | None, dtype: str | None) -> tuple["torch.device", "torch.dtype"]:
    """The device and dtype of `--device` / `--dtype` (defaults: CUDA where there is one; float16 on it)."""
    import torch

    resolved = resolve_device(device)
    return resolved, (
        getattr(torch, dtype) if dtype else (torch.float16 if resolved.type == "cuda" else torch.float32)
    )


def prepare_pipeline(pipe, scheduler: str | None, device: "torch.device", timestep_spacing: str | None = None):
    """`pipe` with the sampler `scheduler` (and its `timestep_spacing`) where given, on `device`."""
    from .schedulers import SCHEDULERS, make_scheduler

    if scheduler or timestep_spacing:
        name = scheduler or next((key for key, cls in SCHEDULERS.items() if type(pipe.scheduler) is cls), None)
        if name is None:
            raise ValueError(f"--timestep-spacing: the model's {type(pipe.scheduler).__name__} is not one harivo offers;"
                             " pass --scheduler too.")  # fmt: skip
        pipe.scheduler = make_scheduler(name, pipe.scheduler, timestep_spacing)
    return pipe.to(device)


def guidance_rescale_for(value: float | None, scheduler) -> float:
    """`--guidance-rescale` if given, else what the model's schedule wants (`default_guidance_rescale`)."""
    from .schedulers import default_guidance_rescale

    return default_guidance_rescale(scheduler) if value is None else value


def motion_options(values) -> dict:
    """The pipeline's motion-path mask and windows of `values` (a request, or the `eval` command's options), where
    given (else the adapter's or the pipeline's defaults)."""
    from .models.adapter import SAMPLING_WINDOWS

    options = {"motion_path_mask": values.motion_path_mask}
    for name in SAMPLING_WINDOWS:
        if getattr(values, name) is not None:
            options[name] = tuple(getattr(values, name))
    return options


def warn_truncated(tokenizer, prompt: str | None, what: str = "prompt") -> None:
    """Warn, naming the dropped words, when `prompt` is longer than the text encoder reads."""
    if tokenizer is None or not prompt:
        return
    ids = tokenizer(prompt, truncation=False, verbose=False).input_ids
    limit = tokenizer.model_max_length
    if len(ids) > limit:
        kept = len(tokenizer.decode(ids[1 : limit - 1], skip_special_tokens=True).strip())
        words, used, index = prompt.split(), 0, 0
        while index < len(words) and used + len(words[index]) <= kept:  # whole words that fit; a cut word is dropped
            used, index = used + len(words[index]) + 1, index + 1
        dropped = " ".join(words[index:]) or tokenizer.decode(ids[limit - 1 : -1], skip_special_tokens=True).strip()
        warnings.warn(
            f"The {what} is longer than the text encoder's {limit} tokens; these words are ignored: {dropped!r}.",
            stacklevel=2,
        )


def warn_unknown_words(prompt: str | None, what: str = "prompt") -> None:
    """For the embedded Shapes model, whose text encoder knows only its world's words: warn, naming them, about the
    words it would read as letters (a typo, an accent, a word of another world), which silently change the scene."""
    from .data.shapes import vocabulary

    known = set(vocabulary())
    unknown = [word for word in re.findall(r"[^\W\d_]+", (prompt or "").lower()) if word not in known]
    if unknown:
        warnings.warn(
            f"The embedded model does not know the {what}'s word(s) {', '.join(map(repr, dict.fromkeys(unknown)))}"
            " (it reads them as letters, so the video may show something else); its prompts are 'a SIZE COLOUR"
            " SHAPE moving DIRECTION on a STYLE BACKGROUND background' (README).",
            stacklevel=2,
        )


def load_pipeline(
    base_model: str | None,
    adapter: str | None,
    controlnet: list[str] | None = None,
    base_config: str | None = None,
    **kwargs,
):
    """The pipeline of --base-model / --base-config / --adapter (`HarivoControlNetPipeline` with `controlnet`;
    `kwargs` go to `from_pretrained` / `from_single_file`): neither model given, the embedded model; a base model
    without an adapter (a DreamBooth folder or single file of the Shapes base), the embedded adapter."""
    from .defaults import default_model_paths
    from .errors import IncompatibleAdapterError
    from .pipelines import HarivoControlNetPipeline, HarivoPipeline
    from .pipelines.loading import has_component

    given_base, config = base_model, base_config
    adapter_alone = bool(adapter) and not base_model  # e.g. trained on the embedded base, training's fallback
    single_file = bool(base_model) and Path(base_model).suffix in WEIGHT_SUFFIXES
    if config and not single_file:
        raise ValueError("--base-config is for a single-file --base-model (.safetensors or .ckpt).")
    embedded_base, embedded_adapter = default_model_paths()
    defaulted = not adapter and (single_file or (bool(base_model) and not has_component(Path(base_model), "adapter")))
    if not base_model:
        base_model, adapter = embedded_base, adapter or embedded_adapter
    elif defaulted:
        adapter = embedded_adapter
        config = config or (embedded_base if single_file else None)
    cls = HarivoControlNetPipeline if controlnet else HarivoPipeline
    if controlnet:
        kwargs["controlnet"] = controlnet if len(controlnet) > 1 else controlnet[0]
    try:
        if single_file:
            return cls.from_single_file(base_model, adapter=adapter, config=config, **kwargs)
        return cls.from_pretrained(base_model, adapter=adapter, **kwargs)
    except IncompatibleAdapterError as error:
        if adapter_alone:
            raise IncompatibleAdapterError(
                f"--adapter {adapter} was not trained on the embedded Shapes base model ({error}): pass --base-model"
                " (the text-to-image model it was trained on)."
            ) from error
        if not defaulted:
            raise
        raise IncompatibleAdapterError(
            f"--base-model {given_base} is not a Shapes-world base model, so the embedded adapter does not fit it"
            f" ({error}): pass --adapter (one trained on this base model)."
        ) from error


def fast_variant(request: GenerateRequest) -> tuple[Path, dict] | None:
    """
    The few-step variant `--fast` asks for: its folder (a LoRA and `harivo_fast.json`) and what it was distilled for
    (`num_inference_steps`, `scheduler`, `timestep_spacing`, `guidance_scale`), checked before any model loads.

    Raises:
        `ValueError`: One line: no variant there, or steps it was not distilled for.
    """
    from .defaults import default_model_paths
    from .loras import FAST_CONFIG, FAST_FOLDER
    from .pipelines.loading import has_component
    from .request import FAST_OF_ADAPTER

    if request.fast is None:
        return None
    if request.fast == FAST_OF_ADAPTER:
        if request.adapter:
            adapter = Path(request.adapter).expanduser()
        elif request.base_model and has_component(Path(request.base_model), "adapter"):
            adapter = Path(request.base_model) / "adapter"
        else:  # the embedded adapter, also on a base model of the Shapes world (DreamBooth)
            adapter = default_model_paths()[1]
        folder = adapter / FAST_FOLDER
        if not (folder / FAST_CONFIG).is_file():
            raise ValueError(
                f"--fast: the adapter {adapter} has no few-step variant ({folder} does not exist); distil one with"
                " harivo train (stage: distill, e.g. configs/shapes/distill.yaml) and pass --fast OUTPUT_DIR/final."
            )
    else:
        folder = Path(request.fast).expanduser()
        if not (folder / FAST_CONFIG).is_file():
            raise ValueError(
                f"--fast {request.fast}: not a few-step variant (no {FAST_CONFIG} in it); harivo train with stage:"
                " distill writes one into OUTPUT_DIR/final."
            )
    try:
        variant = json.loads((folder / FAST_CONFIG).read_text(encoding="utf-8"))
        steps = [int(step) for step in variant["num_inference_steps"]]
        variant = {**variant, "num_inference_steps": steps}
        for key in ("scheduler", "timestep_spacing", "guidance_scale"):
            variant[key]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"--fast: {folder / FAST_CONFIG} is not readable ({type(error).__name__}: {error})."
        ) from None
    if request.steps is not None and request.steps not in steps:
        raise ValueError(
            f"--fast: {folder} was distilled for {' or '.join(map(str, steps))} steps; use --steps {steps[0]} or"
            " leave --steps out."
        )
    return folder, variant


def load_model(request: GenerateRequest, dtype: "torch.dtype"):
    """The pipeline of a request's model options (base model, adapter, ControlNets, LoRAs, IP-Adapter)."""
    loras = parse_loras(request.lora)
    fast = fast_variant(request)
    pipe = load_pipeline(
        request.base_model, request.adapter, request.controlnets(), request.base_config,
        allow_pickle=request.allow_pickle, torch_dtype=dtype,
    )  # fmt: skip
    if fast is not None:  # merged into the weights: the few-step model samples at the plain model's speed
        try:
            pipe.load_lora_weights(str(fast[0]), adapter_name="fast")
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise ValueError(f"--fast {fast[0]}: {' '.join(str(error).split())}") from error
        pipe.fuse_lora(components=["unet"], lora_scale=1.0, adapter_names=["fast"])
        pipe.unload_lora_weights()
    apply_loras(pipe, loras, request.allow_pickle)
    if request.ip_adapter:
        weights = Path(request.ip_adapter).expanduser()
        pipe.load_ip_adapter(
            str(weights.parent), subfolder="", weight_name=weights.name, image_encoder_folder="image_encoder"
        )
    return pipe


class LoadedModel:
    """
    The model of the last request, kept for the next one (`harivo ui` makes many videos on one model); loaded again
    only when the options that pick it change (`GenerateRequest.model_key`: not the LoRA and IP-Adapter scales, which
    are set for each request). Each request runs on its own pipeline object over these components, so a request's
    sampler, windows or FreeInit never reach the next one.
    """

    def __init__(self):
        self.key, self.pipe = None, None

    def get(self, request: GenerateRequest, dtype: "torch.dtype"):
        key = (*request.model_key(), str(dtype))
        if key != self.key:
            self.key, self.pipe = None, None  # the old model goes before the new one loads
            self.pipe, self.key = load_model(request, dtype), key
        set_lora_scales(self.pipe, parse_loras(request.lora))
        if request.ip_adapter:
            self.pipe.set_ip_adapter_scale(1.0 if request.ip_adapter_scale is None else request.ip_adapter_scale)
        return self.pipe


def read_inputs(request: GenerateRequest) -> dict:
    """The pipeline-call inputs the request names in files (ControlNet conditions, the input video or image, the
    IP-Adapter image), read before any model loads, and the frame count they imply."""
    from .video_io import input_budget, read_frames, read_image

    budget = input_budget(not request.skip_memory_check)
    inputs: dict = {}
    if request.control:
        frames = [read_frames(path, budget) for path in request.control]
        inputs["conditioning_frames"] = frames if len(frames) > 1 else frames[0]
        if request.control_frames is not None:
            inputs["controlnet_frame_indices"] = request.control_frame_indices()
        if request.control_scale is not None:
            scales = request.control_scale  # one value acts for every net
            inputs["controlnet_conditioning_scale"] = scales[0] if len(scales) == 1 else list(scales)
    strength = 0.8 if request.strength is None else request.strength
    num_frames = request.num_frames
    if request.video:
        video = read_frames(request.video, budget)
        inputs.update(video=video, strength=strength)
        if request.video_motion:
            inputs["motion_path"] = "video"
        num_frames = len(video) if num_frames is None else num_frames
    if request.image:
        inputs.update(image=read_image(request.image, budget), strength=strength)
    if request.ip_adapter:
        inputs["ip_adapter_image"] = read_image(request.ip_adapter_image, budget)
    inputs["num_frames"] = 16 if num_frames is None else num_frames
    return inputs


def task_pipeline(pipe, inputs: dict):
    """A pipeline of its own for this request, over the loaded components: video-to-video or image-to-video for its
    inputs, else one of the loaded pipeline's class."""
    from .pipelines import HarivoImageToVideoPipeline, HarivoVideoToVideoPipeline

    if "video" in inputs:
        return HarivoVideoToVideoPipeline.from_pipe(pipe)
    if "image" in inputs:
        return HarivoImageToVideoPipeline.from_pipe(pipe)
    return type(pipe).from_pipe(pipe)


def enable_windows(pipe, request: GenerateRequest, num_frames: int) -> None:
    """FreeNoise windows when the video is longer than the temporal layers take, or when a window is asked for."""
    max_frames = pipe.adapter.max_frames
    length, stride = request.context_length, request.context_stride
    if length is None and stride is None and not request.loop and num_frames <= max_frames:
        return
    length = min(16, max_frames) if length is None else length
    stride = min(4, length) if stride is None else stride
    try:
        pipe.enable_free_noise(
            context_length=length, context_stride=stride, weighting_scheme=request.window_weighting,
            closed_loop=request.loop,
        )  # fmt: skip
    except ValueError as error:
        raise ValueError(str(error).replace("`context_length`", "--context-length").replace(
            "`context_stride`", "--context-stride")) from None  # fmt: skip
    if num_frames > length:
        windows = len(pipe.free_noise_settings.windows(num_frames))
        print(
            f"{num_frames} frames in {windows} overlapping windows of {length}: about {windows} times one window's work."
        )


def generate(request: GenerateRequest, model: LoadedModel | None = None, on_step=None) -> Path:
    """
    Make the video of `request` and write it with its settings (`<output>.json`, and in the video's metadata).

    Args:
        request: What to make (already validated).
        model: Keeps the loaded model for later requests (default: loaded for this one).
        on_step: Told `(done, total)` after each denoising step (the UI's progress bar).

    Returns:
        `Path`: The video's path.
    """
    import torch

    from . import __version__
    from .settings import write_settings
    from .video_io import interrupts_deferred, save_video

    output = request.output or "out.mp4"
    fast = fast_variant(request)
    inputs = read_inputs(request)
    device, dtype = runtime(request.device, request.dtype)
    loaded = (model or LoadedModel()).get(request, dtype)
    # the sampler and steps the adapter was measured best with, or those its few-step variant was distilled for
    recommended = loaded.adapter.sampling_defaults if fast is None else fast[1]
    steps = request.steps if request.steps is not None else _first(recommended.get("num_inference_steps", 25))
    scheduler = request.scheduler or recommended.get("scheduler")
    spacing = request.timestep_spacing or recommended.get("timestep_spacing")
    guidance_scale = request.guidance_scale if fast is None else fast[1]["guidance_scale"]
    pipe = prepare_pipeline(task_pipeline(loaded, inputs), scheduler, device, spacing)
    prompt = request.keyframes()
    for text in prompt.values() if isinstance(prompt, dict) else [prompt]:
        warn_truncated(pipe.tokenizer, text)
    warn_truncated(pipe.tokenizer, request.negative_prompt, "negative prompt")
    if (
        request.base_model is None and not request.lora
    ):  # the embedded model's closed vocabulary (a LoRA may add words)
        for text in prompt.values() if isinstance(prompt, dict) else [prompt]:
            warn_unknown_words(text)
    pipe.memory_check = not request.skip_memory_check
    num_frames = inputs.pop("num_frames")
    enable_windows(pipe, request, num_frames)
    if request.free_init is not None:
        try:
            pipe.enable_free_init(num_iters=request.free_init)
        except ValueError:
            raise ValueError(f"--free-init must be a positive number of samplings, got {request.free_init}.") from None
    if request.cache is not None:
        pipe.enable_deep_cache(cache_interval=request.cache)
    if request.motion is not None:
        inputs["motion_path"] = torch.arange(max(num_frames, 1))[:, None] * torch.tensor(request.motion)
    elif request.follows_control_path():
        inputs["motion_path"] = "control"
    elif "motion_path" not in inputs and not request.control:  # a motion LoRA's own path, unless told another
        carried = carried_motion_path(request.lora, num_frames)
        if carried is not None:
            inputs["motion_path"] = carried
    guidance_rescale = guidance_rescale_for(request.guidance_rescale, pipe.scheduler)
    if on_step is not None:
        inputs["callback_on_step_end"] = lambda call, step, timestep, tensors: (
            on_step(step + 1, call.num_timesteps) or {}
        )
    start = time.perf_counter()
    frames = pipe(
        prompt,
        negative_prompt=request.negative_prompt,
        num_frames=num_frames,
        height=request.height,
        width=request.width,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        guidance_rescale=guidance_rescale,
        eta=request.eta,
        mg_scale=request.mg_scale,
        mg_window=tuple(request.mg_window),
        mg_energy=request.mg_energy,
        mg_gradient=request.mg_gradient,
        motion_path_projection=request.motion_path_projection,
        **motion_options(request),
        motion_scale=request.motion_scale_value(),
        pag_scale=request.pag_scale,
        motion_subject=request.motion_subject,
        motion_scene=request.motion_scene,
        generator=torch.Generator(device="cpu").manual_seed(request.seed),
        **inputs,
    ).frames[0]
    seconds = time.perf_counter() - start
    resolved = {
        "video": str(Path(output).resolve()), "frames": len(frames), "height": frames[0].height,
        "width": frames[0].width, "steps": steps, "scheduler": type(pipe.scheduler).__name__,
        "guidance_scale": guidance_scale, "guidance_rescale": guidance_rescale,
        **({"fast": str(fast[0].resolve())} if fast is not None else {}),
        "device": str(device), "dtype": str(dtype).removeprefix("torch."), "sampling_seconds": round(seconds, 2),
        "harivo": __version__, "torch": torch.__version__,
    }  # fmt: skip
    settings = request.settings(resolved)
    with interrupts_deferred():  # Ctrl-C now: the video and its settings are both written, then it stops
        path = save_video(frames, output, fps=request.fps, comment=json.dumps(settings))
        write_settings(path, settings)
    print(f"Wrote {path} and its settings ({len(frames)} frames, {seconds:.1f} s of sampling on {device}).")
    return path


def _first(steps):
    return steps[0] if isinstance(steps, list) else steps


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in NOISE)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    text = " ".join(str(message).split())
    return f"warning: {text}\n"


def quiet_libraries() -> None:
    """A clean command-line or UI run: library warnings stay visible as one line each, known noise and the libraries'
    own loading progress bars go."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    warnings.formatwarning = _one_line_warning
    for text in NOISE:
        warnings.filterwarnings("ignore", message=f".*{re.escape(text)}")
    for library in (diffusers_logging, transformers_logging):
        library.disable_progress_bar()
        library.set_verbosity_warning()
        for handler in library.get_logger().handlers:  # records of every module's logger pass these
            handler.addFilter(_DropNoise())
            handler.setFormatter(logging.Formatter("warning: %(message)s"))
