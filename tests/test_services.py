"""The in-orbit computation: synthetic scenes, CFAR detection and tracking, scored
against the scene's ground truth."""

import numpy as np
import pytest

from netemu.services.detect import cfar_alpha, detect
from netemu.services.scene import Scene
from netemu.services.track import Tracker


def test_scenes_are_reproducible():
    a, b, c = Scene(seed=4).frame(3), Scene(seed=4).frame(3), Scene(seed=5).frame(3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.truth, b.truth)
    assert not np.array_equal(a.image, c.image)
    assert a.image.nbytes == 4 * 1024 * 1024  # a 4 MB tile


def test_cfar_threshold_gives_the_false_alarm_rate():
    """Pure clutter: the measured false-alarm rate matches the design Pfa."""
    n = 840  # training cells of guard 4, train 12: 33^2 - 9^2
    # Exponential clutter, N-cell average: P(x > a * mean) = (1 + a/N)^-N = Pfa.
    assert (1 + cfar_alpha(n, 1e-3) / n) ** -n == pytest.approx(1e-3)
    images = [np.random.default_rng(s).exponential(1.0, (256, 256)) for s in range(8)]
    hits = sum(len(detect(img, pfa=1e-3)) for img in images)
    expected = 1e-3 * 8 * 256 * 256
    assert 0.5 * expected <= hits <= 1.5 * expected  # merged neighbours make it a bit lower


def test_detection_against_ground_truth():
    scene = Scene(seed=1, size_px=512, targets=6, target_db=15)
    found, total, false_alarms, errors = 0, 0, 0, []
    for k in range(10):
        frame = scene.frame(k)
        got = detect(frame.image)
        total += len(frame.truth)
        for target in frame.truth:
            dist = np.linalg.norm(got - target, axis=1) if len(got) else np.array([np.inf])
            if dist.min() < 3:
                found += 1
                errors.append(dist.min())
        false_alarms += sum(np.linalg.norm(frame.truth - d, axis=1).min() > 3 for d in got)
    assert found / total >= 0.95
    assert np.mean(errors) < 0.5  # pixels
    assert false_alarms <= 15  # Pfa 1e-6 on 2.6 M pixels: ~3 expected


def test_tracker_recovers_positions_and_velocities():
    scene = Scene(seed=2, size_px=512, targets=5)
    tracker = Tracker()
    for k in range(12):
        confirmed = tracker.step(detect(scene.frame(k).image), dt=1.0)
    truth = scene.start + scene.velocity * 11
    assert len(confirmed) == len(scene.truth(11))
    for track in confirmed:
        j = np.argmin(np.linalg.norm(truth - track.x[:2], axis=1))
        assert np.linalg.norm(truth[j] - track.x[:2]) < 1.0
        assert np.linalg.norm(scene.velocity[j] - track.x[2:]) < 1.0  # pixels per second
