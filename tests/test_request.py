"""The request layer: one `GenerateRequest` that the command line, the UI's form and a settings file all become, and
the package's import structure that keeps the front-ends apart."""

import ast
import dataclasses
import json
from pathlib import Path

import pytest

import harivo
from harivo.cli import build_parser
from harivo.request import GenerateRequest

PACKAGE = Path(harivo.__file__).parent


def test_the_requests_choices_are_the_libraries():
    from harivo.pipelines.free_noise import WEIGHTING_SCHEMES
    from harivo.request import WINDOW_WEIGHTINGS

    assert WINDOW_WEIGHTINGS == WEIGHTING_SCHEMES


def test_the_generate_command_is_made_from_the_request():
    """Every option of `harivo generate` is a field of the request with the same default, and back (`--from` aside)."""
    actions = {a.dest: a for a in build_parser().subcommands["generate"]._actions if a.dest not in ("help", "run")}
    fields = {field.name: field for field in dataclasses.fields(GenerateRequest)}
    assert set(actions) - {"from_settings"} == set(fields)
    for name, field in fields.items():
        assert actions[name].default == field.default, name


def test_a_command_line_a_form_and_a_settings_file_give_one_request(tmp_path):
    argv = ["a large red circle moving right", "--seed", "3", "--num-frames", "12", "--mg-scale", "10",
            "--prompt-at", "6", "a blue circle", "--motion", "1", "0", "--motion-scale", "down=1,up=0.5"]  # fmt: skip
    from_cli = GenerateRequest.from_namespace(build_parser().parse_args(["generate", *argv]))
    options = {
        "prompt": "a large red circle moving right", "seed": "3", "num_frames": 12, "mg_scale": 10,
        "prompt_at": [[6, "a blue circle"]], "motion": [1, 0], "motion_scale": "down=1,up=0.5",
    }  # fmt: skip
    from_form = GenerateRequest.from_options(options, "the form")
    assert from_form == from_cli
    assert from_cli.keyframes() == {0: "a large red circle moving right", 6: "a blue circle"}
    assert from_cli.motion_scale_value() == {"down": 1.0, "up": 0.5}
    # The settings file is the request written out; read back, it is the same request
    settings = tmp_path / "out.mp4.json"
    settings.write_text(json.dumps(from_cli.settings({"video": str(tmp_path / "out.mp4")})))
    assert GenerateRequest.from_settings(settings) == from_cli
    assert GenerateRequest.from_settings(settings, seed=4) == dataclasses.replace(from_cli, seed=4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seed": -1}, "--seed must be from 0"),
        ({"prompt": ""}, "Give a prompt"),
        ({"num_frames": 2000}, "is more than --max-frames"),
        ({"motion_scale": "fast"}, "--motion-scale 'fast'"),
        ({"strength": 0.5}, "--strength needs --video or --image"),
        ({"control_frames": "0,15"}, "--control-frames needs --control"),
        ({"prompt_at": [["x", "b"]]}, "--prompt-at FRAME must be a frame number"),
        ({"lora": ["missing.safetensors"]}, "--lora missing.safetensors: no such file"),
        ({"scheduler": "fast"}, "Unknown --scheduler 'fast'"),
    ],
)
def test_a_bad_request_is_refused_when_made_in_one_line(options, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        GenerateRequest(**{"prompt": "a red circle", **options})
    assert "\n" not in str(error.value)


def test_a_form_value_of_the_wrong_kind_names_the_option():
    with pytest.raises(ValueError, match='the form: steps is "many", which --steps does not take') as error:
        GenerateRequest.from_options({"prompt": "a", "steps": "many"}, "the form")
    with pytest.raises(ValueError, match="the form: unknown option"):
        GenerateRequest.from_options({"prompt": "a", "speed": 2}, "the form")
    assert "\n" not in str(error.value)


def imports_of(path: Path, module: str) -> list[tuple[str, str]]:
    """`(harivo module, imported name)` of every import in a file (inside functions too; type-checking-only imports
    aside): `from . import x` of a module `x` imports the module."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            found += [(target, alias.name) for alias in node.names if target.startswith("harivo")]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.startswith("harivo")]
    return found


def test_no_import_circle_and_no_private_name_imported_across_modules():
    """The modules of `harivo` import each other without a circle (lazy imports inside functions count), and none
    imports another's private name: the CLI and the UI stand apart on the request layer."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph, private = {}, []
    for module, path in modules.items():
        edges = set()
        for target, name in imports_of(path, module):
            if f"{target}.{name}" in modules:
                edges.add(f"{target}.{name}")
            else:
                edges.add(target)
                if name.startswith("_") and not name.startswith("__"):
                    private.append(f"{module} imports {target}.{name}")
        graph[module] = edges & set(modules) - {module}
    assert not private, private

    visiting, done = [], set()

    def visit(module):  # depth first; a module met again on the current path closes a circle
        if module in visiting:
            raise AssertionError(f"import circle: {' -> '.join([*visiting[visiting.index(module) :], module])}")
        if module in done:
            return
        visiting.append(module)
        for target in sorted(graph[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert "harivo.cli" not in {t for t, _ in imports_of(modules["harivo.ui"], "harivo.ui")}
    assert not {t for t, _ in imports_of(modules["harivo.request"], "harivo.request")} & {"harivo.cli", "harivo.ui"}


def test_a_word_the_embedded_model_does_not_know_is_named(tmp_path):
    """An accented or misspelt word silently changed the scene; now the run names it (and still makes the video)."""
    from harivo.cli import main

    out = tmp_path / "out.mp4"
    prompt = "a large magénta circle moving right on a plain black background"
    with pytest.warns(UserWarning, match="does not know the prompt's word\\(s\\) 'magénta'"):
        main(["generate", prompt, "-o", str(out), "--num-frames", "2", "--steps", "1"])
    assert out.is_file()


def test_lora_and_ip_adapter_scales_change_without_loading_the_model_again(tmp_path):
    """A held model (the UI's) takes a new LoRA scale for the next request, and gives what a fresh load at that
    scale gives."""
    import imageio.v3 as iio
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    from harivo.defaults import default_model_paths
    from harivo.generation import LoadedModel, generate
    from tests.helpers import kohya_lora

    base = default_model_paths()[0]
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    lora = tmp_path / "style.safetensors"
    save_file(kohya_lora(unet, text_encoder), lora)

    def request(scale: float, name: str) -> GenerateRequest:
        return GenerateRequest(
            "a large red circle moving right on a plain black background", output=str(tmp_path / name),
            num_frames=2, steps=1, lora=[f"{lora}:{scale}"],
        )  # fmt: skip

    held = LoadedModel()
    generate(request(0.8, "a.mp4"), held)
    pipe = held.pipe
    generate(request(0.3, "b.mp4"), held)
    assert held.pipe is pipe  # not loaded again
    generate(request(0.3, "c.mp4"), LoadedModel())
    frames = [iio.imread(tmp_path / name, index=None, plugin="pyav") for name in ("a.mp4", "b.mp4", "c.mp4")]
    assert (frames[1] == frames[2]).all() and not (frames[0] == frames[1]).all()
