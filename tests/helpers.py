"""Helpers shared by the tests."""

import torch

from harivo.models import HarivoAdapter

NUM_FRAMES = 4


def randomize_temporal_layers(adapter: HarivoAdapter, seed: int = 1, std: float = 0.1) -> HarivoAdapter:
    """Give the zero-initialised temporal output projections (and frame tokens) non-zero weights, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in adapter.named_parameters():
            if "proj_out" in name or "frame_token_generator.mlp" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return adapter


def tiny_pipeline(tiny_sd, adapter: HarivoAdapter, unet=None):
    """A `HarivoPipeline` of the tiny SD components (or `unet`) and `adapter`, DDIM, no progress bar."""
    from diffusers import DDIMScheduler

    from harivo.pipelines import HarivoPipeline

    parts = tiny_sd.components
    pipe = HarivoPipeline(
        parts["vae"], parts["text_encoder"], parts["tokenizer"], unet or parts["unet"], adapter, DDIMScheduler()
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def frame_by_frame(unet, sample: torch.Tensor, timestep, text: torch.Tensor) -> torch.Tensor:
    """The T2I U-Net applied to each frame: (B, C, F, h, w) in, (B, C, F, h, w) out."""
    batch, channels, frames, height, width = sample.shape
    images = sample.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)  # frames into batch
    context = text.repeat_interleave(frames, dim=0)
    out = unet(images, timestep, encoder_hidden_states=context).sample
    return out.reshape(batch, frames, channels, height, width).permute(0, 2, 1, 3, 4)


def save_tiny_clip(path):
    """A random-weight CLIP (model + processor with the Shapes tokenizer) saved in transformers layout at `path`."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from harivo.data.shapes import build_shapes_tokenizer

    torch.manual_seed(0)
    tokenizer = build_shapes_tokenizer(model_max_length=16)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def kohya_lora(unet, text_encoder, rank: int = 2, alpha: float = 1.0, seed: int = 0, std: float = 0.3) -> dict:
    """A LoRA in the kohya / A1111 community format (`lora_unet_*` / `lora_te_*` keys with `lora_down`, `lora_up` and
    `alpha`) on every attention projection of the image U-Net and the text encoder, as kohya's trainer writes them."""
    generator = torch.Generator().manual_seed(seed)
    layers = {}
    for name, module in unet.named_modules():
        if "motion_modules" not in name and name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
            layers["lora_unet_" + name.replace(".", "_")] = module
    for name, module in text_encoder.named_modules():
        if name.endswith(("q_proj", "k_proj", "v_proj", "out_proj")):
            layers["lora_te_text_model_" + name.removeprefix("text_model.").replace(".", "_")] = module
    state = {}
    for key, module in layers.items():
        state[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=generator) * std
        state[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=generator) * std
        state[f"{key}.alpha"] = torch.tensor(alpha)
    return state


def merge_kohya_lora(unet, text_encoder, state: dict, scale: float = 1.0) -> None:
    """Add a kohya LoRA into the weights by hand (W += scale * alpha / rank * up @ down): the reference a loader
    must match."""
    modules = {"lora_unet_" + n.replace(".", "_"): m for n, m in unet.named_modules()}
    modules.update(
        {
            "lora_te_text_model_" + n.removeprefix("text_model.").replace(".", "_"): m
            for n, m in text_encoder.named_modules()
        }
    )
    with torch.no_grad():
        for key in {k.rsplit(".", 2)[0] for k in state if k.endswith("lora_down.weight")}:
            down, up = state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"]
            modules[key].weight += scale * float(state[f"{key}.alpha"]) / down.shape[0] * (up @ down)


def save_tiny_ip_adapter(unet, folder, image_embed_dim: int = 16, seed: int = 0):
    """An IP-Adapter for `unet` (a `UNetMotionModel`) in the original file layout (`image_proj.*`, `ip_adapter.N.*`),
    with a random-weight CLIP image encoder in `folder/image_encoder`, as the real ones are shipped. Returns the
    weight file's name."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    generator = torch.Generator().manual_seed(seed)
    cross, blocks = unet.config.cross_attention_dim, list(unet.config.block_out_channels)
    weights = {
        "image_proj.proj.weight": torch.randn(4 * cross, image_embed_dim, generator=generator) * 0.2,
        "image_proj.proj.bias": torch.zeros(4 * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key_id = 1
    for name in unet.attn_processors:  # diffusers' order: every spatial cross-attention, numbered 1, 3, 5, ...
        if name.endswith("attn1.processor") or "motion_modules" in name:
            continue
        if name.startswith("mid_block"):
            hidden = blocks[-1]
        elif name.startswith("up_blocks"):
            hidden = blocks[::-1][int(name[len("up_blocks.")])]
        else:
            hidden = blocks[int(name[len("down_blocks.")])]
        for kind in ("to_k_ip", "to_v_ip"):
            weights[f"ip_adapter.{key_id}.{kind}.weight"] = torch.randn(hidden, cross, generator=generator) * 0.3
        key_id += 2
    save_file(weights, str(folder / "ip-adapter.safetensors"))
    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=image_embed_dim)  # fmt: skip
    CLIPVisionModelWithProjection(config).save_pretrained(folder / "image_encoder")
    return "ip-adapter.safetensors"
