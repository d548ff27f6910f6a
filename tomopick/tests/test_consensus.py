"""Picking consensus: votes, grouping rule, order invariance, averages, phantom accuracy."""
import itertools

import numpy as np
import pytest

from scipy.spatial import cKDTree

from tomopick.core.consensus import _candidate_pairs, consensus_picks, jaccard, resolve_min_votes
from tomopick.core.picks import Picks
from tomopick.core.rotations import angle_between, euler_zxz_to_matrix, homogeneous


def _rot_axis(axis, degrees):
    """Rotation about a unit axis (Rodrigues)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K


def _rotation_angle(A, B):
    """Angle (degrees) of the rotation taking A to B."""
    c = (np.trace(A.T @ B) - 1) / 2
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


# Three hand-made pickings of one tomogram, radius 3:
#   P1 at (10,10,10) picked by A, B, C;  P2 at (40,10,10) by A, B;  P3 at (10,40,10) by C.
P1, P2, P3 = np.array([10., 10, 10]), np.array([40., 10, 10]), np.array([10., 40, 10])


def _abc():
    a = Picks("T1", [P1 + [0.5, 0, 0], P2 + [0, 1, 0]], voxel_size=10.0)
    b = Picks("T1", [P2 - [0, 1, 0], P1 + [0, 0.5, 0]], voxel_size=10.0)
    c = Picks("T1", [P3, P1 - [0.5, 0.5, 0]], voxel_size=10.0)
    return [a, b, c]


def _rows(picks):
    """Output rows as sortable tuples (tomo, x, y, z, votes)."""
    return sorted((t, *np.round(p, 9), s) for t, p, s in
                  zip(picks.tomo_ids, picks.positions, picks.scores))


# ---------------------------------------------------------------- votes
def test_and_keeps_only_the_particle_picked_by_every_input():
    out, info = consensus_picks(_abc(), radius=3, min_votes=-1)
    assert len(out) == 1
    np.testing.assert_allclose(out.positions[0], P1, atol=1e-12)   # mean of the three
    assert out.scores[0] == 3 and out.extra["votes"][0] == 3
    assert info.min_votes == 3 and out.voxel_size == 10.0


def test_or_keeps_every_particle_with_its_vote_count():
    out, _ = consensus_picks(_abc(), radius=3, min_votes=1)
    assert _rows(out) == sorted([("T1", *P1, 3.0), ("T1", *P2, 2.0), ("T1", *P3, 1.0)])


def test_k_of_n_at_least_and_exactly():
    at_least, _ = consensus_picks(_abc(), radius=3, min_votes=2, mode=">=")
    exactly, _ = consensus_picks(_abc(), radius=3, min_votes=2, mode="=")
    assert _rows(at_least) == sorted([("T1", *P1, 3.0), ("T1", *P2, 2.0)])
    assert _rows(exactly) == [("T1", *P2, 2.0)]
    one_exactly, _ = consensus_picks(_abc(), radius=3, min_votes=1, mode="=")
    assert _rows(one_exactly) == [("T1", *P3, 1.0)]


def test_picks_farther_than_the_radius_are_different_particles():
    a = Picks("T1", [[0., 0, 0]])
    b = Picks("T1", [[3.01, 0, 0]])
    assert len(consensus_picks([a, b], radius=3)[0]) == 0
    assert len(consensus_picks([a, b], radius=3.02)[0]) == 1   # the radius is inclusive


def test_an_input_votes_at_most_once_per_particle():
    # A picked the particle twice; B once. The closer A pick joins B, the other stays alone.
    a = Picks("T1", [[10., 10, 10], [12.5, 10, 10]])
    b = Picks("T1", [[11., 10, 10]])
    out, info = consensus_picks([a, b], radius=3, min_votes=1)
    assert sorted(out.scores.tolist()) == [1.0, 2.0]
    pair = out.positions[out.scores == 2][0]
    np.testing.assert_allclose(pair, [10.5, 10, 10])
    assert info.votes.max() == 2 and info.membership.sum(axis=0).tolist() == [2, 1]


def test_a_linked_trio_of_distinct_inputs_is_one_particle():
    # A--B--C with A and C 7 apart (radius 4): all three lie within 3.5 of their mean.
    a = Picks("T1", [[0., 0, 0]])
    b = Picks("T1", [[3.5, 0, 0]])
    c = Picks("T1", [[7., 0, 0]])
    for perm in itertools.permutations([a, b, c]):
        out, info = consensus_picks(list(perm), radius=4, min_votes=1)
        assert out.scores.tolist() == [3.0]
        np.testing.assert_allclose(out.positions[0], [3.5, 0, 0])


def test_members_lie_within_the_radius_of_their_mean():
    # Four inputs in a chain 3.75 apart (radius 4): the mean of all four is
    # 5.625 from the ends, so the chain splits; the shortest-link-first merge
    # (exact ties broken by position) keeps the first three together whatever
    # the input order.
    chain = [Picks("T1", [[3.75 * k, 0, 0]]) for k in range(4)]
    for perm in itertools.permutations(chain):
        out, info = consensus_picks(list(perm), radius=4, min_votes=1)
        assert info.n_split_components == 1
        assert sorted(out.scores.tolist()) == [1.0, 3.0]
        np.testing.assert_allclose(out.positions[out.scores == 3][0], [3.75, 0, 0])
        np.testing.assert_allclose(out.positions[out.scores == 1][0], [11.25, 0, 0])


@pytest.mark.parametrize("radius", [0.7, 1.5, 4.0])
def test_link_search_finds_exactly_the_pairs_a_kd_tree_finds(radius):
    # the cell-grid search must miss no pair within the radius, in dense and
    # sparse regions, and never pair picks of different tomograms
    rng = np.random.default_rng(4)
    pos = np.r_[rng.uniform(0, 10, (300, 3)), rng.uniform(-50, 200, (300, 3))]
    tomo = rng.integers(0, 3, len(pos))
    i, j = _candidate_pairs(pos, tomo, radius)
    assert len(set(zip(i.tolist(), j.tolist()))) == len(i)          # no duplicates
    within = ((pos[i] - pos[j]) ** 2).sum(axis=1) <= radius ** 2
    assert np.all(tomo[i] == tomo[j])
    found = {tuple(sorted(p)) for p in zip(i[within].tolist(), j[within].tolist())}
    expected = set()
    for t in range(3):
        idx = np.flatnonzero(tomo == t)
        expected |= {(int(idx[a]), int(idx[b])) if idx[a] < idx[b] else (int(idx[b]), int(idx[a]))
                     for a, b in cKDTree(pos[idx]).query_pairs(radius)}
    assert found == expected and len(expected) > 20


def test_tomograms_are_never_mixed():
    a = Picks(["T1", "T2"], [[5., 5, 5], [50., 5, 5]])
    b = Picks(["T2", "T1"], [[5., 5, 5], [50., 5, 5]])
    out, info = consensus_picks([a, b], radius=2, min_votes=1)
    assert len(out) == 4 and np.all(out.scores == 1)
    assert set(info.per_tomogram) == {"T1", "T2"}


def test_and_gives_nothing_where_an_input_has_no_picks_in_a_tomogram():
    a = Picks(["T1", "T2"], [[5., 5, 5], [20., 20, 20]])
    b = Picks(["T1"], [[5.5, 5, 5]])
    out, info = consensus_picks([a, b], radius=2, min_votes=-1)
    assert out.tomo_ids.tolist() == ["T1"]
    t2 = info.per_tomogram["T2"]
    assert t2["input_counts"].tolist() == [1, 0] and t2["consensus"] == 0
    assert t2["particles"] == 1 and t2["jaccard"] == 0.0


# ---------------------------------------------------------------- invariance
def _crowded_inputs(seed, integer=False):
    """Three dense pickings with duplicates, chains and shared groups."""
    rng = np.random.default_rng(seed)
    inputs = []
    truth = rng.uniform(0, 40, (60, 3))
    for k in range(3):
        n = 70
        pos = np.concatenate([truth[rng.choice(60, 55)] + rng.normal(0, 1.2, (55, 3)),
                              rng.uniform(0, 40, (n - 55, 3))])
        if integer:
            pos = np.round(pos)
        tomo = rng.choice(["TS_1", "TS_2"], n)
        R = euler_zxz_to_matrix(*rng.uniform(0, 360, (3, n)))
        M = homogeneous(R, rng.normal(0, 1, (n, 3)))
        inputs.append(Picks(tomo, pos, rng.integers(1, 3, n), M, rng.uniform(0, 1, n), 10.0))
    return inputs


def _assert_same_picks(p, q):
    assert p.tomo_ids.tolist() == q.tomo_ids.tolist()
    for name in ("positions", "group_ids", "matrices", "scores"):
        assert np.array_equal(getattr(p, name), getattr(q, name)), name
    assert np.array_equal(p.extra["mean_score"], q.extra["mean_score"], equal_nan=True)


@pytest.mark.parametrize("integer", [False, True])
def test_result_is_identical_for_every_order_of_inputs_and_picks(integer):
    inputs = _crowded_inputs(1, integer)
    reference, info = consensus_picks(inputs, radius=4, min_votes=2)
    assert info.n_split_components > 5        # the data really is crowded
    rng = np.random.default_rng(7)
    for perm in itertools.permutations(range(3)):
        shuffled = [inputs[k].subset(rng.permutation(len(inputs[k]))) for k in perm]
        out, info_p = consensus_picks(shuffled, radius=4, min_votes=2)
        _assert_same_picks(out, reference)
        assert np.array_equal(np.sort(info_p.votes), np.sort(info.votes))


def test_matches_tomoviz_sequential_voting_on_well_separated_particles():
    # tomoviz adds the first input's picks, then merges each later pick into the
    # nearest earlier entry whose running mean is closer than the radius.
    rng = np.random.default_rng(3)
    sites = np.stack(np.meshgrid(*[np.arange(5)] * 3), -1).reshape(-1, 3) * 20.0 + 10
    inputs = []
    for k in range(3):
        keep = rng.random(len(sites)) < 0.7
        jitter = rng.normal(0, 1, (keep.sum(), 3))
        jitter *= np.minimum(1, 0.9 / np.linalg.norm(jitter, axis=1))[:, None]
        inputs.append(Picks("T", sites[keep] + jitter))
    entries, votes = [], []
    for k, p in enumerate(inputs):
        for x in p.positions:
            d = np.linalg.norm(np.array(entries) - x, axis=1) if entries and k else None
            if d is not None and d.min() < 4:
                i = int(d.argmin())
                entries[i] = (votes[i] * entries[i] + x) / (votes[i] + 1)
                votes[i] += 1
            else:
                entries.append(x.copy())
                votes.append(1)
    entries, votes = np.array(entries), np.array(votes)
    for k in (1, 2, 3):
        out, _ = consensus_picks(inputs, radius=4, min_votes=k)
        ref = entries[votes >= k]
        assert len(out) == len(ref)
        np.testing.assert_allclose(np.array(sorted(map(tuple, out.positions))),
                                   np.array(sorted(map(tuple, ref))), atol=1e-9)


# ---------------------------------------------------------------- sampling
def test_inputs_at_another_sampling_rate_are_rescaled_to_the_first():
    a = Picks("T1", [[20., 20, 20], [60., 60, 60]], voxel_size=5.0,
              matrices=homogeneous(shift=[[2., 0, 0], [0, 0, 0]]))
    # the same particles picked on a tomogram binned by 2 (10 Å/voxel)
    b = Picks("T1", [[10.5, 10, 10], [30., 30, 30]], voxel_size=10.0,
              matrices=homogeneous(shift=[[1., 0, 0], [0, 0, 0]]))
    out, _ = consensus_picks([a, b], radius=2.0)       # radius in voxels of `a`
    assert out.voxel_size == 5.0 and len(out) == 2
    np.testing.assert_allclose(out.positions, [[20.5, 20, 20], [60, 60, 60]])
    np.testing.assert_allclose(out.matrices[0, :3, 3], [2, 0, 0])    # shift rescaled too
    # radius 0.5 voxel of `a`: the first pair (1 voxel apart at 5 Å) splits
    assert len(consensus_picks([a, b], radius=0.5)[0]) == 1


def test_voxel_size_on_some_inputs_only_is_an_error():
    with pytest.raises(ValueError, match="voxel size"):
        consensus_picks([Picks("T", [[0., 0, 0]], voxel_size=10.0),
                         Picks("T", [[0., 0, 0]])], radius=1)


# ---------------------------------------------------------------- attributes
def test_particle_orientation_is_the_members_mean_and_shifts_are_kept():
    R0 = euler_zxz_to_matrix(45, 60, 10)
    a = Picks("T", [[0., 0, 0]], matrices=homogeneous(R0 @ _rot_axis([1, 0, 0], 6), [1., 0, 0]))
    b = Picks("T", [[1., 0, 0]], matrices=homogeneous(R0 @ _rot_axis([1, 0, 0], -6), [0, 3., 0]))
    c = Picks("T", [[0., 1, 0]], matrices=homogeneous(R0, [0, 0, 6.]))
    out, _ = consensus_picks([a, b, c], radius=3)
    assert len(out) == 1
    assert _rotation_angle(out.matrices[0, :3, :3], R0) < 0.1
    np.testing.assert_allclose(out.matrices[0, :3, 3], [1 / 3, 1, 2])
    np.testing.assert_allclose(out.matrices[0, 3], [0, 0, 0, 1])
    # z-axes agree with the true one to the rounding error, unlike 2-decimal output
    assert angle_between(out.matrices[0, :3, 2], R0[:, 2]) < 1e-6


def test_single_member_particles_keep_their_matrix_bit_for_bit():
    rng = np.random.default_rng(2)
    M = homogeneous(euler_zxz_to_matrix(*rng.uniform(0, 360, (3, 4))), rng.normal(size=(4, 3)))
    a = Picks("T", rng.uniform(0, 100, (4, 3)), matrices=M)
    b = Picks("T", [[500., 500, 500]])
    out, _ = consensus_picks([a, b], radius=2, min_votes=1)
    order = np.lexsort(a.positions.T[::-1])
    assert np.array_equal(out.matrices[:4], M[order])
    assert np.array_equal(out.matrices[4], np.eye(4))      # unoriented input -> identity


def test_unoriented_inputs_do_not_pull_the_orientation_towards_identity():
    R1 = euler_zxz_to_matrix(120, 35, 60)
    a = Picks("T", [[0., 0, 0], [30., 0, 0]], matrices=homogeneous(np.array([R1, R1]),
                                                                  [[1., 2, 3], [0, 0, 0]]))
    b = Picks("T", [[1., 0, 0], [60., 0, 0]])                 # no orientations
    c = Picks("T", [[0., 1, 0], [61., 0, 0]])                 # no orientations
    out, _ = consensus_picks([a, b, c], radius=2, min_votes=2)
    order = np.argsort(out.positions[:, 0])
    first, second = out.matrices[order]
    assert np.array_equal(first[:3, :3], R1)                  # only a's rotation counts
    np.testing.assert_allclose(first[:3, 3], [1, 2, 3])
    assert np.array_equal(second, np.eye(4))                  # nobody oriented it


def test_group_id_kept_when_members_agree_and_scores_averaged():
    a = Picks("T", [[0., 0, 0], [20., 0, 0]], group_ids=[3, 3], scores=[0.2, 0.9])
    b = Picks("T", [[1., 0, 0], [20., 1, 0]], group_ids=[3, 4], scores=[0.6, 0.1])
    c = Picks("T", [[0., 1, 0], [21., 0, 0]])        # carries no scores
    out, _ = consensus_picks([a, b, c], radius=2)
    first, second = np.argsort(out.positions[:, 0])
    assert out.group_ids[first] == 3 and out.group_ids[second] == 0
    np.testing.assert_allclose(out.extra["mean_score"][[first, second]], [0.4, 0.5])
    np.testing.assert_allclose(out.scores, [3, 3])


# ---------------------------------------------------------------- summary
def test_jaccard_is_intersection_over_union_of_particles():
    assert jaccard([[1, 1], [1, 0], [0, 1], [1, 1]]) == 0.5
    assert np.isnan(jaccard(np.zeros((0, 3))))
    _, info = consensus_picks(_abc(), radius=3)
    assert info.jaccard == pytest.approx(1 / 3)           # P1 of {P1, P2, P3}
    assert info.per_tomogram["T1"]["input_counts"].tolist() == [2, 2, 2]
    assert info.per_tomogram["T1"]["particles"] == 3
    assert [g.tolist() for g in info.group_of][0][0] == [g.tolist() for g in info.group_of][2][1]


@pytest.mark.parametrize("value, message", [(0, "consensus"), (4, "consensus"), (-2, "consensus")])
def test_invalid_consensus_values_are_rejected(value, message):
    with pytest.raises(ValueError, match=message):
        consensus_picks(_abc(), radius=3, min_votes=value)
    assert resolve_min_votes(-1, 3) == 3 and resolve_min_votes(2, 3) == 2


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="at least two"):
        consensus_picks(_abc()[:1], radius=3)
    with pytest.raises(ValueError, match="radius"):
        consensus_picks(_abc(), radius=0)
    with pytest.raises(ValueError, match="mode"):
        consensus_picks(_abc(), radius=3, mode=">")
    with pytest.raises(ValueError, match="non-finite"):
        consensus_picks([Picks("T", [[np.nan, 0, 0]]), Picks("T", [[0., 0, 0]])], radius=3)


def test_empty_inputs_give_an_empty_consensus():
    empty = Picks(np.zeros(0, str), np.zeros((0, 3)), voxel_size=10.0)
    out, info = consensus_picks([empty, empty], radius=3, min_votes=1)
    assert len(out) == 0 and info.votes.size == 0
    out, _ = consensus_picks([empty, Picks("T", [[1., 2, 3]], voxel_size=10.0)], radius=3,
                             min_votes=1)
    assert len(out) == 1


# ---------------------------------------------------------------- phantom
def test_and_is_more_precise_and_or_more_complete_than_every_picking():
    from tomopick.core.evaluate import evaluate_picks
    from tomopick.core.simulate import simulate_tomogram

    truth = Picks.concatenate([
        simulate_tomogram(shape=(64, 96, 96), n_particles=40, n_vesicles=1,
                          proteins_per_vesicle=12, tilt_range=None, ctf=False, snr=None,
                          seed=seed, tomo_id=f"TS_{seed}", keep_clean=False).particles
        for seed in (3, 4)])
    rng = np.random.default_rng(11)
    pickings = []
    for k in range(3):
        # each picker finds 75 % of the particles with 1 voxel of jitter per axis
        # and adds 30 % false picks anywhere in the volume
        found = rng.random(len(truth)) < 0.75
        hits = truth.subset(found)
        n_false = int(0.3 * len(truth))
        false = rng.uniform([0, 0, 0], [96, 96, 64], (n_false, 3))
        pickings.append(Picks(np.r_[hits.tomo_ids, rng.choice(["TS_3", "TS_4"], n_false)],
                              np.r_[hits.positions + rng.normal(0, 1, hits.positions.shape),
                                    false], voxel_size=truth.voxel_size))
    scores = [evaluate_picks(p, truth, radius=4)["one_to_one"] for p in pickings]
    both, _ = consensus_picks(pickings, radius=4, min_votes=-1)
    either, _ = consensus_picks(pickings, radius=4, min_votes=1)
    two, _ = consensus_picks(pickings, radius=4, min_votes=2)
    s_and = evaluate_picks(both, truth, radius=4)["one_to_one"]
    s_or = evaluate_picks(either, truth, radius=4)["one_to_one"]
    s_two = evaluate_picks(two, truth, radius=4)["one_to_one"]
    assert s_and["precision"] > max(s["precision"] for s in scores)
    assert s_or["recall"] > max(s["recall"] for s in scores)
    # 2-of-3 balances the two: better F1 than any single picking
    assert s_two["f1"] > max(s["f1"] for s in scores)
    # the expected values: AND recall ~ 0.75^3, OR recall ~ 1 - 0.25^3
    assert s_and["recall"] == pytest.approx(0.75 ** 3, abs=0.12)
    assert s_or["recall"] == pytest.approx(1 - 0.25 ** 3, abs=0.05)
