"""Picking consensus: which particles several pickings agree on.

Several pickings (`Picks`) of the same tomograms are merged into particles:
picks of *different* pickings that lie within a radius of each other are one
particle, and each picking votes at most once per particle. A particle is kept
when enough pickings voted for it (all of them, any of them, at least or
exactly k of them).

The grouping rule is symmetric, so the result does not depend on the order of
the pickings nor on the order of the picks inside them:

1. Two picks are *linked* when they come from different pickings, lie in the
   same tomogram and their distance is at most the radius.
2. A particle is a set of picks from distinct pickings, connected by links,
   that all lie within the radius of their mean position. For two pickings
   this is "the two picks are within the radius", as in tomoviz; for more it
   is tomoviz's "within the radius of the particle's running mean" without
   the running (order-dependent) part.
3. A connected component of the links is one particle when it obviously
   satisfies (2): its picks come from distinct pickings and it is a clique
   (every subset of a clique lies within the radius of its mean) or has at
   most three picks (for links AB, BC: ``|A - mean| = |(A-B) + (A-C)| / 3 <=
   (r + 2r) / 3``). On well-separated particles every component is such.
4. Any other component (a picking has two picks in it, or a long chain) is
   split by agglomeration: links are taken shortest first, ties broken by a
   canonical order of the picks that ignores which picking they came from,
   and two partial particles merge when they share no picking and all their
   picks lie within the radius of the merged mean.

The members' attributes are then reduced in the canonical order of the picks
(tomogram, x, y, z, ...), so permuting the inputs gives bit-identical results.

This replaces the serial loop of tomoviz's "picking consensus"
(``ProtTomoConsensusPicking.consensusWorker``), which compares each pick with a
running mean of earlier ones (order-dependent, O(N M)), lets one picking vote
twice for one particle, truncates positions to integers, averages quaternions
pairwise from a random start, rounds the matrices to two decimals and drops
the shifts.
"""
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .picks import Picks
from .rotations import project_to_rotation_rows

MODES = (">=", "=")


# --------------------------------------------------------------------------
# scores
# --------------------------------------------------------------------------
def jaccard(membership):
    """Jaccard index of several pickings over common particles.

    Parameters
    ----------
    membership : (G, n) array of bool
        ``membership[g, i]`` is True when picking ``i`` voted for particle ``g``.

    Returns
    -------
    float
        (particles picked by every picking) / (particles picked by any), the
        size of the intersection over the size of the union; NaN when there
        are no particles. For two pickings this is the usual
        ``|A & B| / |A | B|``.

    Examples
    --------
    One particle picked by both pickings, two by one of them:

    >>> round(jaccard([[True, True], [True, False], [False, True]]), 4)
    0.3333
    """
    membership = np.asarray(membership, dtype=bool)
    if membership.ndim != 2:
        raise ValueError(f"membership must be (particles, pickings), got shape {membership.shape}")
    union = int(membership.any(axis=1).sum())
    if union == 0:
        return float("nan")
    return int(membership.all(axis=1).sum()) / union


def resolve_min_votes(consensus, n_inputs):
    """Votes a particle needs, from a consensus value (-1 meaning all).

    Parameters
    ----------
    consensus : int
        -1 for all pickings (AND), 1 for any (OR), k in 1..n_inputs otherwise.
    n_inputs : int

    Returns
    -------
    int
        A value in 1..n_inputs.

    Raises
    ------
    ValueError
        For 0, values below -1 or above the number of pickings (tomoviz
        silently turned those into AND).

    Examples
    --------
    >>> resolve_min_votes(-1, 3), resolve_min_votes(2, 3)
    (3, 2)
    """
    consensus = int(consensus)
    if consensus == -1:
        return n_inputs
    if not 1 <= consensus <= n_inputs:
        raise ValueError(f"a consensus needs -1 (all pickings) or 1 to {n_inputs} votes, "
                         f"got {consensus}")
    return consensus


# --------------------------------------------------------------------------
# consensus
# --------------------------------------------------------------------------
@dataclass
class ConsensusInfo:
    """How the picks were grouped, for summaries and diagnostics.

    Attributes
    ----------
    min_votes : int
        Votes required (``consensus`` resolved: -1 became the number of inputs).
    mode : str
        '>=' or '='.
    radius : float
        Grouping radius, voxels of the first input.
    group_of : list of (N_i,) ndarray of int
        For each input, the particle index of each of its picks.
    votes : (G,) ndarray of int
        Number of pickings that voted for each particle.
    membership : (G, n_inputs) ndarray of bool
        Which pickings voted for each particle.
    tomo_ids : (G,) ndarray of str
        Tomogram of each particle.
    kept : (G,) ndarray of bool
        Particles in the consensus; the output picks are ``kept`` particles in
        particle order.
    per_tomogram : dict
        tsId -> dict with ``input_counts`` (picks per input), ``particles``
        (all particles), ``consensus`` (kept particles) and ``jaccard``.
    jaccard : float
        Jaccard index over all tomograms.
    n_split_components : int
        Linked components that had to be split (crowded or chained picks).
    """
    min_votes: int
    mode: str
    radius: float
    group_of: list
    votes: np.ndarray
    membership: np.ndarray
    tomo_ids: np.ndarray
    kept: np.ndarray
    per_tomogram: dict = field(default_factory=dict)
    jaccard: float = float("nan")
    n_split_components: int = 0


def consensus_picks(inputs, radius, min_votes=-1, mode=">="):
    """Particles on which several pickings agree.

    Parameters
    ----------
    inputs : list of Picks
        Two or more pickings of the same tomograms (matched by ``tomo_ids``).
        Inputs with another ``voxel_size`` than the first are rescaled to it
        (positions and shifts); either all or none must carry a voxel size.
    radius : float
        Voxels of the first input. Picks of different inputs at most this far
        apart are linked; a particle's picks are connected by links and all
        lie within ``radius`` of their mean (see the module docstring).
    min_votes : int, optional
        -1: every input must vote (AND); 1: any (OR); k: k votes, see ``mode``.
        Under AND a tomogram where some input has no picks gives no particles,
        as in tomoviz.
    mode : {'>=', '='}
        Keep particles with at least / exactly ``min_votes`` votes.

    Returns
    -------
    picks : Picks
        One row per kept particle, at the first input's voxel size, ordered by
        tomogram then canonical position. ``positions`` is the mean of the
        members; ``scores`` is the number of votes; ``group_ids`` is the
        group id the members agree on (members with group 0, "unknown", do
        not count), 0 when they disagree or carry none; ``matrices`` (when any
        input carries orientations) holds the chordal mean of the members'
        rotations and the mean of their shifts (identity for particles with no
        oriented member). ``extra['votes']`` (int) repeats the votes and, when
        some input carries scores, ``extra['mean_score']`` is the mean score
        of the members that have one (NaN if none).
    info : ConsensusInfo
        The grouping of every input pick and per-tomogram statistics.

    Raises
    ------
    ValueError
        Fewer than two inputs, a non-positive radius, an invalid ``min_votes``
        or ``mode``, or voxel sizes given for only some inputs.

    Examples
    --------
    >>> from tomopick.core.picks import Picks
    >>> a = Picks("T1", [[10, 10, 10], [40, 10, 10]])
    >>> b = Picks("T1", [[11, 10, 10], [10, 40, 10]])
    >>> both, info = consensus_picks([a, b], radius=3)
    >>> both.positions, both.scores
    (array([[10.5, 10. , 10. ]]), array([2.]))
    >>> either, info = consensus_picks([a, b], radius=3, min_votes=1)
    >>> len(either), either.scores
    (3, array([2., 1., 1.]))
    """
    inputs = list(inputs)
    n_inputs = len(inputs)
    if n_inputs < 2:
        raise ValueError(f"a consensus needs at least two pickings, got {n_inputs}")
    for i, p in enumerate(inputs):
        if not isinstance(p, Picks):
            raise ValueError(f"input {i} is a {type(p).__name__}, not Picks")
    radius = float(radius)
    if not np.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius must be a positive number of voxels, got {radius}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    min_votes = resolve_min_votes(min_votes, n_inputs)
    for i, p in enumerate(inputs):
        if not np.all(np.isfinite(p.positions)):
            raise ValueError(f"input {i} has non-finite positions")
        if p.matrices is not None and not np.all(np.isfinite(p.matrices)):
            raise ValueError(f"input {i} has non-finite matrices")
    inputs = _common_voxel_size(inputs)

    # ---- all picks in one table ------------------------------------------
    counts = np.array([len(p) for p in inputs])
    n = int(counts.sum())
    source = np.repeat(np.arange(n_inputs), counts)
    positions = np.concatenate([p.positions for p in inputs]) if n else np.zeros((0, 3))
    all_tomos = np.concatenate([p.tomo_ids for p in inputs]) if n else np.zeros(0, dtype=str)
    tomo_names, tomo_code = _codes(all_tomos)
    group_ids = np.concatenate([p.group_ids for p in inputs]) if n else np.zeros(0, int)
    oriented_any = any(p.matrices is not None for p in inputs)
    scored_any = any(p.scores is not None for p in inputs)
    matrices = oriented = scores = None
    if oriented_any:
        matrices = np.concatenate([p.matrices if p.matrices is not None
                                   else np.broadcast_to(np.eye(4), (len(p), 4, 4))
                                   for p in inputs]) if n else np.zeros((0, 4, 4))
        oriented = np.repeat([p.matrices is not None for p in inputs], counts)
    if scored_any:
        scores = np.concatenate([p.scores if p.scores is not None else np.full(len(p), np.nan)
                                 for p in inputs]) if n else np.zeros(0)

    order, rank = _canonical_order(tomo_code, positions, group_ids, matrices, scores)

    # ---- links: cross-input pairs within the radius ----------------------
    edges_i, edges_j, dist2 = _links(positions, tomo_code, source, radius)

    # ---- particles -------------------------------------------------------
    label, n_split = _group(n, source, edges_i, edges_j, dist2, rank, positions, radius)
    label, members, size, heads = _number_particles(label, order)
    n_groups = len(size)
    group_tomo = tomo_code[heads]

    membership = np.zeros((n_groups, n_inputs), dtype=bool)
    membership[label, source] = True
    votes = membership.sum(axis=1)
    if mode == ">=":
        kept = votes >= min_votes
    else:
        kept = votes == min_votes

    # ---- reduce the members of kept particles, in canonical order ---------
    members = members[np.repeat(kept, size)]
    size_kept = size[kept]
    starts = np.cumsum(size_kept) - size_kept
    if len(members):
        mean_pos = np.add.reduceat(positions[members], starts, axis=0) / size_kept[:, None]
        # 0 means "no group" (Picks): only members that carry one must agree
        g = group_ids[members]
        limits = np.iinfo(np.int64)
        gmin = np.minimum.reduceat(np.where(g == 0, limits.max, g), starts)
        gmax = np.maximum.reduceat(np.where(g == 0, limits.min, g), starts)
        out_groups = np.where(gmin == gmax, gmin, 0)
    else:
        mean_pos, out_groups = np.zeros((0, 3)), np.zeros(0, dtype=int)
    out_matrices = None
    if oriented_any:
        out_matrices = _mean_transforms(matrices, members, starts, oriented)
    extra = {"votes": votes[kept].astype(int)}
    if scored_any:
        s = scores[members]
        has = ~np.isnan(s)
        if len(members):
            ssum = np.add.reduceat(np.where(has, s, 0.0), starts)
            scount = np.add.reduceat(has.astype(int), starts)
        else:
            ssum, scount = np.zeros(0), np.zeros(0, dtype=int)
        extra["mean_score"] = np.where(scount > 0, ssum / np.maximum(scount, 1), np.nan)

    picks = Picks(tomo_names[group_tomo[kept]], mean_pos, out_groups, out_matrices,
                  votes[kept].astype(float), inputs[0].voxel_size, extra)

    # ---- bookkeeping -----------------------------------------------------
    group_of = np.split(label, np.cumsum(counts)[:-1])
    n_tomos = len(tomo_names)
    input_counts = np.bincount(tomo_code * n_inputs + source,
                               minlength=n_tomos * n_inputs).reshape(n_tomos, n_inputs)
    particles = np.bincount(group_tomo, minlength=n_tomos)
    in_consensus = np.bincount(group_tomo[kept], minlength=n_tomos)
    voted_by_all = np.bincount(group_tomo[votes == n_inputs], minlength=n_tomos)
    per_tomogram = {
        str(name): {"input_counts": input_counts[t], "particles": int(particles[t]),
                    "consensus": int(in_consensus[t]),
                    "jaccard": voted_by_all[t] / particles[t] if particles[t] else float("nan")}
        for t, name in enumerate(tomo_names)}
    info = ConsensusInfo(min_votes=min_votes, mode=mode, radius=radius, group_of=group_of,
                         votes=votes, membership=membership, tomo_ids=tomo_names[group_tomo],
                         kept=kept,
                         per_tomogram=per_tomogram, jaccard=jaccard(membership),
                         n_split_components=n_split)
    return picks, info


def _number_particles(label, order):
    """Renumber particles 0.. by their first member in canonical order.

    Parameters
    ----------
    label : (N,) ndarray of int
        Particle label of every pick (any non-negative ids).
    order : (N,) ndarray of int
        The picks in canonical order.

    Returns
    -------
    label : (N,) ndarray of int
        The new particle number of every pick.
    members : (N,) ndarray of int
        The picks grouped by particle, each particle's in canonical order.
    size : (G,) ndarray of int
        Members per particle.
    heads : (G,) ndarray of int
        The first member of each particle.
    """
    n = len(label)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    seq = label[order]
    first_at = np.full(int(label.max()) + 1, n, dtype=np.int64)
    np.minimum.at(first_at, seq, np.arange(n))
    is_first = first_at[seq] == np.arange(n)
    number = np.empty(len(first_at), dtype=np.int64)
    number[seq[is_first]] = np.arange(int(is_first.sum()))
    # in canonical order the particle numbers are nearly sorted already, which
    # the stable sort (timsort) exploits
    members = order[np.argsort(number[seq], kind="stable")]
    label = number[label]
    return label, members, np.bincount(label), order[is_first]


def _common_voxel_size(inputs):
    """The inputs expressed in voxels of the first one."""
    sizes = [p.voxel_size for p in inputs]
    if all(s is None for s in sizes):
        return inputs
    missing = [i for i, s in enumerate(sizes) if s is None]
    if missing:
        raise ValueError(f"input(s) {missing} carry no voxel size while others do; "
                         f"cannot tell whether they need rescaling")
    for i, s in enumerate(sizes):
        if not (np.isfinite(s) and s > 0):
            raise ValueError(f"input {i} has an invalid voxel size {s}")
    reference = float(sizes[0])
    return [p if float(p.voxel_size) == reference else p.rescaled(reference) for p in inputs]


def _codes(names):
    """Sorted distinct names and the index of each name among them.

    Tomogram ids come in long runs, so only the run heads are sorted.
    """
    names = np.asarray(names, dtype=str)
    if len(names) == 0:
        return names[:0], np.zeros(0, dtype=np.int64)
    heads = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
    distinct, code = np.unique(names[heads], return_inverse=True)
    return distinct, np.repeat(code.astype(np.int64), np.diff(np.r_[heads, len(names)]))


def _canonical_order(tomo_code, positions, group_ids, matrices, scores):
    """An order of the picks that depends on their values only, not on inputs.

    Picks are sorted by tomogram, x, y, z, and exact ties on all four by group
    id, matrix and score. Returns the permutation and the rank of each pick.
    """
    n = len(positions)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    x = positions[:, 0]
    # One float key (tomogram, x): rounding is monotonic, so it can only merge
    # distinct (tomogram, x) into ties, never swap them; ties are then sorted
    # on the full key below.
    span = 2.0 ** np.ceil(np.log2(np.ptp(x) + 2.0))
    first_key = tomo_code * span + (x - x.min())
    order = np.argsort(first_key)
    sorted_key = first_key[order]
    if np.any(sorted_key[1:] == sorted_key[:-1]):       # rare with real-valued picks
        primary = np.column_stack([tomo_code, positions])
        order = _sort_ties(order, first_key, lambda idx: primary[idx])
        order = _sort_ties(order, primary,
                           lambda idx: _full_key(idx, primary, group_ids, matrices, scores))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return order, rank


def _full_key(idx, primary, group_ids, matrices, scores):
    columns = [primary[idx], group_ids[idx, None]]
    if matrices is not None:
        columns.append(matrices[idx].reshape(len(idx), 16))
    if scores is not None:
        columns.append(scores[idx, None])
    return np.column_stack(columns)


def _sort_ties(order, tied_on, key):
    """Sort runs of ``order`` that are equal on ``tied_on`` by ``key`` columns."""
    values = tied_on[order]
    if values.ndim == 1:
        values = values[:, None]
    equal = np.all(values[1:] == values[:-1], axis=1)
    if not equal.any():
        return order
    in_run = np.r_[equal, False] | np.r_[False, equal]
    where = np.flatnonzero(in_run)
    run_id = np.cumsum(np.r_[True, ~equal])[where]
    idx = order[where]
    columns = key(idx)
    # run_id is the primary key: each run stays in its own slots
    sub = np.lexsort(tuple(columns.T[::-1]) + (run_id,))
    order = order.copy()
    order[where] = idx[sub]
    return order


def _links(positions, tomo_code, source, radius):
    """Cross-input pairs in one tomogram at most ``radius`` apart.

    Returns the two pick indices of each pair and its squared distance.
    """
    empty = np.zeros(0, dtype=np.int64)
    if len(positions) < 2:
        return empty, empty, np.zeros(0)
    i, j = _candidate_pairs(positions, tomo_code, radius)
    # The decision is taken on this one formula, symmetric in (i, j), so that
    # it does not depend on the order of the picks.
    diff = positions[i] - positions[j]
    dist2 = np.einsum("ij,ij->i", diff, diff)
    keep = (dist2 <= radius * radius) & (source[i] != source[j])
    return i[keep], j[keep], dist2[keep]


def _candidate_pairs(positions, tomo_code, radius):
    """All pairs in one tomogram closer than ``radius`` (and some farther).

    Picks are binned in cubic cells of side ``radius``; a pair within the
    radius always lies in the same or in adjacent cells. With the cell keys
    sorted (x fastest), the next cell of a row is the next key, and the three
    cells (x-1, x, x+1) of each of the four forward neighbour rows are
    consecutive keys found with one binary search: much faster than a k-d
    tree for the sparse, clustered point sets of pickings.
    """
    cell = np.floor(positions / radius).astype(np.int64)
    cell -= cell.min(axis=0)
    dims = cell.max(axis=0) + 3
    n_tomos = int(tomo_code.max()) + 1
    if float(np.prod(dims.astype(float))) * n_tomos > 2.0 ** 62:
        # cell keys would overflow: fall back to a tree (the tomogram is a 4th
        # coordinate spaced beyond the radius)
        points = np.column_stack([positions, tomo_code * (4.0 * radius + 1.0)])
        pairs = cKDTree(points).query_pairs(radius * (1 + 1e-9), output_type="ndarray")
        return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    # +1 keeps x-1, y-1 neighbours inside their own row / plane
    key = ((tomo_code * dims[2] + cell[:, 2] + 1) * dims[1] + cell[:, 1] + 1) * dims[0] \
        + cell[:, 0] + 1
    order = np.argsort(key)
    sorted_key = key[order]
    start = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    cell_key = sorted_key[start]
    count = np.diff(np.r_[start, len(key)])
    n_cells = len(cell_key)

    cells_a, cells_b = [], []
    nxt = np.flatnonzero(cell_key[1:] == cell_key[:-1] + 1)      # (x+1, y, z)
    cells_a.append(nxt)
    cells_b.append(nxt + 1)
    for dz, dy in ((0, 1), (1, -1), (1, 0), (1, 1)):             # rows ahead
        base = cell_key + (dz * dims[1] + dy) * dims[0] - 1
        at = np.searchsorted(cell_key, base)
        for dx in range(3):
            clipped = np.minimum(at, n_cells - 1)
            hit = cell_key[clipped] == base + dx
            cells_a.append(np.flatnonzero(hit))
            cells_b.append(clipped[hit])
            at = at + hit
    a, b = _cell_products(start, count, np.concatenate(cells_a), np.concatenate(cells_b),
                          same_cell=False)
    crowded = np.flatnonzero(count > 1)
    c, d = _cell_products(start, count, crowded, crowded, same_cell=True)
    return order[np.r_[a, c]], order[np.r_[b, d]]


def _cell_products(start, count, cells_a, cells_b, same_cell):
    """Sorted-order indices of every pick pair between paired cells.

    ``same_cell``: ``cells_a`` and ``cells_b`` are the same cells and each
    unordered pair of their picks is given once.
    """
    first, second = [], []
    if same_cell:
        # most crowded cells hold the 2 or 3 picks of one particle
        for k in (2, 3):
            s = start[cells_a[count[cells_a] == k]]
            for p in range(k):
                for q in range(p + 1, k):
                    first.append(s + p)
                    second.append(s + q)
        general = cells_a[count[cells_a] > 3]
        cells_a = cells_b = general
    else:
        single = (count[cells_a] == 1) & (count[cells_b] == 1)
        first.append(start[cells_a[single]])
        second.append(start[cells_b[single]])
        cells_a, cells_b = cells_a[~single], cells_b[~single]
    na, nb = count[cells_a], count[cells_b]
    total = na * nb
    n_pairs = int(total.sum())
    if n_pairs:
        which = np.repeat(np.arange(len(cells_a)), total)
        within = np.arange(n_pairs) - np.repeat(np.cumsum(total) - total, total)
        nbw = nb[which]
        ia = within // nbw
        ib = within - ia * nbw
        a = start[cells_a][which] + ia
        b = start[cells_b][which] + ib
        if same_cell:
            keep = ia < ib
            a, b = a[keep], b[keep]
        first.append(a)
        second.append(b)
    if not first:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(first), np.concatenate(second)


def _group(n, source, ei, ej, dist2, rank, positions, radius):
    """Particle label of every pick (see the module docstring)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    graph = coo_matrix((np.ones(len(ei)), (ei, ej)), shape=(n, n))
    n_comp, label = connected_components(graph, directed=False)
    label = label.astype(np.int64)
    size = np.bincount(label, minlength=n_comp)
    n_edges = np.bincount(label[ei], minlength=n_comp)
    n_src = int(source.max()) + 1
    distinct = np.count_nonzero(
        np.bincount(label * n_src + source, minlength=n_comp * n_src).reshape(n_comp, n_src),
        axis=1)
    # Components of distinct inputs that the agglomeration below would merge
    # whole are particles as they stand: cliques (every subset of one lies
    # within the radius of its mean) and any connected trio (for links AB, BC
    # <= r, |A - mean| = |(A - B) + (A - C)| / 3 <= (r + 2r) / 3).
    clean = (distinct == size) & ((size <= 3) | (n_edges == size * (size - 1) // 2))
    if clean.all():
        return label, 0
    return _agglomerate(label, clean, n_comp, source, ei, ej, dist2, rank, positions,
                        radius), int((~clean).sum())


def _agglomerate(label, clean, n_comp, source, ei, ej, dist2, rank, positions, radius):
    """Split the remaining components by constrained agglomeration.

    Links are taken shortest first (ties by canonical rank); two partial
    particles merge when they share no input and all their picks lie within
    ``radius`` of the merged mean (summed in canonical order).
    """
    points = np.flatnonzero(~clean[label])            # picks of the components to split
    local = np.full(len(label), -1, dtype=np.int64)
    local[points] = np.arange(len(points))
    bad_edge = ~clean[label[ei]]
    bi, bj, bd = local[ei[bad_edge]], local[ej[bad_edge]], dist2[bad_edge]
    rnk = rank[points]
    lo = np.minimum(rnk[bi], rnk[bj])
    hi = np.maximum(rnk[bi], rnk[bj])
    edge_order = np.lexsort((hi, lo, bd))
    bi, bj = bi[edge_order].tolist(), bj[edge_order].tolist()
    src = source[points].tolist()
    rnk = rnk.tolist()
    xyz = positions[points].tolist()
    parent = list(range(len(points)))
    members = {}
    inputs_of = {}
    r2 = radius * radius

    def find(a):
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    for a, b in zip(bi, bj):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        ia = inputs_of.get(ra, {src[ra]})
        ib = inputs_of.get(rb, {src[rb]})
        if ia & ib:
            continue
        merged = sorted(members.get(ra, [ra]) + members.get(rb, [rb]), key=rnk.__getitem__)
        k = len(merged)
        cx = sum(xyz[m][0] for m in merged) / k
        cy = sum(xyz[m][1] for m in merged) / k
        cz = sum(xyz[m][2] for m in merged) / k
        if any((xyz[m][0] - cx) ** 2 + (xyz[m][1] - cy) ** 2 + (xyz[m][2] - cz) ** 2 > r2
               for m in merged):
            continue
        parent[rb] = ra
        members[ra] = merged
        inputs_of[ra] = ia | ib
        members.pop(rb, None)
        inputs_of.pop(rb, None)

    new_label = label.copy()
    roots = np.array([find(p) for p in range(len(points))], dtype=np.int64)
    new_label[points] = n_comp + roots         # any unique id; renumbered later
    return new_label


def _mean_transforms(matrices, members, starts, oriented=None):
    """Per-particle mean transform of the oriented members (identity if none).

    Parameters
    ----------
    matrices : (N, 4, 4) ndarray
        All picks' transforms.
    members : (M,) ndarray of int
        Picks grouped by particle, each particle starting at ``starts``.
    oriented : (N,) ndarray of bool, optional
        Picks whose matrix counts (all when omitted).

    Returns
    -------
    (len(starts), 4, 4) ndarray
        Chordal mean rotation and arithmetic mean shift; a particle whose
        members all hold the same rotation (one member, or identities) keeps
        it bit for bit.
    """
    n_groups = len(starts)
    out = np.zeros((n_groups, 4, 4))
    out[:, 3, 3] = 1.0
    if n_groups == 0:
        return out
    if oriented is not None and not oriented[members].all():
        # unoriented members do not count; particles left empty get identity
        use = oriented[members]
        count = np.add.reduceat(use.astype(np.int64), starts)
        has = count > 0
        kept_starts = (np.cumsum(count) - count)[has]
        out[has] = _mean_transforms(matrices, members[use], kept_starts)
        out[~has, :3, :3] = np.eye(3)
        return out
    size = np.diff(np.r_[starts, len(members)])
    flat = np.take(matrices.reshape(len(matrices), 16), members, axis=0)
    rotation, shift = [0, 1, 2, 4, 5, 6, 8, 9, 10], [3, 7, 11]
    # per-particle sums and first members, then entries as rows (16, G): the
    # comparisons and the Newton iteration run on contiguous rows
    total = np.add.reduceat(flat, starts, axis=0).T
    first = flat[starts].T[rotation]
    result = np.zeros((16, n_groups))
    result[15] = 1.0            # the last row of every matrix is (0, 0, 0, 1)
    result[shift] = total[shift] / size
    # When the sum is exactly k times the first member's rotation (one member,
    # identical members), the projection of the sum is that rotation: copy it
    # bit for bit rather than iterate to it.
    rot_sum = total[rotation]
    same = np.all(rot_sum == size * first, axis=0)
    rot = np.where(same, first, 0.0)
    if not same.all():
        rot[:, ~same] = project_to_rotation_rows(rot_sum[:, ~same])
    result[rotation] = rot
    return result.T.reshape(n_groups, 4, 4)
