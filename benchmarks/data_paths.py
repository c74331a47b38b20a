"""
The training data paths side by side: how fast each feeds clips, and what a step costs from cached latents.

    python benchmarks/data_paths.py            # 64 Shapes clips of 16 frames, 10 training steps each way
    python benchmarks/data_paths.py --quick    # 8 clips of 4 frames, 2 steps (the test)
    python benchmarks/data_paths.py --sd15-width   # only the step, at Stable Diffusion 1.5's size (about 6 min)

- **Index of 10 M samples**: `expand_shards` of 100,000 shard URLs of 100 samples (a brace pattern): time and the
  memory the list takes (shards, never samples, are listed).
- **Loader clips/s**: the same Shapes clips as WebDataset shards (0 and 2 loader workers) and as mp4 files with a
  WebVid CSV, decoded and resized as training reads them.
- **Training step**: the harivo stage on the embedded base model (`configs/shapes/harivo.yaml`'s model settings),
  from the shards' pixels against a `harivo precompute` cache of the same clips; seconds per step, and the share of
  the pixel step that the VAE and the text encoder take.
"""

import argparse
import csv
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))


def index_of_ten_million() -> dict:
    from harivo.data.shards import expand_shards

    tracemalloc.start()
    start = time.perf_counter()
    shards = expand_shards("https://example.com/webvid/{000000..099999}.tar")
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"shards": len(shards), "seconds": seconds, "MiB": peak / 2**20}


def loader_rate(dataset, workers: int, clips: int, collate) -> float:
    loader = DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=collate)
    start = time.perf_counter()
    for index, _ in enumerate(loader, start=1):
        if index == clips:
            break
    return clips / (time.perf_counter() - start)


def step_comparison(work: Path, config: str, model: list[str], shards: str, steps: int) -> tuple[dict, float]:
    """Seconds per harivo training step from the shards' pixels and from a `harivo precompute` cache of them (after
    one warm-up step), and the share of the pixel step the VAE and the text encoder take (measured on one batch)."""
    import gc
    import json

    from harivo.cli import main as cli
    from harivo.data.shards import ShardVideoDataset, expand_shards
    from harivo.data.webvid import collate_videos
    from harivo.training import Trainer, load_config

    run = [*model, "data.frame_stride=1", "num_validation_samples=0", "validate_every=0", "log_every=1",
           f"checkpoint_every={steps + 1}", "optim.lr_warmup_steps=0"]  # fmt: skip
    shard_data = ["data.kind=webdataset", f"data.shards={shards}", "data.shuffle_buffer=1"]
    cli(["precompute", "--config", config, *run, *shard_data, "--out", str(work / "cache")])
    seconds = {}
    for name, data in (
        ("pixels (shards)", shard_data),
        ("cached latents", ["data.kind=latents", f"data.latents={work / 'cache'}"]),
    ):
        trainer = Trainer(load_config(config, [*run, *data, f"output_dir={work / name}", f"max_steps={steps + 1}"]))
        trainer.train()
        lines = (work / name / "logs.jsonl").read_text().splitlines()
        records = [record for record in map(json.loads, lines) if "total" in record]
        seconds[name] = (records[-1]["elapsed_s"] - records[0]["elapsed_s"]) / (len(records) - 1)  # no warm-up
        if name == "cached latents":
            break
        stage = trainer.stage
        config_of_run = trainer.config
        del trainer
        gc.collect()
    stream = ShardVideoDataset(expand_shards(shards), num_frames=config_of_run.data.num_frames, frame_stride=1, shuffle_buffer=1,
                               resolution=config_of_run.data.resolution)  # fmt: skip
    batch = next(iter(DataLoader(stream, batch_size=config_of_run.batch_size, collate_fn=collate_videos)))
    start = time.perf_counter()
    for _ in range(3):
        stage.encode_video(batch["pixel_values"])
        stage.encode_text(batch["caption"])
    encoders = (time.perf_counter() - start) / 3
    return seconds, encoders / seconds["pixels (shards)"]


def sd15_width_steps(output: str | None, steps: int) -> dict:
    """The pixel step against the cached step at Stable Diffusion 1.5's width (random weights: nothing downloaded)."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from harivo.data.shards import shapes_samples, write_shards
    from harivo.defaults import default_model_paths
    from harivo.training.estimate import SD15_TEXT, SD15_UNET, SD15_VAE

    with tempfile.TemporaryDirectory() as temporary:
        work = Path(output or temporary)
        base = work / "sd15-width"
        if not (base / "model_index.json").is_file():
            torch.manual_seed(0)
            StableDiffusionPipeline(
                vae=AutoencoderKL(**SD15_VAE, sample_size=512, scaling_factor=0.18215),
                text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT)),
                tokenizer=CLIPTokenizer.from_pretrained(default_model_paths()[0], subfolder="tokenizer"),
                unet=UNet2DConditionModel(**SD15_UNET),
                scheduler=DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            ).save_pretrained(base)  # fmt: skip
        (work / "shards").mkdir(parents=True, exist_ok=True)
        write_shards(shapes_samples(8, num_frames=8, resolution=128), str(work / "shards" / "%05d.tar"), per_shard=2)
        model = [f"harivo.base_model={base}", "data.resolution=128", "data.num_frames=8", "batch_size=1",
                 "mixed_precision='no'", "gradient_checkpointing=false", "data.num_workers=0", "harivo.validation_prompts=[]"]  # fmt: skip
        seconds, share = step_comparison(
            work, "configs/webvid/harivo_sd15.yaml", model, str(work / "shards" / "{00000..00003}.tar"), steps
        )
    print("Stable Diffusion 1.5 width (random weights), 128 px x 8 frames, batch 1, fp32, 2 CPU cores")
    print("| training data | s / step |\n| --- | ---: |")
    for name, value in seconds.items():
        print(f"| {name} | {value:.2f} |")
    print(f"VAE + text encoder: {100 * share:.0f} % of the pixel step;"
          f" the cache takes {seconds['cached latents'] / seconds['pixels (shards)']:.2f}x its time")  # fmt: skip
    return {"training seconds per step": seconds, "VAE + text encoder share of the pixel step": share}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 clips of 4 frames, 2 steps.")
    parser.add_argument("--output", default=None, help="Working folder (default: a temporary one).")
    parser.add_argument(
        "--sd15-width", action="store_true",
        help="Only the training step, on a randomly initialised base of Stable Diffusion 1.5's size (U-Net, VAE, CLIP"
        " ViT-L text encoder) with configs/webvid/harivo_sd15.yaml's adapter, 8 clips of 8 frames at 128 px, batch 1.",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.sd15_width:
        return sd15_width_steps(args.output, steps=2 if args.quick else 3)
    clips, frames, steps = (8, 4, 2) if args.quick else (64, 16, 10)

    from harivo.data.shards import ShardVideoDataset, expand_shards, shapes_samples, write_shards
    from harivo.data.webvid import WebVidDataset, collate_videos
    from harivo.defaults import default_model_paths
    from harivo.video_io import save_video

    results: dict = {"index of 10 M samples": index_of_ten_million()}
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(args.output or temporary)
        (work / "shards").mkdir(parents=True, exist_ok=True)
        (work / "videos").mkdir(exist_ok=True)
        samples = list(shapes_samples(clips, num_frames=frames))
        write_shards(iter(samples), str(work / "shards" / "%05d.tar"), per_shard=max(clips // 4, 1))
        with (work / "videos.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["videoid", "name", "path"])
            for index, (clip, caption, _) in enumerate(samples):
                save_video(clip, work / "videos" / f"{index:05d}.mp4")
                writer.writerow([f"{index:05d}", caption, f"videos/{index:05d}.mp4"])
        shards = expand_shards(str(work / "shards" / "{00000..00003}.tar"))
        rates = {}
        for workers in (0, 2):
            stream = ShardVideoDataset(expand_shards(shards), num_frames=frames, frame_stride=1, shuffle_buffer=1)
            stream.check_readers(workers, 1)
            rates[f"shards, {workers} workers"] = loader_rate(stream, workers, clips, collate_videos)
        table = WebVidDataset(work / "videos.csv", num_frames=frames, frame_stride=1)
        rates["CSV + mp4 files, 0 workers"] = loader_rate(table, 0, clips, collate_videos)
        results["loader clips/s"] = rates

        base = str(default_model_paths()[0])
        model = ["stage=harivo", f"harivo.base_model={base}", f"data.num_frames={frames}", "batch_size=4"]
        pattern = str(work / "shards" / "{00000..00003}.tar")
        step_seconds, share = step_comparison(work, "configs/shapes/harivo.yaml", model, pattern, steps)
        results["training seconds per step"] = step_seconds
        results["VAE + text encoder share of the pixel step"] = share

    print(f"index of 10 M samples: {results['index of 10 M samples']['shards']} shards listed in"
          f" {results['index of 10 M samples']['seconds']:.2f} s, {results['index of 10 M samples']['MiB']:.1f} MiB")  # fmt: skip
    print("| loader | clips/s |\n| --- | ---: |")
    for name, rate in results["loader clips/s"].items():
        print(f"| {name} | {rate:.1f} |")
    print("| training data | s / step |\n| --- | ---: |")
    for name, seconds in results["training seconds per step"].items():
        print(f"| {name} | {seconds:.3f} |")
    print(f"VAE + text encoder: {100 * results['VAE + text encoder share of the pixel step']:.0f} % of the pixel step")
    return results


if __name__ == "__main__":
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    main()
