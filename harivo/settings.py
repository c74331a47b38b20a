"""What made a video: the settings `harivo generate` (and `harivo ui`) write beside each output, and reading them back
for `harivo generate --from`.

The file `<output>.json` (e.g. `out.mp4.json`) holds every option of the command, with paths made absolute, plus what
the run resolved (the sampler, the device, the harivo and torch versions); the same text is stored in the video's
metadata, so a video that lost its `.json` still says how it was made.
"""

import argparse
import json
import os
import warnings
from pathlib import Path
from typing import Any

from .loras import parse_loras

FORMAT = "harivo-generate/1"
# Options that name files or folders: stored as absolute paths, so `--from` works from any folder
PATH_OPTIONS = ("base_model", "base_config", "adapter", "video", "image", "ip_adapter", "ip_adapter_image")
PATH_LIST_OPTIONS = ("control", "controlnet")
# Options that say where and how to write, not what to make, and the opt-ins to risk: not stored, and ignored in a
# settings file (anyone can write one, or a video's metadata): they come only from the command line
NOT_STORED = ("command", "output", "from_settings", "skip_memory_check", "allow_pickle", "max_frames")


def settings_path(video: str | os.PathLike) -> Path:
    """Where the settings of `video` go: `out.mp4` -> `out.mp4.json`."""
    video = Path(video)
    return video.with_name(video.name + ".json")


def _absolute(value: str | None) -> str | None:
    """A local path made absolute; a hub id (no such file here) stays as it is."""
    if value is None:
        return None
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def record(options: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
    """
    The settings of one `harivo generate` run.

    Args:
        options: The command's options (`vars(args)`); paths are made absolute, output-only options dropped.
        resolved: What the run chose where an option was left to its default (sampler, device, dtype, ...), for
            the reader; `--from` does not read it.
    """
    stored = {key: value for key, value in options.items() if key not in NOT_STORED}
    for key in PATH_OPTIONS:
        if key in stored:
            stored[key] = _absolute(stored[key])
    for key in PATH_LIST_OPTIONS:
        if stored.get(key):
            stored[key] = [_absolute(value) for value in stored[key]]
    if stored.get("lora"):  # PATH[:SCALE]: the path part made absolute, the scale kept
        stored["lora"] = [_absolute_lora(value) for value in stored["lora"]]
    stored = {key: list(value) if isinstance(value, tuple) else value for key, value in stored.items()}
    return {"format": FORMAT, "options": stored, "resolved": resolved}


def _absolute_lora(value: str) -> str:
    """A `--lora PATH[:SCALE]` value with its path made absolute (split as the CLI splits it)."""
    ((path, scale),) = parse_loras([value])
    return f"{_absolute(path)}:{scale}"


def write_settings(video: str | os.PathLike, settings: dict[str, Any]) -> Path:
    """Write `settings` as `<video>.json`; returns its path."""
    path = settings_path(video)
    path.write_text(json.dumps(settings, indent=2) + "\n")
    return path


def read_settings(path: str | os.PathLike, known: set[str]) -> dict[str, Any]:
    """
    The options stored by `record`, from a settings file or from a video (its `.json` beside it, else its metadata).

    Args:
        path: `out.mp4.json`, or `out.mp4` itself.
        known: The option names the reader accepts (`harivo generate`'s); any other raises a one-line `ValueError`
            (a file from a newer harivo, or not a settings file). `NOT_STORED` options (the output, the opt-ins)
            are dropped with a warning: a file must not choose where files go or take a risk the user did not.
    """
    from .video_io import VIDEO_SUFFIXES, read_video_comment

    file = Path(path).expanduser()
    if file.is_dir():
        raise IsADirectoryError(f"--from {path} is a folder: give a video's .json settings or the video itself.")
    if not file.is_file():
        raise FileNotFoundError(f"--from {path}: no such file (give a video's .json settings or the video itself).")
    if file.suffix.lower() in (*VIDEO_SUFFIXES, ".gif"):
        beside = settings_path(file)
        try:
            text = beside.read_text(encoding="utf-8") if beside.is_file() else read_video_comment(file)
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"--from {path}: {error}") from None
        if text is None:
            raise ValueError(
                f"--from {path}: the video has no {beside.name} beside it and no settings in its metadata."
            )
    else:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"--from {path}: not a settings file (not UTF-8 text: {error.reason}).") from None
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--from {path}: not a settings file ({error.msg} at line {error.lineno}).") from None
    except RecursionError:
        raise ValueError(f"--from {path}: not a settings file (its JSON is nested too deeply).") from None
    if (
        not isinstance(settings, dict)
        or settings.get("format") != FORMAT
        or not isinstance(settings.get("options"), dict)
    ):
        raise ValueError(f"--from {path}: not a harivo generate settings file (expected format {FORMAT!r}).")
    options = settings["options"]
    unknown = sorted(set(options) - known - set(NOT_STORED))
    if unknown:
        raise ValueError(
            f"--from {path}: unknown option(s) {', '.join(unknown)} (written by another harivo version?); remove them."
        )
    ignored = sorted(set(options) & set(NOT_STORED))
    if ignored:
        warnings.warn(
            f"--from {path}: ignored {', '.join(ignored)}: where to write and the opt-ins come only from the command"
            " line.",
            stacklevel=2,
        )
    return {key: value for key, value in options.items() if key not in NOT_STORED}


def check_options(options: dict[str, Any], actions: dict[str, argparse.Action], origin: str) -> dict:
    """
    The options of a settings file checked against the command's arguments (`dest` -> argparse action), as if they
    had been typed: each value of the type, count and choices its flag takes, converted like argparse converts it.

    Raises:
        `ValueError`: One line naming the option, its flag and what it takes.
    """
    checked = {}
    for name, value in options.items():
        action = actions[name]
        flag = action.option_strings[-1] if action.option_strings else name
        try:
            checked[name] = _checked_value(action, value)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
            shown = json.dumps(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ValueError(f"{origin}: {name} is {shown}, which {flag} does not take ({error}).") from None
    return checked


def _checked_value(action: argparse.Action, value: Any) -> Any:
    if value is None or value == action.default:
        return value
    if action.nargs == 0:  # a switch: true or false
        if not isinstance(value, bool):
            raise TypeError("expected true or false")
        return value
    if isinstance(action, argparse._AppendAction):
        if not isinstance(value, list):
            raise TypeError("expected a list, one entry per use of the flag")
        return [_checked_entry(action, item) for item in value]
    return _checked_entry(action, value)


def _checked_entry(action: argparse.Action, value: Any) -> Any:
    if isinstance(action.nargs, int):
        if not isinstance(value, list) or len(value) != action.nargs:
            raise TypeError(f"expected a list of {action.nargs} values")
        return [_checked_scalar(action, item) for item in value]
    if action.nargs in ("+", "*"):
        if not isinstance(value, list):
            raise TypeError("expected a list")
        return [_checked_scalar(action, item) for item in value]
    return _checked_scalar(action, value)


def _checked_scalar(action: argparse.Action, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError("expected a number or a string")
    if isinstance(value, float) and action.type is int:
        raise TypeError("expected a whole number")
    converted = action.type(str(value)) if callable(action.type) else str(value)
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"expected one of {', '.join(map(str, action.choices))}")
    return converted
