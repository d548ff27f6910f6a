"""Speed and agreement of tomopick's picking consensus next to tomoviz's, in the same run.

Data: N pickings (default 3) x 20,000 coordinates over 10 tomograms of
928 x 928 x 300 voxels. Each tomogram holds 2,000 true particles; every
picking finds 85 % of them (position jitter, orientation = the particle's
rotation perturbed by a few degrees, the particle's group id) and adds false
picks up to its 2,000 per tomogram. Two scenarios:

``separated``
    Particles and false picks on distinct sites at least 14 voxels apart and
    jitter inside a 1-voxel ball, so every grouping rule must find the same
    particles: the agreement check.
``realistic``
    Particles at least 2 radii apart, Gaussian jitter (1 voxel per axis) and
    false picks anywhere: where the order-dependent, running-mean rule of
    tomoviz and tomopick's symmetric rule may legitimately differ.

The peer is tomoviz's ``consensusWorker`` (scipion-em-tomoviz 3.2.1) run per
tomogram exactly as its protocol's ``calculateConsensusStep`` and
``generateOutput`` do, minus the Scipion database I/O that both sides would
share (see ``benchmarks/tomoviz_reference.py``). With ``--tomoviz-path`` the
real package is imported from that folder; without it, or when it does not
import, a statement-for-statement re-implementation on pwem's quaternion
functions is run instead and the report says so. Nothing is downloaded or
installed by this script. To get the real package::

    pip download scipion-em-tomoviz==3.2.1 --no-deps -d /tmp/tv && \\
        mkdir -p /tmp/tomoviz_pkg && unzip -oq /tmp/tv/*.whl -d /tmp/tomoviz_pkg
    python benchmarks/bench_consensus.py --tomoviz-path /tmp/tomoviz_pkg

Usage::

    python benchmarks/bench_consensus.py [--tomoviz-path DIR] [--quick] [--json FILE]
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from scipy.spatial import cKDTree

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from tomopick.core.consensus import consensus_picks  # noqa: E402  (sets Scipion env defaults)
from tomopick.core.evaluate import evaluate_picks  # noqa: E402
from tomopick.core.picks import Picks  # noqa: E402
from tomopick.core.simulate import random_rotations  # noqa: E402
from tomopick.core.rotations import homogeneous  # noqa: E402
import tomoviz_reference  # noqa: E402

SHAPE = (300, 928, 928)          # nz, ny, nx
VOXEL_SIZE = 10.0


def _small_rotations(n, degrees, rng):
    """Rotations by ``degrees`` about random axes."""
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1)[:, None]
    t = np.radians(degrees)
    K = np.zeros((n, 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    K -= K.transpose(0, 2, 1)
    return np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K


def _sites(n, min_distance, rng, jitter):
    """n positions (x, y, z) in the tomogram, pairwise >= min_distance apart."""
    nz, ny, nx = SHAPE
    step = min_distance + 2 * jitter
    grid = np.stack(np.meshgrid(np.arange(step, nx - step, step), np.arange(step, ny - step, step),
                                np.arange(step, nz - step, step), indexing="ij"), -1).reshape(-1, 3)
    if len(grid) < n:
        raise ValueError(f"{n} sites do not fit {min_distance} voxels apart")
    chosen = grid[rng.choice(len(grid), n, replace=False)]
    return chosen + rng.uniform(-jitter, jitter, chosen.shape)


def make_pickings(n_inputs, n_per_input, n_tomos, radius, scenario, seed=0):
    """Synthetic pickings and their truth (see the module docstring)."""
    rng = np.random.default_rng(seed)
    per_tomo = n_per_input // n_tomos
    n_true = per_tomo
    n_found = int(round(0.85 * n_true))
    n_false = per_tomo - n_found
    inputs = [[] for _ in range(n_inputs)]
    truth = []
    for t in range(n_tomos):
        name = f"TS_{t:02d}"
        if scenario == "separated":
            sites = _sites(n_true + n_inputs * n_false, 14.0, rng, 3.0)
            particles, false_sites = sites[:n_true], sites[n_true:]
        else:
            particles = _sites(n_true, 2 * radius + 2, rng, 2.0)
            nz, ny, nx = SHAPE
            false_sites = rng.uniform([0, 0, 0], [nx, ny, nz], (n_inputs * n_false, 3))
        rotations = random_rotations(n_true, rng)
        groups = rng.integers(1, 6, n_true)
        truth.append(Picks(name, particles, groups, homogeneous(rotations), None, VOXEL_SIZE))
        for k in range(n_inputs):
            found = rng.choice(n_true, n_found, replace=False)
            if scenario == "separated":
                jitter = rng.normal(size=(n_found, 3))
                jitter *= (rng.uniform(0, 1, n_found) ** (1 / 3)
                           / np.linalg.norm(jitter, axis=1))[:, None]
            else:
                jitter = rng.normal(0, 1.0, (n_found, 3))
            false = false_sites[k * n_false:(k + 1) * n_false]
            positions = np.r_[particles[found] + jitter, false]
            R = np.r_[rotations[found] @ _small_rotations(n_found, 4.0, rng),
                      random_rotations(n_false, rng)]
            shifts = rng.normal(0, 0.5, (per_tomo, 3))
            g = np.r_[groups[found], rng.integers(1, 6, n_false)]
            order = rng.permutation(per_tomo)
            inputs[k].append(Picks(name, positions[order], g[order],
                                   homogeneous(R[order], shifts[order]), None, VOXEL_SIZE))
    return [Picks.concatenate(parts) for parts in inputs], Picks.concatenate(truth)


def scipion_view(inputs):
    """What the protocol reads from Scipion, per tomogram and input.

    Positions relative to the tomogram centre (``getPosition(SCIPION)``).
    """
    center = np.array([SHAPE[2], SHAPE[1], SHAPE[0]]) / 2.0
    view = {}
    for name in np.unique(inputs[0].tomo_ids):
        view[str(name)] = [(p.positions[p.tomo_ids == name] - center,
                            p.group_ids[p.tomo_ids == name],
                            p.matrices[p.tomo_ids == name]) for p in inputs]
    return view, center


def _time(fn, repeats):
    """Result of the last call, wall-clock and CPU (process) seconds of each.

    The CPU time is what to compare on a shared machine: wall-clock time there
    includes waiting for a core, which hurts a 50 ms run more than a 10 s one.
    """
    wall, cpu, result = [], [], None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return result, wall, cpu


def compare(ours, theirs, center, truth, radius):
    """Agreement of the kept particles (one-to-one within the truncation error)."""
    n_ours = len(ours)
    n_theirs = sum(len(v[0]) for v in theirs.values())
    matched, pos_diff, angles, orth_err = 0, [], [], []
    err_ours, err_theirs = [], []
    for name in np.unique(np.r_[ours.tomo_ids, list(theirs)]):
        mine = ours.for_tomogram(name)
        true = truth.for_tomogram(name).positions
        if name not in theirs or len(mine) == 0:
            continue
        pos, _, mats = theirs[name]
        pos = pos + center
        # tomoviz truncates every input position to int: < 1 voxel per axis
        d, j = cKDTree(pos).query(mine.positions, distance_upper_bound=np.sqrt(3) + 1e-6)
        ok = np.isfinite(d)
        ok &= np.bincount(j[ok], minlength=len(pos) + 1)[j] == 1
        matched += int(ok.sum())
        pos_diff.extend(d[ok])
        R_mine = mine.matrices[ok, :3, :3]
        R_theirs = mats[j[ok], :3, :3]
        cos = (np.einsum("nij,nij->n", R_mine, R_theirs) - 1) / 2
        angles.extend(np.degrees(np.arccos(np.clip(cos, -1, 1))))
        orth_err.extend(np.abs(np.einsum("nji,njk->nik", R_theirs, R_theirs)
                               - np.eye(3)).max(axis=(1, 2)))
        tree = cKDTree(true)
        err_ours.extend(tree.query(mine.positions)[0])
        err_theirs.extend(tree.query(pos)[0])
    theirs_picks = Picks(np.concatenate([[name] * len(v[0]) for name, v in theirs.items()]),
                         np.concatenate([v[0] + center for v in theirs.values()]),
                         voxel_size=VOXEL_SIZE) if theirs else None
    score_ours = evaluate_picks(ours, truth, radius=radius)["one_to_one"]
    score_theirs = evaluate_picks(theirs_picks, truth, radius=radius)["one_to_one"] \
        if theirs_picks is not None else {"precision": float("nan"), "recall": float("nan")}
    ortho_ours = np.abs(np.einsum("nji,njk->nik", ours.matrices[:, :3, :3],
                                  ours.matrices[:, :3, :3]) - np.eye(3)).max()
    return {
        "kept_tomopick": n_ours, "kept_tomoviz": n_theirs, "matched": matched,
        "same_particles": matched == n_ours == n_theirs,
        "max_position_difference": float(np.max(pos_diff)) if pos_diff else None,
        "rotation_difference_deg_median": float(np.median(angles)) if angles else None,
        "rotation_difference_deg_max": float(np.max(angles)) if angles else None,
        "tomoviz_orthonormality_error_max": float(np.max(orth_err)) if orth_err else None,
        "tomopick_orthonormality_error_max": float(ortho_ours),
        "mean_error_to_truth_tomopick": float(np.mean(err_ours)) if err_ours else None,
        "mean_error_to_truth_tomoviz": float(np.mean(err_theirs)) if err_theirs else None,
        "precision_recall_tomopick": (score_ours["precision"], score_ours["recall"]),
        "precision_recall_tomoviz": (score_theirs["precision"], score_theirs["recall"]),
    }


def run(args):
    worker, peer = None, "re-implementation (benchmarks/tomoviz_reference.py)"
    if args.tomoviz_path:
        try:
            worker = tomoviz_reference.load_tomoviz(args.tomoviz_path)
            peer = f"tomoviz consensusWorker imported from {args.tomoviz_path}"
        except Exception as err:      # any import problem: say so, then fall back
            print(f"! could not import tomoviz from {args.tomoviz_path}: {err}")
    if worker is None:
        print("! tomoviz not used: running the faithful re-implementation of its "
              "consensusWorker instead (pass --tomoviz-path DIR with the unpacked package)")
        worker = tomoviz_reference.reimplemented_worker
    print(f"peer: {peer}")
    results = {"peer": peer, "n_inputs": args.inputs, "n_per_input": args.n_per_input,
               "n_tomograms": args.tomograms, "radius": args.radius,
               "consensus": args.consensus, "scenarios": {}}
    for scenario in args.scenarios:
        inputs, truth = make_pickings(args.inputs, args.n_per_input, args.tomograms,
                                      args.radius, scenario, seed=args.seed)
        view, center = scipion_view(inputs)
        ours, t_ours, c_ours = _time(
            lambda: consensus_picks(inputs, args.radius, args.consensus, ">="), args.repeats)
        ours = ours[0]
        with tempfile.TemporaryDirectory() as work:
            np.random.seed(args.seed)    # tomoviz's quaternion mean starts at random
            theirs, t_theirs, c_theirs = _time(
                lambda: tomoviz_reference.run_tomoviz(worker, view, [VOXEL_SIZE] * args.inputs,
                                                      args.consensus, args.radius, 0, work),
                args.peer_repeats)
        agreement = compare(ours, theirs, center, truth, args.radius)
        row = {"tomopick_s": float(np.median(t_ours)), "tomopick_cpu_s": float(np.median(c_ours)),
               "tomoviz_s": float(np.median(t_theirs)), "tomoviz_cpu_s": float(np.median(c_theirs)),
               "tomopick_all_s": t_ours, "tomoviz_all_s": t_theirs,
               "speedup": float(np.median(t_theirs) / np.median(t_ours)),
               "speedup_cpu": float(np.median(c_theirs) / np.median(c_ours)), **agreement}
        results["scenarios"][scenario] = row
        print(f"\n[{scenario}] {args.inputs} inputs x {args.n_per_input} picks, "
              f"{args.tomograms} tomograms, radius {args.radius}, consensus {args.consensus}")
        print(f"  tomopick consensus_picks : {row['tomopick_s'] * 1e3:9.1f} ms wall "
              f"{row['tomopick_cpu_s'] * 1e3:9.1f} ms CPU (median of {args.repeats})")
        print(f"  tomoviz consensusWorker  : {row['tomoviz_s'] * 1e3:9.1f} ms wall "
              f"{row['tomoviz_cpu_s'] * 1e3:9.1f} ms CPU")
        print(f"  speed-up                 : {row['speedup']:9.1f} x wall "
              f"{row['speedup_cpu']:9.1f} x CPU")
        print(f"  kept: tomopick {row['kept_tomopick']}, tomoviz {row['kept_tomoviz']}, "
              f"matched one-to-one {row['matched']} (same particles: {row['same_particles']})")
        if row["max_position_difference"] is not None:
            print(f"  position difference max {row['max_position_difference']:.2f} voxel "
                  f"(tomoviz truncates inputs to int); mean distance to the true centre: "
                  f"tomopick {row['mean_error_to_truth_tomopick']:.3f}, "
                  f"tomoviz {row['mean_error_to_truth_tomoviz']:.3f} voxel")
            print(f"  rotation difference median {row['rotation_difference_deg_median']:.2f} deg,"
                  f" max {row['rotation_difference_deg_max']:.2f} deg; |R^T R - I| max: "
                  f"tomoviz {row['tomoviz_orthonormality_error_max']:.1e}, "
                  f"tomopick {row['tomopick_orthonormality_error_max']:.1e}")
        (p1, r1), (p2, r2) = row["precision_recall_tomopick"], row["precision_recall_tomoviz"]
        print(f"  against the true particles (one-to-one within the radius): precision / recall "
              f"tomopick {p1:.3f} / {r1:.3f}, tomoviz {p2:.3f} / {r2:.3f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tomoviz-path", default=None,
                        help="folder with the unpacked tomoviz package (else: re-implementation)")
    parser.add_argument("--inputs", type=int, default=3)
    parser.add_argument("--n-per-input", type=int, default=20000)
    parser.add_argument("--tomograms", type=int, default=10)
    parser.add_argument("--radius", type=float, default=4.0)
    parser.add_argument("--consensus", type=int, default=-1, help="-1 = AND")
    parser.add_argument("--scenarios", nargs="+", default=["separated", "realistic"],
                        choices=["separated", "realistic"])
    parser.add_argument("--repeats", type=int, default=5, help="tomopick timings (median)")
    parser.add_argument("--peer-repeats", type=int, default=1, help="tomoviz timings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3 x 2,000 picks over 2 tomograms")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_per_input, args.tomograms = 2000, 2
    run(args)


if __name__ == "__main__":
    main()
