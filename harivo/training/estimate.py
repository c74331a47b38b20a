"""`harivo train --estimate`: parameters and memory per GPU of a harivo run before renting the GPUs.

The models are built on the meta device (no weights, nothing downloaded): the base model's own architecture when
`harivo.base_model` is a local folder, Stable Diffusion 1.5's otherwise. Activations are not guessed: one training
forward of the video U-Net runs on meta tensors and every tensor autograd saves for the backward is counted (the
parameters themselves excluded), with attention as PyTorch's fused kernels keep it on a GPU (query, key, value,
output and log-sum-exp; never the attention matrix). `benchmarks/train_memory.py` checks the count against a real
CPU step.
"""

import dataclasses
import unittest.mock
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import TrainConfig

GIB = 2**30

SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "cross_attention_dim": 768,
    "block_out_channels": (320, 640, 1280, 1280), "attention_head_dim": 8,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
}  # fmt: skip
SD15_VAE = {
    "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
}  # fmt: skip
SD15_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12}
SIZES = ((256, 16), (512, 16))  # (pixels, frames) the estimate always reports, beside the run's own


@dataclasses.dataclass
class Parameters:
    base: str  # where the architecture came from
    unet: int
    vae: int
    text_encoder: int
    adapter: int
    trainable: int


@dataclasses.dataclass
class MemoryRow:
    resolution: int
    num_frames: int
    precision: str
    engine: str
    weights: float  # GiB per GPU
    gradients: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


class _FusedAttention(torch.autograd.Function):
    """Attention as a GPU's fused kernels save it for the backward: inputs, output and the log-sum-exp per query."""

    @staticmethod
    def forward(ctx, query, key, value):
        output = query.new_empty((*query.shape[:-1], value.shape[-1]))
        ctx.save_for_backward(query, key, value, output, query.new_empty(query.shape[:-1], dtype=torch.float32))
        return output

    @staticmethod
    def backward(ctx, grad):  # never run: the estimate stops after the forward
        raise NotImplementedError


def _fused_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
    return _FusedAttention.apply(query, key, value)


def _base_configs(config: TrainConfig) -> tuple[str, dict, dict, dict]:
    folder = Path(config.harivo.base_model)
    if (folder / "unet" / "config.json").is_file():
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig

        text = CLIPTextConfig.from_pretrained(folder / "text_encoder").to_dict()
        return (
            str(folder),
            UNet2DConditionModel.load_config(folder / "unet"),
            AutoencoderKL.load_config(folder / "vae"),
            text,
        )
    where = (
        f"the Stable Diffusion 1.5 architecture (harivo.base_model {config.harivo.base_model} is not a local folder)"
    )
    return where, SD15_UNET, SD15_VAE, SD15_TEXT


def build_on_meta(config: TrainConfig):
    """The run's models without weights: `(Parameters, video U-Net)`; the adapter is built as the run builds it."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..models.video_unet import HarivoUNet
    from .stages import HarivoStage

    base, unet_config, vae_config, text_config = _base_configs(config)
    with init_empty_weights(include_buffers=True):
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
        settings = dataclasses.replace(config.harivo, motion_adapter=None)  # a saved one has the same shapes
        adapter = HarivoStage._new_adapter(settings, unet, accelerator=None)
        if not settings.train_mapping_network:
            adapter.mapping_network.requires_grad_(False)
        model = HarivoUNet.from_unet2d(unet, adapter)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    parameters = Parameters(
        base, count(unet), count(vae), count(text_encoder), count(adapter),
        sum(p.numel() for p in adapter.parameters() if p.requires_grad),
    )  # fmt: skip
    return parameters, model


def activation_bytes(model, resolution: int, num_frames: int, dtype: torch.dtype, checkpointing: bool) -> int:
    """Bytes autograd keeps for the backward of one sample's training forward of the video U-Net; with gradient
    checkpointing, plus the largest checkpointed block recomputed in the backward. On meta tensors attention is
    counted as fused kernels keep it; on real tensors the installed kernels run (`benchmarks/train_memory.py`)."""
    from diffusers.models.resnet import ResnetBlock2D

    model = model.to(dtype)
    parameter_storages = {p.untyped_storage()._cdata for p in model.parameters()}
    config = model.config
    latent, device = resolution // 8, next(model.parameters()).device
    sample = torch.randn(1, config.in_channels, num_frames, latent, latent, device=device, dtype=dtype)
    text = torch.randn(1, 77, config.cross_attention_dim, device=device, dtype=dtype)
    timestep = torch.tensor([500], device=device)
    attention = _fused_attention if device.type == "meta" else F.scaled_dot_product_attention

    def count(with_checkpointing: bool) -> tuple[int, int]:
        saved, unit, units = {}, [None], {}

        def pack(tensor):
            key = tensor.untyped_storage()._cdata
            if key not in parameter_storages and key not in saved:
                saved[key] = tensor.untyped_storage().nbytes()
                if unit[0] is not None:
                    units[unit[0]] = units.get(unit[0], 0) + saved[key]
            return tensor

        hooks = []
        for module in model.modules():
            if isinstance(module, ResnetBlock2D):
                hooks.append(module.register_forward_pre_hook(lambda m, _: unit.__setitem__(0, id(m))))
                hooks.append(module.register_forward_hook(lambda m, _, __: unit.__setitem__(0, None)))
        if with_checkpointing:
            model.unet.enable_gradient_checkpointing()
        try:
            with (
                unittest.mock.patch.object(F, "scaled_dot_product_attention", attention),
                torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
            ):
                model(sample, timestep, text)
        finally:
            for hook in hooks:
                hook.remove()
            model.unet.disable_gradient_checkpointing()
        return sum(saved.values()), max(units.values(), default=0)

    model.train()
    if not checkpointing:
        return count(False)[0]
    _, largest_block = count(False)
    return count(True)[0] + largest_block


def estimate(config: TrainConfig, num_processes: int, sizes=SIZES) -> tuple[Parameters, list[MemoryRow]]:
    """Parameters and the memory per GPU of `config` on `num_processes` GPUs, for each size, precision and engine.

    Per GPU: the frozen U-Net in float32 (the video U-Net runs under autocast), the VAE and text encoder in the run's
    precision, the adapter in float32 with its gradients and AdamW's two states (AdamW8bit: one byte each); under
    FSDP the adapter is gathered whole for the forward and backward and its sharded copy, gradients and states are
    1/N each; under DDP the gradient buckets are a second copy of the gradients.
    """
    parameters, model = build_on_meta(config)
    run_size = (config.data.resolution, config.data.num_frames)
    state_bytes = 2 if config.optim.use_8bit_adam else 8
    rows = []
    for resolution, num_frames in dict.fromkeys([*sizes, run_size]):
        for precision in ("no", "bf16"):
            half = precision != "no"
            dtype = torch.bfloat16 if half else torch.float32
            activations = config.batch_size * activation_bytes(
                model, resolution, num_frames, dtype, config.gradient_checkpointing
            )
            frozen = 4 * parameters.unet + (2 if half else 4) * (parameters.vae + parameters.text_encoder)
            frozen_adapter = 4 * (parameters.adapter - parameters.trainable)
            trainable = parameters.trainable
            for engine in ("DDP", "FSDP"):
                if engine == "DDP":
                    weights, gradients, optimizer = 4 * trainable, 2 * 4 * trainable, state_bytes * trainable
                else:
                    n = num_processes
                    weights, gradients, optimizer = (
                        4 * trainable * (1 + 1 / n),
                        4 * trainable * (1 + 1 / n),
                        (state_bytes * trainable / n),
                    )
                rows.append(
                    MemoryRow(
                        resolution, num_frames, "bf16" if half else "fp32", engine,
                        (frozen + frozen_adapter + weights) / GIB, gradients / GIB, optimizer / GIB, activations / GIB,
                    )
                )  # fmt: skip
    return parameters, rows


def format_estimate(config: TrainConfig, num_processes: int, parameters: Parameters, rows: list[MemoryRow]) -> str:
    millions = lambda n: f"{n / 1e6:,.1f} M"  # noqa: E731
    lines = [
        f"Base model: {parameters.base}.",
        f"Parameters: U-Net {millions(parameters.unet)}, VAE {millions(parameters.vae)}, text encoder"
        f" {millions(parameters.text_encoder)} (all frozen); adapter {millions(parameters.adapter)}, of which"
        f" {millions(parameters.trainable)} trained.",
        f"Estimated memory per GPU (GiB) on {num_processes} GPUs: batch_size {config.batch_size}, gradient"
        f" checkpointing {'on' if config.gradient_checkpointing else 'off'},"
        f" {'AdamW8bit' if config.optim.use_8bit_adam else 'AdamW'}:",
        "",
        "| size | precision | engine | weights | gradients | optimizer | activations | total |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.resolution}²×{row.num_frames} | {row.precision} | {row.engine} | {row.weights:.1f} |"
            f" {row.gradients:.1f} | {row.optimizer:.1f} | {row.activations:.1f} | {row.total:.1f} |"
        )
    lines += [
        "",
        "Not counted: the CUDA context and allocator slack (about 1-2 GiB), the frozen image model's forward of L_reg"
        " and the VAE / text encoder's no-grad passes (transient; none with data.kind latents).",
    ]
    return "\n".join(lines)
