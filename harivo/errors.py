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
