"""Precomputed latents: each clip's VAE posterior and its caption's text-encoder states, computed once.

`harivo precompute --config C --out DIR` runs the base model's VAE and text encoder over the config's data once and
writes safetensors shards (`latents-00000.safetensors`, ...) and `index.json`; `data.kind: latents` with
`data.latents: DIR` then trains without running either. Each clip keeps its posterior (the mean and the standard
deviation), not one sample of it, so training still draws a fresh latent from it at every step, the same draw the
VAE would make with the run's generator: a run on the cache follows the loss curve of a run on the pixels. The index
holds the base model's fingerprint; a cache of another base model is refused in one line.
"""

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

INDEX = "index.json"
FORMAT = "harivo-latents/1"


def model_fingerprint(*modules: torch.nn.Module) -> str:
    """A short hash of modules' configs and weights (each tensor's shape and first values): which base model a cache
    belongs to."""
    digest = hashlib.sha256()
    for module in modules:
        config = getattr(module, "config", {})
        config = config.to_dict() if hasattr(config, "to_dict") else dict(config)  # transformers' or diffusers'
        config = {key: value for key, value in config.items() if not key.startswith("_")}  # not paths or versions
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode() + str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _shard_name(index: int) -> str:
    return f"latents-{index:05d}.safetensors"


def precompute(
    encode,
    clips: Iterable[dict],
    out_dir: str | os.PathLike,
    fingerprint: str,
    total: int,
    clips_per_shard: int = 256,
    extra: dict | None = None,
) -> int:
    """
    Write the cache of `clips` (`{"pixel_values", "caption"}`; skipped ones, `{"skipped": reason}`, are counted) into
    `out_dir`, `clips_per_shard` a shard; `encode(pixel_values (B, F, 3, H, W), captions)` gives the tensors of each
    clip (`latent_mean`, `latent_std`, `text`, ...). Resumable: a shard is written whole (to a temporary name, then
    renamed) and a rerun starts after the shards already there (each shard records how many of `clips` it has
    read and skipped); a rerun of a complete cache changes nothing. Returns the clips in the cache.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / INDEX
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        if index.get("fingerprint") != fingerprint:
            raise ValueError(f"{out} holds latents of another base model; choose another --out or remove it.")
        if all((out / name).is_file() for name in index["shards"]):
            return index["clips"]  # complete
    written = sorted(out.glob("latents-*.safetensors"))
    shard, count, read, skipped = len(written), 0, 0, {}
    for path in written:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata()
        count += len(json.loads(metadata["captions"]))
        read = int(metadata.get("read", count))  # shards written before this was recorded had no skips
        skipped = json.loads(metadata.get("skipped", "{}"))
    pending = []
    progress = tqdm(total=total, initial=read, desc="precompute", unit="clip")
    clips = iter(clips)
    for _ in range(read):  # the clips of the shards already written, skipped ones included
        next(clips, None)

    def flush() -> None:
        nonlocal pending, shard
        if not pending:
            return
        captions = [c["caption"] for c in pending]
        tensors = {}
        for first in range(0, len(pending), 8):  # the models see a few clips at a time
            part = encode(
                torch.stack([c["pixel_values"] for c in pending[first : first + 8]]), captions[first : first + 8]
            )
            for key, value in part.items():
                tensors.setdefault(key, []).append(value)
        tensors = {key: torch.cat(values) for key, values in tensors.items()}
        name = _shard_name(shard)
        shard += 1
        temporary = out / f".{name}.tmp"
        metadata = {"captions": json.dumps(captions), "read": str(read), "skipped": json.dumps(skipped)}
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, temporary, metadata)
        os.replace(temporary, out / name)
        pending = []

    for clip in clips:
        progress.update(1)
        read += 1
        if "skipped" in clip:
            skipped[clip["skipped"]] = skipped.get(clip["skipped"], 0) + 1
            continue
        pending.append(clip)
        count += 1
        if count % clips_per_shard == 0:
            flush()
    flush()
    progress.close()
    shards = sorted(path.name for path in out.glob("latents-*.safetensors"))
    index = {"format": FORMAT, "fingerprint": fingerprint, "clips": count, "clips_per_shard": clips_per_shard,
             "shards": shards, "skipped": skipped, **(extra or {})}  # fmt: skip
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return count


class LatentDataset(Dataset):
    """
    The clips of a latent cache: `{"latent_mean", "latent_std", "text", ..., "caption"}` per clip.

    Args:
        folder (`str` or `os.PathLike`): The cache (`harivo precompute --out`).
        fingerprint (`str`, *optional*): The training base model's `model_fingerprint`; another is refused.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: str | None = None):
        self.folder = Path(folder).expanduser()
        index_path = self.folder / INDEX
        if not index_path.is_file():
            raise FileNotFoundError(
                f"data.latents: {self.folder} holds no latent cache ({INDEX}); make one with harivo precompute."
            )
        self.index = json.loads(index_path.read_text())
        if self.index.get("format") != FORMAT:
            raise ValueError(f"data.latents: {index_path} is not a harivo latent cache (format {FORMAT!r}).")
        if fingerprint is not None and self.index["fingerprint"] != fingerprint:
            raise ValueError(
                f"data.latents: {self.folder} was computed with another base model (fingerprint"
                f" {self.index['fingerprint']}, this one's {fingerprint}); precompute it again with this base model."
            )
        self.per_shard = self.index["clips_per_shard"]
        self._captions: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return self.index["clips"]

    def __getitem__(self, index: int) -> dict:
        shard, row = divmod(index, self.per_shard)
        path = self.folder / _shard_name(shard)
        with safe_open(path, framework="pt") as handle:
            item = {key: handle.get_slice(key)[row : row + 1][0] for key in handle.keys()}  # noqa: SIM118
            if shard not in self._captions:
                self._captions[shard] = json.loads(handle.metadata()["captions"])
        item["caption"] = self._captions[shard][row]
        return item


def single_pass(dataset) -> Iterator[dict]:
    """Each clip of `dataset` once: a map-style dataset in order, a shard stream's shards in order."""
    if hasattr(dataset, "single_pass"):
        yield from dataset.single_pass()
        return
    for index in range(len(dataset)):
        yield dataset[index]
