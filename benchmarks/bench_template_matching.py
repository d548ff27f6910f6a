"""Accuracy and speed of tomopick's template matching next to a naive full search.

Data: a simulated lamella (`tomopick.core.simulate`, default 128 x 256 x 256
voxels of 12 Å) with ~100 80S ribosomes from the real map EMD-3883
(../shared/data, via `tomopick.core.simulate.maps`) among ~50 particles of
three other shapes, two vesicles with membrane proteins, gold beads, a
missing wedge of +-60 degrees, a phase-flipped CTF and noise at SNR 0.1.

Ours: `match_template` with the ribosome map as the reference (resampled
from 8.66 Å/voxel, contrast inverted), diameter 400 Å, low-pass 30 Å, in
this process, timed (wall) with its peak memory (ru_maxrss of the process).
Scores: one-to-one F1 against the ribosomes' true centres at a radius of a
quarter of the diameter, median orientation error of the matched picks
(angle of R_pick^T R_true), picks on gold beads.

Peer, same run: the naive search -- every rotation at the final angular
precision (the fine step), correlated with the whole full-sampling tomogram
by FFT (FLCF, same filters) -- timed on a sample of rotations and
extrapolated to the rotation count; the speed-up is the ratio of the two
wall times. pytom-match-pick's published figure (193 s for 8,700 rotations at
12.85 degrees on a 462 x 478 x 250 tomogram, one GTX 1080 Ti) is put next to
ours per voxel and rotation.

Usage::

    python benchmarks/bench_template_matching.py [--shape 128 256 256] [--json FILE]
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tomopick.core.evaluate import match_picks                      # noqa: E402
from tomopick.core.formats.mrc import read_mrc                      # noqa: E402
from tomopick.core.fourier import bandpass                          # noqa: E402
from tomopick.core.rotations import angular_distance, rotation_count, uniform_rotations  # noqa
from tomopick.core.simulate import simulate_tomogram                # noqa: E402
from tomopick.core.simulate import map_particle_class          # noqa: E402
from tomopick.core.template_matching import (Correlator, match_template,  # noqa: E402
                                             prepare_template)
from tomopick.core.template_matching.search import _Level          # noqa: E402

RIBOSOME = "emd3883_80S_ribosome_64px_8.66A.mrc"
PYTOM = dict(seconds=193.0, rotations=8700, step=12.85, shape=(250, 478, 462))


def data_dir():
    for d in (os.path.join(os.path.dirname(HERE), "..", "shared", "data"), "/work/shared/data"):
        if os.path.exists(os.path.join(d, RIBOSOME)):
            return d
    sys.exit(f"benchmark data {RIBOSOME} not found next to the repository (../shared/data)")


def ribosome_phantom(shape=(128, 256, 256), voxel=12.0, n_particles=150, n_gold=8, snr=0.1,
                     seed=3):
    """The benchmark's phantom: ~2/3 of the free particles are ribosomes (class 10)."""
    rib = map_particle_class("ribosome80S", os.path.join(data_dir(), RIBOSOME), None, voxel)
    return simulate_tomogram(shape=shape, voxel_size=voxel, n_particles=n_particles,
                             n_vesicles=2, proteins_per_vesicle=6, n_gold=n_gold,
                             tilt_range=(-60, 60), snr=snr, seed=seed,
                             particle_classes=[10] * 6 + [1, 2, 3], extra_classes={10: rib},
                             keep_clean=False)


def score(result, phantom, diameter_vox, class_id=10):
    truth = phantom.particles.group_ids == class_id
    true_pos = phantom.particles.positions[truth]
    true_rot = phantom.particles.matrices[truth, :3, :3]
    i, j, _ = match_picks(result.positions, true_pos, diameter_vox / 4)
    tp = len(i)
    precision = tp / max(len(result.positions), 1)
    recall = tp / max(len(true_pos), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    err = angular_distance(result.rotations[i], true_rot[j]) if tp else np.zeros(0)
    beads = 0
    for g in phantom.gold:
        d = np.linalg.norm(result.positions - g["center"], axis=1)
        beads += int(np.any(d < g["radius"] + diameter_vox / 4))
    return dict(n_true=int(len(true_pos)), n_picks=int(len(result.positions)), tp=tp,
                precision=precision, recall=recall, f1=f1,
                median_orientation_error=float(np.median(err)) if tp else None,
                p90_orientation_error=float(np.percentile(err, 90)) if tp else None,
                beads_picked=beads, n_beads=len(phantom.gold))


def naive_seconds_per_rotation(tomogram, voxel, template, mask, lowpass, tilt_range, n=4):
    """Full-sampling FLCF of single rotations, as a search over every fine rotation does."""
    import scipy.fft
    with scipy.fft.set_workers(os.cpu_count()):
        return _naive(tomogram, voxel, template, mask, lowpass, tilt_range, n)


def _naive(tomogram, voxel, template, mask, lowpass, tilt_range, n):
    level = _Level(template, mask, voxel, lowpass, None, tilt_range, None)
    t0 = time.perf_counter()
    corr = Correlator(tomogram, bandpass(tomogram.shape, voxel, lowpass), mask)
    setup = time.perf_counter() - t0
    rots = uniform_rotations(10.0)[:n]
    best = np.full(tomogram.shape, -np.inf, np.float32)
    t0 = time.perf_counter()
    for R in rots:
        for cc in corr.scores(level.conditioned(R[None])):
            np.maximum(best, cc, out=best)
    return (time.perf_counter() - t0) / n, setup


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(128, 256, 256))
    ap.add_argument("--voxel", type=float, default=12.0)
    ap.add_argument("--diameter", type=float, default=400.0)
    ap.add_argument("--lowpass", type=float, default=30.0)
    ap.add_argument("--snr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--naive-rotations", type=int, default=4)
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    phantom = ribosome_phantom(tuple(args.shape), args.voxel, snr=args.snr, seed=args.seed)
    sim_s = time.perf_counter() - t0
    ref = read_mrc(os.path.join(data_dir(), RIBOSOME))
    print(f"phantom {tuple(args.shape)} at {args.voxel} Å/voxel in {sim_s:.0f} s: "
          f"{int(np.sum(phantom.particles.group_ids == 10))} ribosomes, "
          f"{len(phantom.particles)} particles, {len(phantom.gold)} gold beads, SNR {args.snr}")

    t0 = time.perf_counter()
    template, mask, _ = prepare_template(ref, 8.66, args.voxel, args.diameter, invert=True,
                                         log=print)
    result = match_template(phantom.tomogram, args.voxel, template, mask, args.diameter,
                            tilt_range=(-60, 60), lowpass=args.lowpass, false_positives=1.0,
                            progress=print, return_maps=True)
    ours_s = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    st = result.stats
    acc = score(result, phantom, args.diameter / args.voxel)

    naive_rot_s, naive_setup = naive_seconds_per_rotation(
        phantom.tomogram, args.voxel, template, mask, args.lowpass, (-60, 60),
        args.naive_rotations)
    n_fine = st["n_fine_rotations"]
    naive_s = naive_setup + naive_rot_s * n_fine
    voxels = int(np.prod(args.shape))
    pytom_rate = PYTOM["rotations"] * np.prod(PYTOM["shape"]) / PYTOM["seconds"]
    n_pytom_ours = rotation_count(PYTOM["step"])
    ours_equiv_rate = voxels * n_fine / ours_s            # fine-precision voxel-rotations / s
    out = dict(
        shape=list(args.shape), voxel=args.voxel, snr=args.snr, accuracy=acc,
        wall_seconds=ours_s, peak_rss_mb=peak_mb, threshold_sigma=result.threshold,
        coarse_step=st["coarse_step"], fine_step=st["fine_step"], binning=st["binning"],
        n_coarse_rotations=st["n_coarse_rotations"], n_fine_rotations=n_fine,
        n_candidates=st["n_candidates"], n_refine_rotations=st["n_refine_rotations"],
        coarse_seconds=st["coarse_seconds"], refine_seconds=st["refine_seconds"],
        rotations_per_second=st["rotations_per_second"],
        voxel_rotations_per_second=st["voxel_rotations_per_second"],
        naive_seconds_per_rotation=naive_rot_s, naive_seconds=naive_s,
        speedup_vs_naive=naive_s / ours_s,
        fine_precision_voxel_rotations_per_second=ours_equiv_rate,
        naive_voxel_rotations_per_second=voxels / naive_rot_s,
        pytom_voxel_rotations_per_second=pytom_rate,
        pytom_equivalent_seconds_ours=float(np.prod(PYTOM["shape"]) * n_pytom_ours
                                            / ours_equiv_rate),
        cpu_count=os.cpu_count(), load_average=os.getloadavg())
    print(json.dumps(out, indent=1))
    print(f"F1 {acc['f1']:.3f} (P {acc['precision']:.3f}, R {acc['recall']:.3f}), median "
          f"orientation error {acc['median_orientation_error']:.2f} deg, beads picked "
          f"{acc['beads_picked']}/{acc['n_beads']}; ours {ours_s:.0f} s, naive (extrapolated "
          f"{n_fine} rotations x {naive_rot_s:.2f} s) {naive_s:.0f} s: {naive_s / ours_s:.0f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
