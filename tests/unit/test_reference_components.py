"""The reference check judges each component of a concatenated output on its own (issue 16).

A YOLO head's 1 x (4 + C) x N tensor holds boxes in pixels beside 0-1 scores; an int8 that flattens the scores
keeps a whole-tensor cosine near 1 and used to pass verify and the smoke test. The real-model case (the zoo's
YOLOv8n through onnxruntime int8) is tests/integration/test_int8_accuracy.py; these are the rules on arrays.
"""

from __future__ import annotations

import numpy as np

from edgesdk.convert_base import TOLERANCES
from edgesdk.runtime.reference import check_outputs, compare, components


def _head(rng: np.random.Generator, n: int = 2100, classes: int = 18) -> np.ndarray:
    boxes = rng.uniform(0, 320, (4, n))
    scores = rng.uniform(0, 0.02, (classes, n))
    scores[3, rng.integers(0, n, 40)] = rng.uniform(0.3, 0.9, 40)  # a few real detections
    return np.concatenate([boxes, scores])[None].astype(np.float32)


def test_scores_beside_boxes_are_their_own_component():
    ref = _head(np.random.default_rng(0))
    comps = components([ref])
    assert [c.axis for c in comps] == [1, 1]
    assert comps[0].indexes == (0, 1, 2, 3) and comps[1].indexes == tuple(range(4, 22))
    assert comps[0].label == "axis 1 [0-3]" and comps[1].label == "axis 1 [4-21]"


def test_int8_that_flattens_the_scores_fails_though_the_tensor_cosine_is_high():
    rng = np.random.default_rng(1)
    ref = _head(rng)
    got = ref.copy()
    got[:, :4] += rng.normal(0, 0.5, got[:, :4].shape)  # boxes: within half a pixel
    got[:, 4:] = 0.0  # what per-tensor int8 of the concatenated output does to 0-1 scores
    tol = TOLERANCES["int8"]
    whole = float(np.dot(got.ravel(), ref.ravel()) / np.linalg.norm(got) / np.linalg.norm(ref))
    assert whole > 0.99  # the old, global judge passed this
    m = compare("output0", [got], [ref], tol)
    assert not m.ok
    bad = [c for c in m.components if not c.ok]
    assert [c.indexes for c in bad] == ["4-21"]
    assert any("component axis 1 [4-21]" in p and "cosine" in p for p in m.problems)
    assert m.cosine_min < 0.5  # the verdict's cosine is the worst component's
    # the smoke test's path: the same verdict
    assert not check_outputs({"output0": got}, {"output0": ref}, tol).ok


def test_good_int8_passes_per_component():
    rng = np.random.default_rng(2)
    ref = _head(rng)
    got = ref + np.concatenate([rng.normal(0, 0.5, (1, 4, 2100)), rng.normal(0, 0.003, (1, 18, 2100))], axis=1)
    m = compare("output0", [got.astype(np.float32)], [ref], TOLERANCES["int8"])
    assert m.ok, m.problems
    assert len(m.components) == 2 and all(c.ok for c in m.components)


def test_one_quantity_has_no_components():
    rng = np.random.default_rng(3)
    # logits of a classifier over several images: scales differ per class, but scattered, not blocks
    logits = [rng.normal(0, 1, (1, 1000)) * np.where(rng.random(1000) < 0.5, 1.0, 1e-3) for _ in range(8)]
    assert components(logits) == ()
    # a probability map, a feature map, a single sample of a vector: nothing to split
    assert components([rng.random((1, 1, 64, 64))]) == ()
    assert components([rng.random((1, 16, 20, 20))]) == ()
    assert components([rng.random((1, 10))]) == ()


def test_silent_block_is_not_judged_alone():
    """Scores that are numerically silent on this input (no detection anywhere) are not a component."""
    ref = _head(np.random.default_rng(4))
    ref[:, 4:] = 1e-6
    assert components([ref]) == ()


def test_components_follow_the_widest_gap_and_survive_nan_in_got():
    rng = np.random.default_rng(5)
    ref = _head(rng).transpose(0, 2, 1).copy()  # 1 x N x (4 + C): YOLOv5-style layout
    comps = components([ref])
    assert [c.axis for c in comps] == [2, 2]
    got = ref.copy()
    got[0, 0, 0] = np.nan
    m = compare("output0", [got], [ref], TOLERANCES["int8"])
    assert not m.ok and any("NaN" in p for p in m.problems)


def test_fp32_engine_noise_in_a_small_block_is_not_a_failure():
    """ncnn's fp16 storage on ARM moves a 0-1 score by ~1e-3: within fp32's bound on the whole tensor, and not a
    destroyed component (the block's bound is at least COMPONENT_REL_MIN of its own range)."""
    rng = np.random.default_rng(6)
    ref = _head(rng)
    got = ref * (1 + rng.normal(0, 1e-4, ref.shape))
    got[:, 4:] += rng.uniform(-1e-3, 1e-3, got[:, 4:].shape)  # 0.1% of a 0-1 score: more than 1e-3 of 0.9
    m = compare("output0", [got.astype(np.float32)], [ref], TOLERANCES["fp32"])
    assert len(m.components) == 2 and m.ok, m.problems
    got[:, 4:] *= 1.2  # a real fault in the scores: 20% off
    assert not compare("output0", [got.astype(np.float32)], [ref], TOLERANCES["fp32"]).ok


def test_split_off_judges_the_whole_tensor_only():
    """convert judges per component only the model's outputs: a segment boundary's feature map with a dead
    channel is not cut into blocks (split=False)."""
    ref = _head(np.random.default_rng(7))
    got = ref.copy()
    got[:, 4:] = 0.0
    m = compare("feat", [got], [ref], TOLERANCES["int8"], split=False)
    assert m.components == () and m.ok


def test_positions_are_not_components_but_raw_yolo_heads_keep_theirs():
    """A 1 x 1 x H x W probability map's near-empty border is not a component; a YOLOv5 raw head (1 x 3 x H x W x 85:
    boxes in pixels beside 0-1 scores) and a batched 2 x 84 x N head are still split on their feature axis."""
    import numpy as np

    from edgesdk.runtime.reference import components

    rng = np.random.default_rng(0)
    m = np.zeros((1, 1, 64, 48), np.float32)
    m[..., 8:-8, 8:-8] = rng.uniform(0, 1, (48, 32))
    m[..., :8, :] = rng.uniform(0, 1e-4, (8, 48))
    assert components([m]) == ()
    head = np.concatenate([rng.uniform(0, 320, (1, 3, 8, 8, 4)), rng.uniform(0, 1, (1, 3, 8, 8, 81))], axis=-1)
    (big, small) = components([head])
    assert big.axis == small.axis == 4 and big.indexes == (0, 1, 2, 3)
    batched = np.concatenate([rng.uniform(0, 320, (2, 4, 300)), rng.uniform(0, 1, (2, 80, 300))], axis=1)
    (big, _small) = components([batched])
    assert big.axis == 1 and big.indexes == (0, 1, 2, 3)
