"""What several commands check before any work."""

import errno
import os
from pathlib import Path


def check_seed(seed: int) -> int:
    if not 0 <= seed < 2**64:
        raise ValueError(f"--seed must be from 0 to 2**64 - 1, got {seed}.")
    return seed


def check_output_folder(folder: str | os.PathLike) -> None:
    """Before any work: a one-line error when `folder`, or a folder above it, is a file (the results could not be
    written after the work)."""
    path = Path(folder).expanduser().absolute()
    file = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if file is not None:
        raise FileExistsError(errno.EEXIST, "File exists", str(file))
