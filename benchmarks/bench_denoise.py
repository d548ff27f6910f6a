"""Speed, memory and quality of tomopick's EED and Beltrami flow on a simulated tomogram.

Data: a 512 x 512 x 200 (x, y, z) phantom from `tomopick.core.simulate`
(SNR 0.5, missing wedge, CTF, vesicles and particles), written as float32 MRC.

Measured in one run:

* ``gauss``: one ``scipy.ndimage.gaussian_filter(volume, sigma=1)`` pass on
  the same volume (best of 3; wall and CPU time), the unit of the ratios.
* ``EED``: `denoise_file` with 10 iterations (defaults: sigma 0.5, automatic
  K, time step 0.1); ``BFlow``: 70 iterations of time step 0.15.  Each runs
  in a fresh subprocess (so its peak RSS is its own), reading and writing MRC
  files as the protocol does.  Peak RSS is reported in MiB and as a multiple
  of the float32 volume; the bare interpreter (numpy, scipy, mrcfile and
  tomopick imported) is measured too.
* Ratios ``time / gauss``: on a shared machine wall times fluctuate, so the
  single-thread CPU-time ratio is the robust figure; wall ratios are given
  for the threaded runs.
* Quality: correlation with the clean phantom of the input, EED, BFlow and
  the Gaussians of nominal equal diffusion time (sigma = sqrt(2 t)).

Targets (issue 3): 10 EED iterations <= 40 Gaussian passes; peak RSS <= 4 x
the volume.  With ``--large`` a 1000 x 1000 x 300 noise tomogram is also
denoised (2 EED iterations) to show the peak RSS of a large tomogram.
With ``--check-whole`` the default slab/tile run is compared with a
single-slab, single-tile run (2 EED iterations): they must be identical.

Usage::

    python benchmarks/bench_denoise.py [--quick] [--threads N] [--large]
                                       [--check-whole] [--json FILE]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np, scipy.ndimage, mrcfile
from tomopick.core import denoise


def peak_kib():
    # VmHWM restarts at exec; ru_maxrss would keep the forking parent's size
    with open("/proc/self/status") as fh:
        return int(next(l for l in fh if l.startswith("VmHWM")).split()[1])


args = json.loads(sys.argv[1])
if args.get("baseline"):
    print(json.dumps(dict(maxrss_kib=peak_kib())))
    sys.exit(0)
t0, c0 = time.perf_counter(), time.process_time()
denoise.denoise_file(args["src"], args["dst"], args["method"], n_threads=args["threads"],
                     **args["params"])
print(json.dumps(dict(wall=time.perf_counter() - t0, cpu=time.process_time() - c0,
                      maxrss_kib=peak_kib())))
"""


def run_child(**args):
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT), json.dumps(args)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def gauss_time(volume):
    from scipy import ndimage
    walls, cpus = [], []
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        ndimage.gaussian_filter(volume, 1.0)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def cc(a, b):
    a = a.astype(np.float64) - a.mean(dtype=np.float64)
    b = b.astype(np.float64) - b.mean(dtype=np.float64)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 x 256 x 100 instead")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads of the threaded runs (default 2)")
    parser.add_argument("--large", action="store_true", help="also 1000 x 1000 x 300")
    parser.add_argument("--check-whole", action="store_true",
                        help="compare with a single-slab single-tile computation")
    parser.add_argument("--json", help="write the figures to this file")
    opts = parser.parse_args()

    import mrcfile
    from scipy import ndimage
    from tomopick.core import denoise
    from tomopick.core.simulate import simulate_tomogram

    shape = (100, 256, 256) if opts.quick else (200, 512, 512)
    report = dict(shape_zyx=shape, cpu_count=os.cpu_count(),
                  loadavg=os.getloadavg()[0])
    tmp = tempfile.mkdtemp(prefix="bench_denoise_")
    t0 = time.perf_counter()
    phantom = simulate_tomogram(shape=shape, n_particles=60 if opts.quick else 200,
                                n_vesicles=3 if opts.quick else 8, snr=0.5, seed=0)
    report["simulate_s"] = round(time.perf_counter() - t0, 1)
    noisy, clean = phantom.tomogram, phantom.clean
    src = os.path.join(tmp, "phantom.mrc")
    with mrcfile.new(src, overwrite=True) as mrc:
        mrc.set_data(noisy)
        mrc.voxel_size = phantom.voxel_size
    volume_mib = noisy.nbytes / 2**20
    report["volume_mib"] = round(volume_mib, 1)
    print(f"phantom {shape[::-1]} (x, y, z): {volume_mib:.0f} MiB, simulated in "
          f"{report['simulate_s']} s; load average {report['loadavg']:.1f} on "
          f"{report['cpu_count']} cores")

    g_wall, g_cpu = gauss_time(noisy)
    baseline = run_child(baseline=True)["maxrss_kib"] / 1024
    report.update(gauss_wall_s=round(g_wall, 3), gauss_cpu_s=round(g_cpu, 3),
                  interpreter_rss_mib=round(baseline, 1))
    print(f"gaussian_filter(sigma=1): {g_wall:.3f} s wall, {g_cpu:.3f} s CPU "
          f"(bare interpreter RSS {baseline:.0f} MiB)")

    runs = [("EED", dict(n_iter=10), 1), ("BFlow", dict(n_iter_bflow=70), 1)]
    if opts.threads > 1:
        runs += [("EED", dict(n_iter=10), opts.threads),
                 ("BFlow", dict(n_iter_bflow=70), opts.threads)]
    outputs = {}
    for method, params, threads in runs:
        dst = os.path.join(tmp, f"{method}_{threads}.mrc")
        res = run_child(src=src, dst=dst, method=method, threads=threads, params=params)
        rss = res["maxrss_kib"] / 1024
        key = f"{method}_{threads}t"
        report[key] = dict(wall_s=round(res["wall"], 2), cpu_s=round(res["cpu"], 2),
                           wall_ratio=round(res["wall"] / g_wall, 1),
                           cpu_ratio=round(res["cpu"] / g_cpu, 1),
                           peak_rss_mib=round(rss, 1),
                           peak_rss_volumes=round(rss / volume_mib, 2),
                           above_interpreter_volumes=round((rss - baseline) / volume_mib, 2))
        r = report[key]
        print(f"{method:5s} {threads} thread(s) {params}: {r['wall_s']} s wall = "
              f"{r['wall_ratio']} Gaussian passes; {r['cpu_s']} s CPU = {r['cpu_ratio']} "
              f"passes (CPU); peak RSS {rss:.0f} MiB = {r['peak_rss_volumes']} x volume "
              f"({r['above_interpreter_volumes']} x above the bare interpreter)")
        with mrcfile.open(dst) as mrc:
            outputs.setdefault(method, np.array(mrc.data))

    quality = dict(input=cc(noisy, clean), EED=cc(outputs["EED"], clean),
                   BFlow=cc(outputs["BFlow"], clean),
                   EED_20_iterations=cc(denoise.eed(noisy, n_iter=20, n_threads=opts.threads),
                                        clean))
    for sigma in (1.0, np.sqrt(2.0), 1.5, 2.0, 2.5, 3.0, np.sqrt(21.0)):
        quality[f"gauss_sigma_{sigma:.2f}"] = cc(ndimage.gaussian_filter(noisy, sigma), clean)
    report["quality_cc"] = {k: round(v, 4) for k, v in quality.items()}
    print("correlation with the clean phantom (EED time 1 <-> sigma 1.41, EED 20 iterations"
          " <-> sigma 2, BFlow time 10.5 <-> sigma 4.58):")
    for k, v in report["quality_cc"].items():
        print(f"  {k:20s} {v:.4f}")

    if opts.check_whole:
        a = denoise.eed(noisy, n_iter=2)
        b = denoise.eed(noisy, n_iter=2, slab_size=shape[0], tile=shape[1:])
        report["whole_volume_max_abs_diff"] = float(np.abs(a - b).max())
        print("tiled vs whole-volume, 2 EED iterations: max |diff| =",
              report["whole_volume_max_abs_diff"])
        del a, b

    if opts.large:
        del outputs, noisy, clean, phantom
        big = os.path.join(tmp, "large.mrc")
        big_shape = (300, 1000, 1000)
        with mrcfile.new_mmap(big, shape=big_shape, mrc_mode=2, overwrite=True) as mrc:
            rng = np.random.default_rng(0)
            for z0 in range(0, big_shape[0], 20):
                mrc.data[z0:z0 + 20] = rng.standard_normal((20,) + big_shape[1:],
                                                           dtype=np.float32)
            mrc.voxel_size = 10.0
        res = run_child(src=big, dst=os.path.join(tmp, "large_out.mrc"), method="EED",
                        threads=opts.threads, params=dict(n_iter=2))
        gib = res["maxrss_kib"] / 2**20
        report["large_1000x1000x300_EED2"] = dict(wall_s=round(res["wall"], 1),
                                                  peak_rss_gib=round(gib, 2))
        print(f"1000 x 1000 x 300 (1.1 GiB), 2 EED iterations: {res['wall']:.1f} s wall, "
              f"peak RSS {gib:.2f} GiB")

    for name in os.listdir(tmp):
        os.remove(os.path.join(tmp, name))
    os.rmdir(tmp)
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return report


if __name__ == "__main__":
    main()
