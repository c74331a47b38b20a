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
    "prompt": "a large red circle moving right", "negative_prompt": "", "num_frames": 2, "steps": 1,
    "guidance_scale": 7.5, "mg_scale": 0, "height": 0, "width": 0, "scheduler": "the model's", "seed": 0,
    "motion": "from the prompt", "speed": 1, "keyframes": "", "video": None, "image": None, "strength": 0.8,
    "control": None, "control_frames": "",
}  # fmt: skip
ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12),
    st.sampled_from(["-1", "nan", "1e9", "../../x", "0: a", "999: b"]),
)  # fmt: skip


@settings(max_examples=24, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(name=st.sampled_from([n for n in GOOD_FORM if n not in ("video", "image", "control")]), value=ODD_VALUES)
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
