"""The shipped Shapes video classifier (the FVD-analog's feature network) reads every attribute of real clips."""

import numpy as np

from harivo.evaluation.classifier import (
    HEADS,
    ShapesVideoClassifier,
    classifier_accuracy,
    clips_to_tensor,
    load_shapes_classifier,
    render_labelled_batch,
    train_shapes_classifier,
)


def test_shipped_classifier_reads_every_attribute():
    clips, labels = render_labelled_batch(np.random.default_rng(777), 96, 16)
    accuracy = classifier_accuracy(load_shapes_classifier(), clips, labels)
    assert all(value >= 0.85 for value in accuracy.values()), accuracy


def test_training_runs_and_round_trips(tmp_path):
    model = train_shapes_classifier(steps=2, batch_size=2, progress=False)
    model.save_pretrained(tmp_path)
    loaded = load_shapes_classifier(tmp_path)
    clips, _ = render_labelled_batch(np.random.default_rng(0), 2, 8)
    tensor = clips_to_tensor(clips)
    assert np.allclose(model.features(tensor).detach(), loaded.features(tensor).detach())
    assert set(loaded(tensor)) == set(HEADS)
    assert isinstance(loaded, ShapesVideoClassifier)
