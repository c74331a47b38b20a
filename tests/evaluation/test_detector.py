import numpy as np
import pytest

from harivo.data import IMAGE_WORLD, ShapeScene, render_clip, render_frame
from harivo.evaluation.detector import detect_clip, detect_frame, motion_direction


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
