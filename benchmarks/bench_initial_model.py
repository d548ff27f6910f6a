"""Speed and accuracy of the subtomogram initial model, and what the coarse-then-local search gains.

Data: 50 subtomograms of the real 80S ribosome map (EMD-3883, 64^3 at 8.66
Å/voxel, from ../shared/data) in random orientations, moved by up to 2
voxels, with a +-60 degree missing wedge and wedge-shaped white noise at SNR
0.1 (as the tests make them). The initial model runs with the protocol's
defaults: 30 degree global step, 5 iterations, batches of 12, 3 restarts, 3
half-set iterations, low-pass 40 Å, shrink 2 (searches on 32^3 boxes).

Reported: wall time per stage and per iteration (from the progress
callback), total, peak resident memory, and accuracy against the truth
(half-map FSC resolution, model-vs-truth 0.5 resolution, orientation errors).

Search strategies side by side, in the same run, on the same particles and
reference (the truth at 32^3, the wedges as above), per particle:

- ``coarse + local``: the global search at 30 degrees (279 rotations, shared
  by all particles of a batch), then local refinement of the 2 best poses
  (two rounds, 30 then 15 degree radii; final grid 7.5 degrees).
- ``full fine``: a global search at the local refinement's final grid (7.5
  degrees: ~17,800 rotations), every rotation against every particle. Timed
  on a sample of rotations and extrapolated (its cost is linear in them);
  its accuracy is the grid's (the coarse+local poses are compared with the
  truth directly).

Usage::

    python benchmarks/bench_initial_model.py [--quick] [--json FILE]

The machine's CPU is shared with other jobs: absolute times are upper
bounds; the coarse/fine ratio is measured in one process, back to back.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from tomopick.core.alignment import align_box  # noqa: E402
from tomopick.core.averaging import Aligner, fsc, initial_model, resolution  # noqa: E402
from tomopick.core.averaging.initial_model import _align  # noqa: E402
from tomopick.core.fourier import bandpass, soft_sphere, wedge_mask  # noqa: E402
from tomopick.core.resample import fourier_crop_to  # noqa: E402
from tomopick.core.rotations import (angular_distance, rotation_count,  # noqa: E402
                                     uniform_rotations)
from tomopick.tests.test_averaging import align_to_truth, make_particles, ribosome  # noqa: E402


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def search_comparison(truth, voxel_size, boxes, poses, step, fine_sample):
    """Coarse+local against a full fine search on the shrunk boxes: timings and errors."""
    n = boxes.shape[-1] // 2
    small = fourier_crop_to(boxes, (n, n, n), axes=(1, 2, 3))
    small -= small.mean(axis=(1, 2, 3), keepdims=True)
    small /= small.std(axis=(1, 2, 3), keepdims=True)
    reference = fourier_crop_to(truth, (n, n, n))
    small_voxel = voxel_size * 2
    wedge = np.broadcast_to(wedge_mask((n,) * 3, (-60, 60)), (n, n, n // 2 + 1))
    band = bandpass((n,) * 3, small_voxel, lowpass=40.0, highpass=600.0)
    aligner = Aligner(small, wedge[None].astype(np.float32), np.zeros(len(small), int), band,
                      n / 4)
    aligner.set_reference(reference)
    members = np.arange(len(small))
    rotations = uniform_rotations(step)
    t0 = time.perf_counter()
    found, _ = _align(aligner, members, rotations, step, 2)
    coarse_local = time.perf_counter() - t0
    errors = angular_distance(found[:, :3, :3], poses[:, :3, :3])
    fine_step = step / 4
    fine_count = rotation_count(fine_step)
    sample = uniform_rotations(fine_step)[:: max(1, fine_count // fine_sample)][:fine_sample]
    t0 = time.perf_counter()
    aligner.score_rotations(sample, members)
    fine_sampled = time.perf_counter() - t0
    fine_total = fine_sampled / len(sample) * fine_count
    return dict(particles=len(small), box=n, coarse_rotations=len(rotations),
                coarse_local_s=coarse_local, coarse_local_median_error_deg=float(np.median(errors)),
                coarse_local_p90_error_deg=float(np.percentile(errors, 90)),
                fine_step_deg=fine_step, fine_rotations=fine_count,
                fine_sampled_rotations=len(sample), fine_sampled_s=fine_sampled,
                fine_extrapolated_s=fine_total, speedup=fine_total / coarse_local)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 iterations, 2 restarts, 1 half-set iteration")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()

    truth, voxel_size = ribosome(64)
    boxes, poses = make_particles(truth, 50, snr=0.1, seed=1)
    step = 30.0
    out = {"cpu_count": os.cpu_count(), "particles": 50, "box": 64, "shrink": 2}
    print(f"50 subtomograms of 64^3 at {voxel_size:.2f} Å/voxel, SNR 0.1, wedge +-60; "
          f"{os.cpu_count()} CPUs (shared)", flush=True)

    comparison = search_comparison(truth, voxel_size, boxes, poses, step, fine_sample=400)
    out["search"] = comparison
    print(f"search on {comparison['box']}^3, {comparison['particles']} particles: "
          f"coarse {step:g} deg ({comparison['coarse_rotations']} rotations) + local: "
          f"{comparison['coarse_local_s']:.1f} s, median error "
          f"{comparison['coarse_local_median_error_deg']:.1f} deg (p90 "
          f"{comparison['coarse_local_p90_error_deg']:.1f}); full fine search at "
          f"{comparison['fine_step_deg']:g} deg ({comparison['fine_rotations']} rotations): "
          f"{comparison['fine_extrapolated_s']:.0f} s (extrapolated from "
          f"{comparison['fine_sampled_rotations']} in {comparison['fine_sampled_s']:.1f} s); "
          f"speed-up {comparison['speedup']:.0f}x", flush=True)

    progress = []

    def report(p):
        progress.append(p)
        print(" ", p, flush=True)

    kwargs = dict(angular_step=step, iterations=5, batch_size=12, lowpass=40.0, shrink=2.0,
                  seed=0, restarts=3, half_iterations=3)
    if args.quick:
        kwargs.update(iterations=2, restarts=2, half_iterations=1)
    t0, c0 = time.perf_counter(), time.process_time()
    result = initial_model(boxes, voxel_size, 300.0, tilt_ranges=[(-60, 60)],
                           callback=report, **kwargs)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    stamps = [(p.stage, p.elapsed) for p in progress]
    per_iteration = {}
    previous = 0.0
    for stage, elapsed in stamps:
        key = stage.split()[0]
        per_iteration.setdefault(key, []).append(elapsed - previous)
        previous = elapsed
    G = align_to_truth(result.unfiltered, truth, voxel_size, 40.0)
    mask = soft_sphere((64,) * 3, 150 / voxel_size + 1, edge=3)
    frequency, curve = fsc(align_box(result.unfiltered, G, "cubic"), truth, voxel_size,
                           mask=mask)
    errors = angular_distance(result.matrices[:, :3, :3], poses[:, :3, :3] @ G[:3, :3].T)
    out["initial_model"] = dict(
        parameters=kwargs, total_s=total, cpu_s=cpu, load_average=os.getloadavg(),
        mean_s_per_iteration={k: float(np.mean(v)) for k, v in per_iteration.items()},
        peak_rss_mb=peak_rss_mb(), fsc_resolution_A=result.resolution,
        truth_resolution_A_at_0_5=resolution(frequency, curve, 0.5),
        consistency=[float(c) for c in result.consistency],
        orientation_median_error_deg=float(np.median(errors)),
        orientation_p90_error_deg=float(np.percentile(errors, 90)))
    im = out["initial_model"]
    print(f"initial model: {total:.0f} s total wall, {cpu:.0f} CPU-s (all threads; "
          f"{cpu / 2:.0f} s on 2 dedicated cores at best; load average "
          f"{os.getloadavg()[0]:.1f}); mean per iteration "
          + ", ".join(f"{k} {v:.1f} s" for k, v in im["mean_s_per_iteration"].items())
          + f"; peak RSS {im['peak_rss_mb']:.0f} MB", flush=True)
    print(f"resolution: half-map FSC 0.143 {im['fsc_resolution_A']:.1f} Å, model vs truth "
          f"0.5 {im['truth_resolution_A_at_0_5']:.1f} Å; orientation error median "
          f"{im['orientation_median_error_deg']:.1f} deg (p90 "
          f"{im['orientation_p90_error_deg']:.1f}); restart consistency "
          f"{', '.join(f'{c:.3f}' for c in im['consistency'])}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
