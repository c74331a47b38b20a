import numpy as np
import pytest

from harivo.data import IMAGE_WORLD, ShapeScene, render_clip, render_frame
from harivo.data.shapes import COLOURS, SHAPES, render_concept_images
from harivo.evaluation.detector import detect_clip, detect_frame, motion_direction
from harivo.evaluation.metrics import score_clip


def test_detector_reads_back_every_attribute_of_rendered_frames():
    rng = np.random.default_rng(0)
    for _ in range(60):
        scene = IMAGE_WORLD.sample(rng, with_motion=True)
        frames, trajectory = render_clip(scene, 3, rng)
        for detection, center in zip(detect_clip(frames), trajectory.centers):
            got = (detection.shape, detection.colour, detection.size, detection.background, detection.style)
            assert got == (scene.shape, scene.colour, scene.size, scene.background, scene.style)
            assert np.allclose(detection.center, center, atol=0.7)


def test_no_object_is_reported_as_not_found():
    empty = render_frame(ShapeScene("circle", "red", "small", "grey", "checkered"), (-50.0, -50.0))
    detection = detect_frame(empty)
    assert not detection.found and (detection.background, detection.style) == ("grey", "checkered")


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_motion_direction_of_rendered_clips(direction):
    scene = ShapeScene("star", "yellow", "large", "white", "striped", direction)
    frames, _ = render_clip(scene, 16, np.random.default_rng(1))
    centers = np.array([d.center for d in detect_clip(frames)])
    assert motion_direction(centers) == direction


def test_a_static_object_has_no_direction():
    scene = ShapeScene("circle", "red", "small", "black", "plain")
    frames = np.stack([render_frame(scene, (30.0, 30.0))] * 8)
    assert motion_direction(np.array([d.center for d in detect_clip(frames)])) is None


@pytest.mark.parametrize(
    ("shape", "colour"), [("heart", "red"), ("cross", "blue"), ("circle", "orange"), ("heart", "orange")]
)
def test_concept_shapes_and_colours_are_scored_when_a_prompt_asks_for_them(shape, colour):
    """Shapes and colours no caption has (DreamBooth concepts) are read back from rendered clips, competing with the
    world's own; a world prompt is not scored against them (its detector is unchanged)."""
    scene = ShapeScene(shape, colour, "large", "white", "striped", "right")
    frames, _ = render_clip(scene, 8, np.random.default_rng(0))
    scores = score_clip(frames, scene)
    assert scores["fidelity"] == 1.0 and scores["motion_correct"] == 1.0
    world = ShapeScene("circle", "red", "large", "white", "striped", "right")
    assert score_clip(frames, world)["fidelity"] < 1.0
    assert detect_frame(frames[0]).shape in SHAPES and detect_frame(frames[0]).colour in COLOURS


def test_concept_images_are_captioned_with_the_identifier(tmp_path):
    scenes = render_concept_images(tmp_path, "v", shape="heart", count=3)
    assert [s.shape for s in scenes] == ["heart"] * 3
    caption = (tmp_path / "00000.txt").read_text()
    assert " v on a " in caption and "heart" not in caption
    render_concept_images(tmp_path / "orange", "q", colour="orange", count=2)
    assert (tmp_path / "orange" / "00001.txt").read_text().startswith(("a small q ", "a large q "))
    with pytest.raises(ValueError, match="not a concept shape"):
        render_concept_images(tmp_path, "v", shape="circle")
    with pytest.raises(ValueError, match="Give a concept shape or a concept colour"):
        render_concept_images(tmp_path, "v")
