"""Scoring picked particles against ground truth.

Two matching rules are reported side by side:

``any``
    PickET's rule. A prediction is a true positive when *any* true particle
    lies within ``radius`` of it, and a true particle is found when *any*
    prediction lies within ``radius``. Precision and recall are computed on
    the two sides independently, so several predictions on one particle all
    count as correct.
``one_to_one``
    Strict matching: every prediction pairs with at most one true particle
    and vice versa. Among the pairs closer than ``radius`` the assignment
    with the most pairs, and among those the smallest summed distance, is
    found exactly with the Hungarian algorithm
    (`scipy.optimize.linear_sum_assignment`) on each connected component of
    the within-radius candidate graph (a component with more than
    `MAX_DENSE` prediction-truth cells, which needs absurdly dense picks, is
    matched greedily closest-first instead). TP = matched pairs, FP = unmatched
    predictions, FN = unmatched true particles.

Matching never crosses tomograms: only picks with equal ``tomo_ids`` are
compared. Distances are Euclidean in voxels of the truth's voxel size.
"""
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .picks import Picks

RULES = ("any", "one_to_one")
#: Largest (predictions x truths) connected component solved exactly; bigger
#: ones (only seen with absurdly dense picks) are matched greedily, closest first.
MAX_DENSE = 4_000_000


def _candidate_pairs(pred_xyz, true_xyz, radius):
    """All (pred, true, distance) with distance <= radius, as three arrays."""
    if len(pred_xyz) == 0 or len(true_xyz) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    pairs = cKDTree(pred_xyz).sparse_distance_matrix(cKDTree(true_xyz), radius,
                                                     output_type="ndarray")
    # a structured array keeps exact zero distances (a sparse matrix would drop them)
    return pairs["i"].astype(int), pairs["j"].astype(int), pairs["v"].astype(float)


def _assign(i, j, d, n_pred, n_true, radius):
    """Maximum-cardinality, minimum-distance one-to-one matching of candidate pairs."""
    if len(i) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    # Bipartite graph: nodes 0..n_pred-1 are predictions, n_pred.. truths.
    graph = coo_matrix((np.ones(len(i)), (i, j + n_pred)), shape=(n_pred + n_true,) * 2)
    _, labels = connected_components(graph, directed=False)
    comp = labels[i]
    order = np.argsort(comp, kind="stable")
    i, j, d, comp = i[order], j[order], d[order], comp[order]
    starts = np.flatnonzero(np.r_[True, comp[1:] != comp[:-1]])
    ends = np.r_[starts[1:], len(comp)]
    single = (ends - starts) == 1
    # isolated candidate pairs (the common case) are matches as they stand
    out_i = [i[starts[single]]]
    out_j = [j[starts[single]]]
    # Bigger components: the cost d - big on candidates and 0 elsewhere makes
    # the assignment maximise the number of candidate pairs first (each saves
    # `big`, more than any sum of distances) and minimise distance second.
    for s, e in zip(starts[~single], ends[~single]):
        ci, cj, cd = i[s:e], j[s:e], d[s:e]
        ui, li = np.unique(ci, return_inverse=True)
        uj, lj = np.unique(cj, return_inverse=True)
        if len(ui) * len(uj) > MAX_DENSE:
            gi, gj = _greedy(ci, cj, cd)
            out_i.append(gi)
            out_j.append(gj)
            continue
        big = radius * (len(ui) + len(uj)) + 1.0
        cost = np.zeros((len(ui), len(uj)))
        cost[li, lj] = cd - big
        rows, cols = linear_sum_assignment(cost)
        real = cost[rows, cols] < 0
        out_i.append(ui[rows[real]])
        out_j.append(uj[cols[real]])
    return np.concatenate(out_i), np.concatenate(out_j)


def _greedy(i, j, d):
    """Closest-first matching of candidate pairs (fallback for huge components)."""
    used_i, used_j, keep = set(), set(), []
    for k in np.argsort(d, kind="stable"):
        if i[k] not in used_i and j[k] not in used_j:
            used_i.add(i[k])
            used_j.add(j[k])
            keep.append(k)
    keep = np.array(keep, dtype=int)
    return i[keep], j[keep]


def match_picks(pred_xyz, true_xyz, radius, rule="one_to_one"):
    """Pairs of predictions and true particles that match under a rule.

    Parameters
    ----------
    pred_xyz, true_xyz : (P, 3), (T, 3) array of float
        Positions (x, y, z) in the same voxel units, one tomogram.
    radius : float
        Largest matching distance (inclusive), voxels; > 0.
    rule : {'one_to_one', 'any'}
        'any': every (prediction, truth) pair within ``radius``;
        'one_to_one': a maximum matching with minimum total distance.

    Returns
    -------
    pred_index, true_index : (M,) ndarray of int
        Matched pairs. Under 'any' an index may repeat; the predictions with
        any match are ``np.unique(pred_index)``.
    distance : (M,) ndarray of float

    Raises
    ------
    ValueError
        For a non-positive radius, an unknown rule or positions not (N, 3).

    Examples
    --------
    >>> match_picks([[0, 0, 0], [10, 0, 0]], [[1, 0, 0], [30, 0, 0]], radius=2)
    (array([0]), array([0]), array([1.]))
    """
    if not radius > 0:
        raise ValueError(f"matching radius must be positive, got {radius}")
    if rule not in RULES:
        raise ValueError(f"unknown matching rule {rule!r}; use one of {RULES}")
    pred_xyz = _as_xyz(pred_xyz, "predicted positions")
    true_xyz = _as_xyz(true_xyz, "true positions")
    i, j, d = _candidate_pairs(pred_xyz, true_xyz, radius)
    if rule == "one_to_one":
        i, j = _assign(i, j, d, len(pred_xyz), len(true_xyz), radius)
        d = np.linalg.norm(pred_xyz[i] - true_xyz[j], axis=1) if len(i) else np.zeros(0)
    return i, j, d


def _as_xyz(xyz, what):
    xyz = np.asarray(xyz, dtype=float)
    if xyz.size == 0:
        return xyz.reshape(0, 3)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"{what} must be an (N, 3) array of (x, y, z), got shape {xyz.shape}")
    return xyz


def _ratio(a, b):
    return float(a) / b if b else float("nan")


def _f1(p, r):
    if np.isnan(p) or np.isnan(r) or p + r == 0:
        return 0.0 if (p == 0 or r == 0) else float("nan")
    return 2 * p * r / (p + r)


def _scores(pred_any, true_any, pairs_pred, n_pred, n_true):
    """Both rules' numbers from match flags (any) and one-to-one pair count."""
    p_any = _ratio(pred_any, n_pred)
    r_any = _ratio(true_any, n_true)
    tp = int(pairs_pred)
    p_one = _ratio(tp, n_pred)
    r_one = _ratio(tp, n_true)
    return {
        "n_pred": int(n_pred), "n_true": int(n_true),
        "any": {"precision": p_any, "recall": r_any, "f1": _f1(p_any, r_any),
                "pred_matched": int(pred_any), "true_matched": int(true_any)},
        "one_to_one": {"precision": p_one, "recall": r_one, "f1": _f1(p_one, r_one),
                       "tp": tp, "fp": int(n_pred - tp), "fn": int(n_true - tp)},
    }


def _z_axes(matrices):
    return matrices[:, :3, 2]      # R @ (0, 0, 1) is the third column of R


def evaluate_picks(predicted, truth, radius, per_class=True):
    """Precision, recall and F1 of predicted picks against ground truth.

    Parameters
    ----------
    predicted, truth : Picks
        When both carry a voxel size and they differ, the predictions are
        rescaled to the truth's voxel size first. Only picks of the same
        tomogram (``tomo_ids``) are matched.
    radius : float
        Largest matching distance, voxels of the truth (inclusive).
    per_class : bool
        Also score each truth class (``truth.group_ids``). Recall of class c
        is over the true particles of class c; 'pred_matched' counts the
        predictions matched (one-to-one) to them. When the predictions carry
        class labels too (some group id > 0), per-class precision is the
        fraction of predictions labelled c that match a true particle of
        class c (one-to-one: via the global matching; any: some class-c
        truth within ``radius``); otherwise it is NaN.

    Returns
    -------
    dict
        'radius', 'voxel_size', 'n_pred', 'n_true';
        'any': precision, recall, f1, pred_matched, true_matched;
        'one_to_one': precision, recall, f1, tp, fp, fn;
        'per_tomogram': {tsId: the same numbers};
        'tomograms_only_in_predictions', 'tomograms_only_in_truth': sorted
        tsIds present on one side only (their picks cannot match);
        'per_class': {class id: n_true, n_pred_labelled, pred_matched, and
        'any'/'one_to_one' precision, recall, f1} (when ``per_class``);
        'orientation': errors (degrees between predicted and true z-axes
        ``R @ (0, 0, 1)`` of one-to-one pairs where both sides have
        matrices), n, median, mean, max — or None without orientations;
        'pairs': (pred_index, true_index) of the one-to-one matching into
        the inputs' rows.

    Raises
    ------
    ValueError
        On a non-positive radius or inputs that are not `Picks`.

    Examples
    --------
    >>> from tomopick.core.picks import Picks
    >>> predicted = Picks("T1", [[0, 0, 0], [10, 0, 0]])
    >>> truth = Picks("T1", [[1, 0, 0], [30, 0, 0]])
    >>> evaluate_picks(predicted, truth, radius=2)["one_to_one"]
    {'precision': 0.5, 'recall': 0.5, 'f1': 0.5, 'tp': 1, 'fp': 1, 'fn': 1}
    """
    if not isinstance(predicted, Picks) or not isinstance(truth, Picks):
        raise ValueError("evaluate_picks needs two Picks tables (predicted, truth)")
    if not radius > 0:
        raise ValueError(f"matching radius must be positive, got {radius}")
    if (predicted.voxel_size is not None and truth.voxel_size is not None
            and not np.isclose(predicted.voxel_size, truth.voxel_size)):
        predicted = predicted.rescaled(truth.voxel_size)

    n_pred, n_true = len(predicted), len(truth)
    pred_any = np.zeros(n_pred, bool)
    true_any = np.zeros(n_true, bool)
    # any-match per class needs to know which classes each prediction touched
    any_pairs_i, any_pairs_j = [], []
    pair_i, pair_j = [], []
    per_tomogram = {}
    for tomo in np.unique(np.concatenate([predicted.tomo_ids, truth.tomo_ids])):
        pi = np.flatnonzero(predicted.tomo_ids == tomo)
        ti = np.flatnonzero(truth.tomo_ids == tomo)
        i, j, d = _candidate_pairs(predicted.positions[pi], truth.positions[ti], radius)
        pred_any[pi[i]] = True
        true_any[ti[j]] = True
        any_pairs_i.append(pi[i])
        any_pairs_j.append(ti[j])
        mi, mj = _assign(i, j, d, len(pi), len(ti), radius)
        pair_i.append(pi[mi])
        pair_j.append(ti[mj])
        per_tomogram[str(tomo)] = _scores(pred_any[pi].sum(), true_any[ti].sum(), len(mi),
                                          len(pi), len(ti))
    pair_i = np.concatenate(pair_i) if pair_i else np.zeros(0, int)
    pair_j = np.concatenate(pair_j) if pair_j else np.zeros(0, int)
    result = {"radius": float(radius), "voxel_size": truth.voxel_size}
    result.update(_scores(pred_any.sum(), true_any.sum(), len(pair_i), n_pred, n_true))
    result["per_tomogram"] = per_tomogram
    # picks in a tomogram the other side lacks can never match; say so, since a
    # tsId mismatch (e.g. 'TS_01' against 'TS_1') otherwise reads as a bad picker
    pred_tomos, true_tomos = set(predicted.tomo_ids), set(truth.tomo_ids)
    result["tomograms_only_in_predictions"] = sorted(pred_tomos - true_tomos)
    result["tomograms_only_in_truth"] = sorted(true_tomos - pred_tomos)

    if per_class:
        any_i = np.concatenate(any_pairs_i) if any_pairs_i else np.zeros(0, int)
        any_j = np.concatenate(any_pairs_j) if any_pairs_j else np.zeros(0, int)
        labelled = bool(np.any(predicted.group_ids > 0))
        classes = {}
        for c in np.unique(truth.group_ids):
            is_c = truth.group_ids == c
            n_c = int(is_c.sum())
            matched_c = is_c[pair_j]
            tp_c = int(matched_c.sum())
            found_any = int((true_any & is_c).sum())
            entry = {"n_true": n_c, "pred_matched": tp_c}
            if labelled:
                lab = predicted.group_ids == c
                n_lab = int(lab.sum())
                tp_lab = int((lab[pair_i] & matched_c).sum())
                touched = np.zeros(n_pred, bool)
                touched[any_i[is_c[any_j]]] = True
                p_any = _ratio((lab & touched).sum(), n_lab)
                p_one = _ratio(tp_lab, n_lab)
            else:
                n_lab = 0
                p_any = p_one = float("nan")
            r_any = _ratio(found_any, n_c)
            r_one = _ratio(tp_c, n_c)
            entry["n_pred_labelled"] = n_lab
            entry["any"] = {"precision": p_any, "recall": r_any, "f1": _f1(p_any, r_any)}
            entry["one_to_one"] = {"precision": p_one, "recall": r_one, "f1": _f1(p_one, r_one)}
            classes[int(c)] = entry
        result["per_class"] = classes

    result["orientation"] = None
    if predicted.matrices is not None and truth.matrices is not None and len(pair_i):
        errors = _angle(_z_axes(predicted.matrices[pair_i]), _z_axes(truth.matrices[pair_j]))
        result["orientation"] = {"errors": errors, "n": int(len(errors)),
                                 "median": float(np.median(errors)),
                                 "mean": float(np.mean(errors)), "max": float(np.max(errors))}
    result["pairs"] = (pair_i, pair_j)
    return result


def _angle(u, v):
    cos = (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _fmt(x):
    return "  n/a" if x is None or np.isnan(x) else f"{x:5.3f}"


def format_evaluation(result):
    """A readable multi-line report of `evaluate_picks`'s result.

    Examples
    --------
    >>> from tomopick.core.picks import Picks
    >>> result = evaluate_picks(Picks("T1", [[0, 0, 0]]), Picks("T1", [[1, 0, 0]]), radius=2)
    >>> print(format_evaluation(result).splitlines()[0])
    Evaluation: 1 predicted vs 1 true particles, radius 2 voxels
    """
    lines = [f"Evaluation: {result['n_pred']} predicted vs {result['n_true']} true particles, "
             f"radius {result['radius']:g} voxels"
             + (f" ({result['voxel_size']:g} A/voxel)" if result.get("voxel_size") else "")]
    a, o = result["any"], result["one_to_one"]
    lines.append(f"  any-match (PickET): precision {_fmt(a['precision'])}  recall "
                 f"{_fmt(a['recall'])}  F1 {_fmt(a['f1'])}")
    lines.append(f"  one-to-one        : precision {_fmt(o['precision'])}  recall "
                 f"{_fmt(o['recall'])}  F1 {_fmt(o['f1'])}  "
                 f"(TP {o['tp']}, FP {o['fp']}, FN {o['fn']})")
    if len(result.get("per_tomogram", {})) > 1:
        lines.append("  per tomogram (one-to-one P/R/F1 | any P/R):")
        for tomo, s in result["per_tomogram"].items():
            lines.append(f"    {tomo:<20s} {_fmt(s['one_to_one']['precision'])} "
                         f"{_fmt(s['one_to_one']['recall'])} {_fmt(s['one_to_one']['f1'])} | "
                         f"{_fmt(s['any']['precision'])} {_fmt(s['any']['recall'])}"
                         f"  ({s['n_pred']} pred, {s['n_true']} true)")
    if result.get("per_class"):
        lines.append("  per class (recall one-to-one / any; precision when predictions are "
                     "labelled):")
        for c, s in result["per_class"].items():
            lines.append(f"    class {c:<4d} n={s['n_true']:<5d} recall "
                         f"{_fmt(s['one_to_one']['recall'])} / {_fmt(s['any']['recall'])}"
                         f"  precision {_fmt(s['one_to_one']['precision'])} / "
                         f"{_fmt(s['any']['precision'])}")
    for key, side in (("tomograms_only_in_predictions", "predictions"),
                      ("tomograms_only_in_truth", "truth")):
        if result.get(key):
            lines.append(f"  WARNING: tomograms only in the {side} (never matched): "
                         + ", ".join(result[key]))
    ori = result.get("orientation")
    if ori:
        lines.append(f"  orientation (z-axis) error over {ori['n']} pairs: median "
                     f"{ori['median']:.1f}, mean {ori['mean']:.1f}, max {ori['max']:.1f} deg")
    return "\n".join(lines)
