import numpy as np
import pytest
import torch

from harivo.data import (
    IMAGE_WORLD,
    VIDEO_WORLD,
    ShapeScene,
    ShapesImageDataset,
    ShapesVideoDataset,
    build_shapes_tokenizer,
    render_clip,
    render_frame,
)
from harivo.data.shapes import BACKGROUNDS, COLOURS, vocabulary


def test_samples_are_a_pure_function_of_seed_and_index():
    first, again, other = (
        ShapesVideoDataset(seed=3, num_frames=4),
        ShapesVideoDataset(seed=3, num_frames=4),
        ShapesVideoDataset(seed=4, num_frames=4),
    )
    assert torch.equal(first[7]["pixel_values"], again[7]["pixel_values"])
    assert first[7]["caption"] == again[7]["caption"]
    assert not torch.equal(first[7]["pixel_values"], other[7]["pixel_values"])


def test_dataset_items_have_model_layout_and_range():
    image = ShapesImageDataset(seed=0)[0]["pixel_values"]
    video = ShapesVideoDataset(seed=0, num_frames=5, resolution=32)[0]["pixel_values"]
    assert image.shape == (3, 64, 64) and video.shape == (5, 3, 32, 32)
    assert image.min() >= -1 and image.max() <= 1


def test_caption_round_trip_over_every_scene():
    for scene in IMAGE_WORLD.scenes():
        assert ShapeScene.from_caption(scene.caption) == scene
    still = ShapeScene("star", "cyan", "large", "grey", "checkered")
    assert ShapeScene.from_caption(still.caption) == still and "moving" not in still.caption


@pytest.mark.parametrize("caption", ["a red circle", "a small red blue circle on a plain black background"])
def test_unparseable_caption_says_what_is_missing(caption):
    with pytest.raises(ValueError, match="Cannot read"):
        ShapeScene.from_caption(caption)


def test_unknown_attribute_lists_the_world():
    with pytest.raises(ValueError, match="circle, square"):
        ShapeScene("hexagon", "red", "small", "black", "plain")


def test_video_world_is_a_strict_subset_of_the_image_world():
    video_scenes = set(VIDEO_WORLD.scenes())
    assert video_scenes < set(IMAGE_WORLD.scenes())
    assert all(s.style == "plain" for s in video_scenes) and not any(s.shape == "star" for s in video_scenes)
    dataset = ShapesImageDataset(seed=0)
    seen = {dataset.scene(i) for i in range(3000)}
    assert {s.shape for s in seen} == set(IMAGE_WORLD.shapes) and {s.style for s in seen} == set(IMAGE_WORLD.styles)


def test_object_has_its_colour_and_background_its_colour():
    scene = ShapeScene("square", "green", "large", "white", "plain")
    frame = render_frame(scene, (32.0, 32.0))
    assert tuple(frame[32, 32]) == COLOURS["green"]
    assert tuple(frame[2, 2]) == BACKGROUNDS["white"]


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_clip_moves_in_its_direction_and_stays_inside(direction):
    scene = ShapeScene("circle", "red", "large", "black", "plain", direction)
    frames, trajectory = render_clip(scene, 16, np.random.default_rng(0))
    step = np.diff(trajectory.centers, axis=0).mean(axis=0)
    expected = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[direction]
    assert np.sign(np.round(step, 6)).tolist() == list(expected)
    assert np.abs(step).max() >= 1.0  # a few pixels per frame
    assert (trajectory.centers - trajectory.radius >= 0).all() and (trajectory.centers + trajectory.radius <= 64).all()
    # the rendered object's centroid follows the trajectory
    for frame, center in zip(frames, trajectory.centers):
        mask = frame.astype(int).max(-1) - frame.astype(int).min(-1) > 60  # saturated pixels = the object
        ys, xs = np.nonzero(mask)
        assert abs(xs.mean() - center[0] + 0.5) < 1.0 and abs(ys.mean() - center[1] + 0.5) < 1.0


def test_tokenizer_gives_every_word_one_token_and_captions_fit():
    tokenizer = build_shapes_tokenizer()
    for word in vocabulary():
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    longest = max((s.caption for s in IMAGE_WORLD.scenes()), key=len)
    assert len(tokenizer(longest).input_ids) <= tokenizer.model_max_length == 16


def test_held_out_compositions_never_appear_in_the_image_set_but_their_parts_do():
    from harivo.data import FULL_WORLD, HELD_OUT_COMPOSITIONS

    dataset = ShapesImageDataset(seed=0)
    seen = [dataset.scene(i) for i in range(4000)]
    assert not any(IMAGE_WORLD.is_held_out(scene) for scene in seen)
    assert any(s.shape == "star" for s in seen) and any(s.colour == "green" for s in seen)
    held_out = [s for s in FULL_WORLD.scenes(with_motion=False) if IMAGE_WORLD.is_held_out(s)]
    assert len(HELD_OUT_COMPOSITIONS) == 3 and held_out and not IMAGE_WORLD.contains(held_out[0])


def test_silhouettes_are_the_object_alone_white_on_black():
    from harivo.data import ShapesImageDataset, render_silhouette
    from harivo.data.shapes import render_frame

    scene = ShapeScene("star", "yellow", "large", "grey", "checkered")
    silhouette = render_silhouette(scene, (30.0, 25.0))
    frame = render_frame(scene, (30.0, 25.0))
    plain = render_frame(ShapeScene("star", "yellow", "large", "black", "plain"), (30.0, 25.0))
    assert silhouette.shape == (64, 64, 3) and (silhouette[..., 0] == silhouette[..., 2]).all()
    assert set(np.unique(silhouette[silhouette % 255 == 0])) == {0, 255}
    # where the object covers the frame, and only there, the silhouette is bright
    covered = plain.max(-1) > 0
    assert ((silhouette[..., 0] > 0) == covered).all() and not (frame == plain).all()
    sample = ShapesImageDataset(length=4, seed=0, silhouettes=True)[1]
    condition = sample["conditioning_pixel_values"]
    assert condition.shape == (3, 64, 64) and condition.min() >= 0 and condition.max() == 1
    object_pixels = (sample["pixel_values"].amax(0) - sample["pixel_values"].amin(0)) > 0.5
    assert (condition[0][object_pixels] > 0.5).float().mean() > 0.9
    assert "conditioning_pixel_values" not in ShapesImageDataset(length=4, seed=0)[1]
