"""
The training data paths side by side: how fast each feeds clips, and what a step costs from cached latents.

    python benchmarks/data_paths.py            # 64 Shapes clips of 16 frames, 10 training steps each way
    python benchmarks/data_paths.py --quick    # 8 clips of 4 frames, 2 steps (the test)

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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 clips of 4 frames, 2 steps.")
    parser.add_argument("--output", default=None, help="Working folder (default: a temporary one).")
    args = parser.parse_args(argv)
    clips, frames, steps = (8, 4, 2) if args.quick else (64, 16, 10)

    from harivo.data.shards import ShardVideoDataset, expand_shards, shapes_samples, write_shards
    from harivo.data.webvid import WebVidDataset, collate_videos
    from harivo.defaults import default_model_paths
    from harivo.training import Trainer, load_config
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
            stream = ShardVideoDataset(shards, num_frames=frames, frame_stride=1, shuffle_buffer=1)
            stream.check_readers(workers, 1)
            rates[f"shards, {workers} workers"] = loader_rate(stream, workers, clips, collate_videos)
        table = WebVidDataset(work / "videos.csv", num_frames=frames, frame_stride=1)
        rates["CSV + mp4 files, 0 workers"] = loader_rate(table, 0, clips, collate_videos)
        results["loader clips/s"] = rates

        base = str(default_model_paths()[0])
        model = ["stage=harivo", f"harivo.base_model={base}", f"data.num_frames={frames}", "data.frame_stride=1",
                 "batch_size=4", "num_validation_samples=0", "validate_every=0", "log_every=1",
                 f"checkpoint_every={steps}", "optim.lr_warmup_steps=0"]  # fmt: skip
        shard_data = [
            "data.kind=webdataset",
            f"data.shards={work}/shards/{{00000..00003}}.tar",
            "data.shuffle_buffer=1",
        ]
        from harivo.cli import main as cli

        cli(
            ["precompute", "--config", "configs/shapes/harivo.yaml", *model, *shard_data, "--out", str(work / "cache")]
        )
        step_seconds = {}
        for name, data in (
            ("pixels (shards)", shard_data),
            ("cached latents", ["data.kind=latents", f"data.latents={work / 'cache'}"]),
        ):
            config = load_config(
                "configs/shapes/harivo.yaml", [*model, *data, f"output_dir={work / name}", f"max_steps={steps + 1}"]
            )
            trainer = Trainer(config)
            trainer.train()
            records = [
                r
                for r in map(__import__("json").loads, (work / name / "logs.jsonl").read_text().splitlines())
                if "total" in r
            ]
            step_seconds[name] = (records[-1]["elapsed_s"] - records[0]["elapsed_s"]) / (
                len(records) - 1
            )  # no warm-up
        stage = trainer.stage
        batch = next(
            iter(
                DataLoader(
                    ShardVideoDataset(shards, num_frames=frames, frame_stride=1, shuffle_buffer=1),
                    batch_size=4,
                    collate_fn=collate_videos,
                )
            )
        )
        start = time.perf_counter()
        for _ in range(3):
            stage.encode_video(batch["pixel_values"])
            stage.encode_text(batch["caption"])
        encoders = (time.perf_counter() - start) / 3
        results["training seconds per step"] = step_seconds
        results["VAE + text encoder share of the pixel step"] = encoders / step_seconds["pixels (shards)"]

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
