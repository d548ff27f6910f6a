"""Tests of tomopick.core.evaluate on hand-made cases with known answers."""
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from tomopick.core.evaluate import evaluate_picks, format_evaluation, match_picks
from tomopick.core.picks import Picks
from tomopick.core.rotations import euler_zxz_to_matrix, homogeneous


def _picks(xyz, tomo="t1", groups=None, rotations=None, voxel_size=10.0):
    xyz = np.asarray(xyz, dtype=float).reshape(-1, 3)
    matrices = None if rotations is None else homogeneous(np.asarray(rotations), xyz)
    return Picks(tomo, xyz, groups, matrices, None, voxel_size)


def test_two_predictions_on_one_particle_count_once_one_to_one():
    truth = _picks([[10, 10, 10]])
    pred = _picks([[11, 10, 10], [10, 12, 10]])
    r = evaluate_picks(pred, truth, radius=3)
    assert r["any"]["precision"] == 1.0 and r["any"]["recall"] == 1.0
    assert r["any"]["f1"] == 1.0
    assert r["one_to_one"]["precision"] == 0.5 and r["one_to_one"]["recall"] == 1.0
    assert r["one_to_one"]["f1"] == pytest.approx(2 * 0.5 / 1.5)
    assert (r["one_to_one"]["tp"], r["one_to_one"]["fp"], r["one_to_one"]["fn"]) == (1, 1, 0)
    # the closer prediction (distance 1) is the one kept
    assert r["pairs"][0].tolist() == [0] and r["pairs"][1].tolist() == [0]


def test_counts_with_misses_and_false_positives():
    truth = _picks([[0, 0, 0], [20, 0, 0], [40, 0, 0], [60, 0, 0]])
    pred = _picks([[1, 0, 0], [21, 1, 0], [100, 100, 0]])
    r = evaluate_picks(pred, truth, radius=2)
    o = r["one_to_one"]
    assert (o["tp"], o["fp"], o["fn"]) == (2, 1, 2)
    assert o["precision"] == pytest.approx(2 / 3) and o["recall"] == pytest.approx(0.5)
    assert r["any"]["precision"] == pytest.approx(2 / 3) and r["any"]["recall"] == 0.5


def test_radius_is_inclusive():
    truth = _picks([[0, 0, 0]])
    assert evaluate_picks(_picks([[3, 4, 0]]), truth, radius=5)["one_to_one"]["tp"] == 1
    assert evaluate_picks(_picks([[3, 4, 0.01]]), truth, radius=5)["one_to_one"]["tp"] == 0


def test_one_to_one_finds_the_maximum_matching_where_greedy_fails():
    # greedy-by-distance would pair P0-T0 (1.4) first and lose P1; the optimum
    # pairs P1-T0 (1.9) and P0-T1 (1.6)
    truth = _picks([[0, 0, 0], [3, 0, 0]])
    pred = _picks([[1.4, 0, 0], [-1.9, 0, 0]])
    i, j, d = match_picks(pred.positions, truth.positions, 2.0, "one_to_one")
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 1), (1, 0)]
    assert np.allclose(sorted(d), [1.6, 1.9])
    r = evaluate_picks(pred, truth, radius=2.0)
    assert r["one_to_one"]["tp"] == 2 and r["one_to_one"]["f1"] == 1.0


def test_one_to_one_matches_dense_hungarian_on_random_clusters():
    rng = np.random.default_rng(4)
    truth = rng.uniform(0, 40, (60, 3))
    pred = np.concatenate([truth[:40] + rng.normal(0, 1.5, (40, 3)),
                           truth[:20] + rng.normal(0, 1.5, (20, 3)),
                           rng.uniform(0, 40, (15, 3))])
    radius = 3.0
    i, j, d = match_picks(pred, truth, radius, "one_to_one")
    assert len(np.unique(i)) == len(i) and len(np.unique(j)) == len(j)
    assert np.all(d <= radius)
    # reference: the same objective on the full dense cost matrix
    dist = np.linalg.norm(pred[:, None] - truth[None], axis=2)
    big = radius * (len(pred) + len(truth)) + 1
    cost = np.where(dist <= radius, dist - big, 0.0)
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] < 0
    assert len(i) == ok.sum()
    assert d.sum() == pytest.approx(dist[rows[ok], cols[ok]].sum())


def test_any_rule_matches_brute_force():
    rng = np.random.default_rng(5)
    truth = rng.uniform(0, 30, (50, 3))
    pred = rng.uniform(0, 30, (70, 3))
    i, j, _ = match_picks(pred, truth, 2.5, "any")
    dist = np.linalg.norm(pred[:, None] - truth[None], axis=2)
    assert set(np.unique(i)) == set(np.flatnonzero((dist <= 2.5).any(1)))
    assert set(np.unique(j)) == set(np.flatnonzero((dist <= 2.5).any(0)))
    r = evaluate_picks(_picks(pred), _picks(truth), 2.5)
    assert r["any"]["precision"] == pytest.approx((dist <= 2.5).any(1).mean())
    assert r["any"]["recall"] == pytest.approx((dist <= 2.5).any(0).mean())


def test_picks_of_different_tomograms_never_match():
    truth = Picks(["a", "b"], [[5, 5, 5], [50, 50, 50]], voxel_size=10.0)
    pred = Picks(["b", "a"], [[5, 5, 5], [50, 50, 50]], voxel_size=10.0)
    r = evaluate_picks(pred, truth, radius=3)
    assert r["one_to_one"]["tp"] == 0 and r["any"]["precision"] == 0.0
    assert set(r["per_tomogram"]) == {"a", "b"}
    assert r["tomograms_only_in_predictions"] == [] == r["tomograms_only_in_truth"]
    r = evaluate_picks(Picks("TS_01", [[5, 5, 5]]), Picks("TS_1", [[5, 5, 5]]), radius=3)
    assert r["tomograms_only_in_predictions"] == ["TS_01"]
    assert r["tomograms_only_in_truth"] == ["TS_1"]
    assert "WARNING: tomograms only in the predictions (never matched): TS_01" in \
        format_evaluation(r)
    pred_ok = Picks(["a", "b", "b"], [[5, 6, 5], [50, 50, 51], [5, 5, 5]], voxel_size=10.0)
    r = evaluate_picks(pred_ok, truth, radius=3)
    assert r["one_to_one"]["tp"] == 2 and r["one_to_one"]["fp"] == 1
    assert r["per_tomogram"]["a"]["one_to_one"]["precision"] == 1.0
    assert r["per_tomogram"]["b"]["one_to_one"]["precision"] == 0.5
    assert r["per_tomogram"]["b"]["any"]["precision"] == 0.5


def test_per_class_recall_and_labelled_precision():
    truth = _picks([[0, 0, 0], [20, 0, 0], [40, 0, 0], [60, 0, 0]], groups=[1, 1, 2, 2])
    # unlabelled predictions: recall per class only
    pred = _picks([[0, 1, 0], [40, 1, 0], [41, 0, 0]])
    r = evaluate_picks(pred, truth, radius=2)
    assert r["per_class"][1]["one_to_one"]["recall"] == 0.5
    assert r["per_class"][2]["one_to_one"]["recall"] == 0.5
    assert r["per_class"][2]["pred_matched"] == 1
    assert np.isnan(r["per_class"][1]["one_to_one"]["precision"])
    # labelled predictions: the one labelled 2 sitting on a class-1 particle is wrong
    pred = _picks([[0, 1, 0], [20, 1, 0], [40, 1, 0], [90, 0, 0]], groups=[1, 2, 2, 2])
    r = evaluate_picks(pred, truth, radius=2)
    assert r["per_class"][1]["one_to_one"]["precision"] == 1.0
    assert r["per_class"][2]["one_to_one"]["precision"] == pytest.approx(1 / 3)
    assert r["per_class"][2]["any"]["precision"] == pytest.approx(1 / 3)
    assert r["per_class"][1]["one_to_one"]["recall"] == 1.0
    assert r["per_class"][2]["one_to_one"]["recall"] == 0.5


def test_orientation_error_of_known_rotations():
    xyz = [[0, 0, 0], [20, 0, 0], [40, 0, 0]]
    true_rot = euler_zxz_to_matrix([0, 30, 70], [0, 40, 90], [0, 10, 0])
    # tilt the z-axis by 10, 25 and 90 degrees; in-plane spin does not count
    tilt = euler_zxz_to_matrix([0, 0, 0], [10, 25, 90], [0, 45, 0])
    pred_rot = true_rot @ np.swapaxes(tilt, 1, 2) @ euler_zxz_to_matrix(0, 0, 33.0)
    truth = _picks(xyz, rotations=true_rot)
    pred = _picks(np.asarray(xyz) + 0.5, rotations=pred_rot)
    r = evaluate_picks(pred, truth, radius=2)
    ori = r["orientation"]
    assert ori["n"] == 3
    assert np.allclose(np.sort(ori["errors"]), [10, 25, 90], atol=1e-6)
    assert ori["median"] == pytest.approx(25) and ori["max"] == pytest.approx(90)
    assert ori["mean"] == pytest.approx(125 / 3)
    assert evaluate_picks(_picks(xyz), truth, radius=2)["orientation"] is None


def test_predictions_in_another_voxel_size_are_rescaled():
    truth = _picks([[10, 20, 30], [40, 40, 40]], voxel_size=10.0)
    pred = _picks([[20.5, 40, 60], [80, 80, 81]], voxel_size=5.0)   # 2x the voxel count
    r = evaluate_picks(pred, truth, radius=1)
    assert r["one_to_one"]["tp"] == 2
    assert evaluate_picks(_picks(pred.positions, voxel_size=10.0), truth,
                          radius=1)["one_to_one"]["tp"] == 0


def test_empty_inputs_give_zero_and_nan_without_error():
    truth = _picks([[0, 0, 0]])
    empty = Picks(np.zeros(0, str), np.zeros((0, 3)), voxel_size=10.0)
    r = evaluate_picks(empty, truth, radius=2)
    assert r["one_to_one"]["recall"] == 0.0 and np.isnan(r["one_to_one"]["precision"])
    assert r["one_to_one"]["fn"] == 1
    r = evaluate_picks(truth, empty, radius=2)
    assert r["one_to_one"]["precision"] == 0.0 and r["one_to_one"]["fp"] == 1


def test_bad_arguments_are_named():
    truth = _picks([[0, 0, 0]])
    with pytest.raises(ValueError, match="radius"):
        evaluate_picks(truth, truth, radius=0)
    with pytest.raises(ValueError, match="rule"):
        match_picks(truth.positions, truth.positions, 1, rule="nearest")
    with pytest.raises(ValueError, match="predicted positions"):
        match_picks(np.zeros((2, 2)), truth.positions, 1)
    with pytest.raises(ValueError, match="Picks"):
        evaluate_picks(truth.positions, truth, 1)


def test_format_evaluation_reports_both_rules_and_classes():
    truth = Picks(["a", "b"], [[0, 0, 0], [9, 9, 9]], [1, 2],
                  homogeneous(np.stack([np.eye(3)] * 2), [[0, 0, 0], [9, 9, 9]]), None, 10.0)
    pred = Picks(["a", "a", "b"], [[0, 1, 0], [1, 0, 0], [9, 9, 9]], None,
                 homogeneous(np.stack([np.eye(3)] * 3), np.zeros((3, 3))), None, 10.0)
    text = format_evaluation(evaluate_picks(pred, truth, radius=2))
    assert "any-match (PickET): precision 1.000  recall 1.000" in text
    assert "one-to-one        : precision 0.667  recall 1.000" in text
    assert "(TP 2, FP 1, FN 0)" in text
    assert "class 1" in text and "class 2" in text
    assert "orientation (z-axis) error over 2 pairs: median 0.0" in text


def test_huge_components_fall_back_to_closest_first_matching(monkeypatch):
    from tomopick.core import evaluate
    monkeypatch.setattr(evaluate, "MAX_DENSE", 0)
    truth = np.array([[0, 0, 0], [3, 0, 0.0]])
    pred = np.array([[1.4, 0, 0], [-1.9, 0, 0]])
    i, j, d = match_picks(pred, truth, 2.0, "one_to_one")
    # closest first takes P0-T0 (1.4); P1 then has no free truth within radius
    assert i.tolist() == [0] and j.tolist() == [0] and np.allclose(d, [1.4])
