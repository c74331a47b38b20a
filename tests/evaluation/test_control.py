import numpy as np
import pytest

from harivo.data.shapes import ShapeScene, render_frame
from harivo.evaluation.control import CONTROL_PATHS, control_path, control_scores, silhouette_clip

SCENE = ShapeScene("triangle", "magenta", "large", "black", "striped")


@pytest.mark.parametrize("name", list(CONTROL_PATHS))
def test_every_path_keeps_a_large_object_inside_the_frame_and_is_not_in_the_video_data(name):
    centers = control_path(name, 16)
    assert centers.shape == (16, 2) and centers.min() >= 12 and centers.max() <= 52
    steps = np.diff(centers, axis=0)
    along_an_axis = (np.abs(steps).min(1) < 1e-6).all()
    speeds = np.linalg.norm(steps, axis=1)
    assert not (along_an_axis and np.allclose(speeds, speeds[0]) and 1.5 <= speeds[0] <= 2.5)


def test_a_clip_on_the_path_scores_perfectly_and_a_shifted_one_by_its_shift():
    centers = control_path("arc", 16)
    clip = np.stack([render_frame(SCENE, tuple(c)) for c in centers])
    perfect = control_scores(clip, SCENE, centers, controlled=[0, 15])
    assert perfect["position_error"] < 0.5 and perfect["follow"] == 1 and perfect["fidelity"] == 1
    assert perfect["keyframe_error"] < 0.5 and perfect["between_error"] < 0.5
    shifted = np.stack([render_frame(SCENE, (c[0] + 6, c[1])) for c in centers])
    scores = control_scores(shifted, SCENE, centers)
    assert scores["position_error"] == pytest.approx(6, abs=0.6) and scores["follow"] == 0
    empty = np.zeros_like(clip)
    assert control_scores(empty, SCENE, centers)["position_error"] == pytest.approx(64 * np.sqrt(2) / 2)


def test_silhouette_clip_draws_the_path():
    centers = control_path("diagonal", 4)
    clip = silhouette_clip(SCENE, centers)
    assert clip.shape == (4, 64, 64, 3)
    for frame, (x, y) in zip(clip, centers):
        ys, xs = np.nonzero(frame[..., 0] > 127)
        assert abs(xs.mean() - x) < 1.5 and abs(ys.mean() - y) < 3  # a triangle's centroid sits below its centre
    with pytest.raises(ValueError, match="Unknown control path"):
        control_path("spiral", 4)
