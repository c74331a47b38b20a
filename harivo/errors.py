"""Exceptions with messages that say what was wrong and what to do."""


class HarivoLoadError(OSError):
    """A model folder, hub id or weight file could not be loaded."""


class MissingVariantError(HarivoLoadError, ValueError):
    """No weight files of the asked `variant` (a `ValueError`, as diffusers raises it, and a `HarivoLoadError`)."""


class IncompatibleAdapterError(ValueError):
    """A HARIVO adapter was built for a base model of another architecture."""


class IncompatibleControlNetError(ValueError):
    """A ControlNet was built for a base model of another architecture."""


class TrainingDivergedError(RuntimeError):
    """The training loss (or its gradient) became NaN or infinite."""


class SamplingDivergedError(RuntimeError):
    """The latents became NaN or infinite while sampling."""


class CheckpointFileError(OSError):
    """A training checkpoint file is missing, truncated or not what it should be; the message names the file."""


class PickledStateError(CheckpointFileError):
    """A training checkpoint holds pickled state, and pickle was not allowed."""


class ShardError(OSError):
    """A training shard could not be read (missing, unreachable, or not a tar file); the message names it."""


# The errors the command line and the web UI report as one line (what to change), not as a traceback
USER_ERRORS = (
    HarivoLoadError,
    IncompatibleAdapterError,
    CheckpointFileError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    TrainingDivergedError,
    SamplingDivergedError,
    ShardError,
    MemoryError,
)


def describe_error(error: BaseException) -> str:
    """One line for a user error: its message on one line; an operating-system error on a path said plainly (a
    folder that is a file, `[Errno 17] File exists` from `mkdir`, says so)."""
    from pathlib import Path

    if isinstance(error, FileExistsError | NotADirectoryError) and error.filename is not None:
        file = next((p for p in (Path(error.filename), *Path(error.filename).parents) if p.is_file()), None)
        if file is not None:
            return f"{file} is a file, not a folder: choose another output folder."
    if isinstance(error, OSError) and error.errno is not None and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}."
    return " ".join(str(error).split())  # one line, whatever the library wrote
