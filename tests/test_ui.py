"""`harivo ui` driven in a real headless Chromium (Debian's package; nothing downloads a browser), on the embedded
default model."""

import json
import shutil
import socket

import imageio.v3 as iio
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("gradio", reason="the web UI needs Gradio (pip install 'harivo[ui]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests drive Chromium with Playwright")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium here: scripts/test.sh installs Debian's (apt-get install chromium)"
)
# Headless, and nothing that reaches for the network (this machine has none: Chromium would retry for each)
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from harivo.ui import launch

    output = tmp_path_factory.mktemp("ui")
    app = launch({}, output, port=free_port(), block=False)
    yield app
    app.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


def open_page(browser, app):
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page.goto(app.local_url)
    page.wait_for_selector("#prompt textarea", timeout=60_000)
    return page


def fill(page, prompt: str, frames: int, steps: int, seed: int) -> None:
    page.fill("#prompt textarea", prompt)
    for name, value in (("frames", frames), ("steps", steps)):
        page.fill(f"#{name} input[type=number]", str(value))
        page.keyboard.press("Tab")
    page.fill("#seed input", str(seed))
    page.keyboard.press("Tab")


def test_generate_in_the_browser_and_download_the_video(app, browser, tmp_path):
    pages = [open_page(browser, app), open_page(browser, app)]  # two tabs queue on the one model
    loaded = app.studio.model.pipe
    for seed, page in enumerate(pages, start=7):
        fill(page, "a large red circle moving right", frames=6, steps=3, seed=seed)
        page.click("#generate")
    for seed, page in enumerate(pages, start=7):
        page.wait_for_selector("#video video", timeout=120_000)
        links = page.locator("#download a[download]")
        links.first.wait_for(timeout=30_000)
        with page.expect_download() as download:
            links.first.click()
        video = tmp_path / f"{seed}.mp4"
        download.value.save_as(video)
        assert iio.imread(video, index=None, plugin="pyav").shape == (6, 64, 64, 3)
        settings = json.loads(app.studio.output_dir.joinpath(download.value.suggested_filename + ".json").read_text())
        assert settings["options"]["seed"] == seed and settings["options"]["num_frames"] == 6
        assert f'"seed": {seed}' in page.locator(".cm-content").inner_text()  # the settings, shown beside it
    assert app.studio.model.pipe is loaded  # no reload between calls


@pytest.fixture(scope="module")
def app_with_lora_and_ip_adapter(tmp_path_factory):
    """The app on the embedded model with a LoRA of its base model and an IP-Adapter (tiny random weights)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    from harivo import load_default_pipeline
    from harivo.defaults import default_model_paths
    from harivo.ui import launch
    from tests.helpers import kohya_lora, save_tiny_ip_adapter

    folder = tmp_path_factory.mktemp("rich")
    base = default_model_paths()[0]
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    save_file(kohya_lora(unet, text_encoder, std=0.05), folder / "style.safetensors")
    (folder / "ip").mkdir()
    weights = folder / "ip" / save_tiny_ip_adapter(load_default_pipeline().unet, folder / "ip")
    model = {"lora": [f"{folder / 'style.safetensors'}:0.8"], "ip_adapter": str(weights)}
    app = launch(model, folder / "out", port=free_port(), block=False)
    yield app
    app.close()


def generate_and_read_settings(page, app) -> dict:
    """Press Generate, wait for the video (or fail with the page's error), return the new video's settings."""
    before = set(app.studio.output_dir.glob("*.mp4.json"))
    page.click("#generate")
    errors = page.locator(".toast-body")
    for _ in range(600):  # the page shows the new video (the old one is still there) or an error
        written = set(app.studio.output_dir.glob("*.mp4.json")) - before
        if written or errors.count():
            break
        page.wait_for_timeout(200)
    assert not errors.count(), errors.first.inner_text()
    (written,) = written
    page.wait_for_selector("#video video", timeout=30_000)
    return json.loads(written.read_text())


def test_every_power_user_control_in_the_browser(app_with_lora_and_ip_adapter, browser, tmp_path):
    """Motion scale, PAG, FreeInit, windows with a loop and a LoRA's slider, then an IP-Adapter image (PAG does not
    combine with it), set in the page: the videos' settings hold each of them."""
    app = app_with_lora_and_ip_adapter
    look = tmp_path / "look.png"
    iio.imwrite(look, np.full((32, 32, 3), (30, 30, 200), np.uint8))
    page = open_page(browser, app)
    fill(page, "a large red circle moving right on a plain black background", frames=12, steps=2, seed=5)
    page.click("text=Motion strength, PAG, FreeInit")
    page.click("text=Long videos and loops")
    for selector, value in (("#motion-scale input[type=number]", "0.5"), ("#pag-scale input[type=number]", "1.5"),
                            ("#free-init input", "2"), ("#context-length input", "8"), ("#context-stride input", "4"),
                            ("#lora-0 input[type=number]", "0.3")):  # fmt: skip
        page.fill(selector, value)
        page.keyboard.press("Tab")
    page.check("#loop input[type=checkbox]")
    page.click("#window-weighting input")
    page.get_by_role("option", name="gaussian").click()
    settings = generate_and_read_settings(page, app)
    options = settings["options"]
    assert (options["motion_scale"], options["pag_scale"], options["free_init"]) == ("0.5", 1.5, 2)
    assert (options["context_length"], options["context_stride"], options["loop"]) == (8, 4, True)
    assert options["window_weighting"] == "gaussian" and options["lora"] == [f"{app.studio.loras[0][0]}:0.3"]
    assert options["ip_adapter"] is None and settings["resolved"]["frames"] == 12

    page.fill("#pag-scale input[type=number]", "0")
    page.keyboard.press("Tab")
    page.click("text=IP-Adapter: the look of an image")
    page.set_input_files("#ip-image input[type=file]", str(look))
    page.wait_for_selector("#ip-image img", timeout=30_000)
    page.fill("#ip-scale input[type=number]", "0.6")  # after the upload, which may redraw the accordion
    page.keyboard.press("Tab")
    options = generate_and_read_settings(page, app)["options"]
    assert options["ip_adapter"] and options["ip_adapter_scale"] == 0.6 and options["pag_scale"] == 0
    assert options["ip_adapter_image"].startswith(str(app.studio.output_dir))


def test_the_fast_switch_samples_the_models_few_step_variant(app, browser):
    page = open_page(browser, app)
    fill(page, "a large red circle moving right on a plain black background", frames=6, steps=30, seed=2)
    page.check("#fast input[type=checkbox]")
    settings = generate_and_read_settings(page, app)
    assert settings["options"]["fast"] == "adapter" and settings["options"]["steps"] is None
    assert (settings["resolved"]["steps"], settings["resolved"]["guidance_scale"]) == (4, 1.0)


def test_a_bad_input_shows_the_cli_error_in_the_page(app, browser):
    page = open_page(browser, app)
    fill(page, "a large red circle moving right", frames=8, steps=3, seed=0)
    page.click("text=Keyframes (prompt travel)")
    page.fill("#keyframes textarea", "99: a blue square")
    page.click("#generate")
    page.get_by_text("keyframe 99 is outside the video's frames 0 to 7").first.wait_for(timeout=60_000)
    page.fill("#keyframes textarea", "a blue square")
    page.click("#generate")
    page.get_by_text("write FRAME: PROMPT").first.wait_for(timeout=60_000)


def test_the_form_becomes_the_generate_request(tmp_path):
    """Uploads are kept beside the videos (the settings point at files that stay); every form field reaches the
    request, checked as if typed on the command line."""
    from harivo.ui import Studio

    image = tmp_path / "first.png"
    iio.imwrite(image, np.zeros((8, 8, 3), np.uint8))
    form = {
        "prompt": "a red circle", "negative_prompt": "blur", "num_frames": 12, "steps": 20, "guidance_scale": 6.0,
        "mg_scale": 40, "height": 0, "width": 128, "scheduler": "euler", "seed": 3, "motion": "left", "speed": 2.0,
        "keyframes": "6: a blue circle\n\n 9 : a green circle", "video": None, "image": str(image), "strength": 0.6,
        "control": str(image), "control_frames": "0, 11",
    }  # fmt: skip
    studio = Studio({"controlnet": ["nets/shapes"]}, tmp_path / "out")
    with pytest.raises(ValueError, match="does not combine with --video or --image"):
        studio.request(form)
    form = {**form, "control": None, "control_frames": ""}
    parsed = studio.request(form)
    assert (parsed.prompt, parsed.negative_prompt, parsed.num_frames, parsed.steps) == ("a red circle", "blur", 12, 20)
    assert (parsed.guidance_scale, parsed.mg_scale, parsed.height, parsed.width) == (6.0, 40.0, None, 128)
    assert (parsed.scheduler, parsed.seed, parsed.motion, parsed.strength) == ("euler", 3, (-2.0, 0.0), 0.6)
    assert parsed.prompt_at == [["6", "a blue circle"], ["9", "a green circle"]]
    assert parsed.keyframes() == {0: "a red circle", 6: "a blue circle", 9: "a green circle"}
    assert parsed.controlnet is None  # the launch's ControlNets serve condition videos only
    kept = tmp_path / "out" / "inputs"
    assert parsed.image.startswith(str(kept)) and len(list(kept.iterdir())) == 1
    controlled = studio.request({**form, "image": None, "control": str(image), "control_frames": "0, 11"})
    assert controlled.control == [parsed.image] and controlled.control_frames == "0,11"
    assert controlled.controlnet == ["nets/shapes"] and controlled.control_frame_indices() == [0, 11]
    assert len(list(kept.iterdir())) == 1  # one upload, kept once
    for bad, message in (
        ({"keyframes": "six x"}, "write FRAME: PROMPT"), ({"seed": None}, "Seed is empty"),
        ({"guidance_scale": "many"}, "the form: guidance_scale is \"many\", which --guidance-scale does not take"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            studio.request({**form, **bad})


def test_the_power_user_controls_become_request_options(tmp_path):
    """Motion strength, PAG, FreeInit, windows and loops, the IP-Adapter image and the LoRAs' sliders reach the
    request under generate's names; an IP-Adapter image without an IP-Adapter is one line."""
    from harivo.ui import Studio

    image = tmp_path / "look.png"
    iio.imwrite(image, np.zeros((8, 8, 3), np.uint8))
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"")
    form = {
        **GOOD_FORM, "num_frames": 24, "motion_scale": 0.5, "pag_scale": 3, "free_init": 2, "context_length": 8,
        "context_stride": 2, "window_weighting": "gaussian", "loop": True, "lora_0": 0.25,
    }  # fmt: skip
    request = Studio({"lora": [f"{lora}:0.8"]}, tmp_path / "out").request(form)
    assert (request.motion_scale, request.pag_scale, request.free_init) == ("0.5", 3.0, 2)
    assert (request.context_length, request.context_stride, request.window_weighting, request.loop) == (
        8, 2, "gaussian", True
    )  # fmt: skip
    assert request.lora == [f"{lora}:0.25"] and request.ip_adapter is None
    with pytest.raises(ValueError, match="start the app with harivo ui --ip-adapter FILE"):
        Studio({}, tmp_path / "out").request({**form, "ip_adapter_image": str(image)})
    weights = tmp_path / "ip" / "ip.safetensors"
    (weights.parent / "image_encoder").mkdir(parents=True)
    weights.write_bytes(b"")
    studio = Studio({"ip_adapter": str(weights)}, tmp_path / "out")
    request = studio.request({**form, "ip_adapter_image": str(image), "ip_adapter_scale": 0.6})
    assert request.ip_adapter == str(weights) and request.ip_adapter_scale == 0.6
    assert request.ip_adapter_image.startswith(str(studio.output_dir / "inputs"))
    assert studio.request(form).ip_adapter is None  # no image: no IP-Adapter for this video
    fast = studio.request({**form, "fast": True, "steps": 30, "guidance_scale": 3.0, "scheduler": "euler"})
    assert (fast.fast, fast.steps, fast.guidance_scale, fast.scheduler) == ("adapter", None, 7.5, None)


def test_clicks_in_one_second_with_one_seed_get_their_own_files(tmp_path):
    """Four users pressing Generate with seed 7 in the same second: four outputs, none over another or an old one."""
    from concurrent.futures import ThreadPoolExecutor

    from harivo.ui import Studio

    studio = Studio({}, tmp_path)
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: studio.new_output(7), range(4)))
    assert len(set(paths)) == 4 and all(path.parent == tmp_path for path in paths)
    paths[0].write_bytes(b"made")
    assert studio.new_output(7) not in paths


GOOD_FORM = {
    "prompt": "a large red circle moving right", "negative_prompt": "", "num_frames": 2, "steps": 1, "fast": False,
    "guidance_scale": 7.5, "mg_scale": 0, "height": 0, "width": 0, "scheduler": "the model's", "seed": 0,
    "motion": "from the prompt", "speed": 1, "keyframes": "", "video": None, "image": None, "strength": 0.8,
    "control": None, "control_frames": "", "motion_scale": 1, "pag_scale": 0, "free_init": 0, "context_length": 0,
    "context_stride": 0, "window_weighting": "pyramid", "loop": False, "ip_adapter_image": None, "ip_adapter_scale": 1,
}  # fmt: skip
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12),
    st.sampled_from(["-1", "nan", "1e9", "../../x", "0: a", "999: b"]),
)  # fmt: skip


@settings(max_examples=24, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    name=st.sampled_from([n for n in GOOD_FORM if n not in ("video", "image", "control", "ip_adapter_image")]),
    value=ODD_VALUES,
)
def test_the_generate_endpoint_answers_any_value_with_a_video_or_a_message(app, name, value):
    """The page's API, called as any client may: each odd value gives a video or a message (never a bare "Error"):
    one line from harivo, or gradio's own naming the field for a value no form can send (a string for a slider);
    nothing is written outside the output folder, and the server keeps answering."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(app.local_url, verbose=False)
    form = {**GOOD_FORM, name: value}
    before = set(app.studio.output_dir.parent.iterdir())
    try:
        video, _, _ = client.predict(*form.values(), api_name="/generate")
    except AppError as error:
        message = str(error)
        assert message and "has not enabled verbose error reporting" not in message, message
        if not message.startswith("Could not preprocess input component"):  # else gradio's own: names the field
            assert "\n" not in message, message
    else:
        assert video
    assert set(app.studio.output_dir.parent.iterdir()) == before  # only inside the output folder
