"""Learned picking: speed, memory and accuracy, with the classifier comparison and PickET.

Data: simulated tomograms (`tomopick.core.simulate`, 10 Å voxels, four free
particle classes, gold beads, vesicles with membrane proteins, missing wedge
+-60, CTF, SNR 0.5). The target class is the ribosome (class 4, largest extent
~275 Å); negatives are beads, rods, trimers and membrane proteins.

1. Classifiers (``--part speed``): gradient-boosted trees
   (HistGradientBoosting, the default) against a random forest (100 trees),
   each trained on 10 + 10 examples of a 128 x 256 x 256 phantom and applied
   to another one (same conditions, another seed). Every measurement runs in a fresh
   process and reports wall time and peak resident memory (ru_maxrss, Python
   and libraries included) with ``--threads`` threads (default 2).
2. Examples (``--part examples``): one-to-one F1 on the 128 x 256 x 256
   phantom against the number of examples per side (5, 10, 20, 50), trained
   on a third 128 x 256 x 256 phantom.
3. Crowded (``--part crowded``): a 96 x 160 x 160 phantom of touching
   ribosomes (plus a vesicle and beads), ice thickness gradient and a strong
   structured ("cellular") background; learned picking trained on 10 + 10
   examples of another crowded phantom, next to every PickET workflow
   (3 feature modes x 2 clusterers x 2 localisations) on the same volume, the
   best reported. Both are scored against the ribosomes (radius: half the
   ribosome's extent).

Timings on a shared machine are inflated by the other jobs: compare the two
classifiers' ratios, measured in the same run.

Usage::

    python benchmarks/bench_learned_picking.py [--part all|speed|examples|crowded]
                                               [--threads 2] [--json FILE]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from tomopick.core import simulate  # noqa: E402
from tomopick.core.evaluate import evaluate_picks  # noqa: E402
from tomopick.core.learned import LearnedPicker, pick  # noqa: E402
from tomopick.core.picks import Picks  # noqa: E402

RIBOSOME, TRIMER, ROD, MEMBRANE_PROTEIN = 4, 1, 2, 5
VOXEL = 10.0


def phantom(seed, shape, n_particles, **extra):
    kwargs = dict(shape=shape, voxel_size=VOXEL, n_particles=n_particles, n_vesicles=1,
                  n_gold=6, snr=0.5, seed=seed)
    kwargs.update(extra)
    return simulate.simulate_tomogram(**kwargs)


def examples(ph, n):
    """n ribosomes; n others: beads first (up to a third), then rods, trimers, membrane."""
    p = ph.particles
    positives = p.positions[p.group_ids == RIBOSOME][:n]
    gold = [g["center"] for g in ph.gold][:max(1, n // 3)]
    pools = [list(p.positions[p.group_ids == c]) for c in (ROD, TRIMER, MEMBRANE_PROTEIN)]
    others = list(gold)
    while len(others) < n and any(pools):
        for pool in pools:
            if pool and len(others) < n:
                others.append(pool.pop(0))
    return positives, np.array(others).reshape(-1, 3)


def diameter_of(ph):
    return float(np.median(ph.particle_info["diameter"][ph.particles.group_ids == RIBOSOME]))


def f1(positions, ph, diameter):
    truth = Picks("t", ph.particles.positions[ph.particles.group_ids == RIBOSOME])
    return evaluate_picks(Picks("t", positions), truth, diameter / 2)["one_to_one"]


def save(directory, name, ph):
    np.save(os.path.join(directory, f"{name}.npy"), ph.tomogram)
    np.savez(os.path.join(directory, f"{name}_truth.npz"), positions=ph.particles.positions,
             groups=ph.particles.group_ids, gold=np.array([g["center"] for g in ph.gold]),
             diameter=ph.particle_info["diameter"])


# ------------------------------------------------------------------ workers
def worker(args):
    """One measurement in this (fresh) process; prints one JSON line."""
    directory, task = args.dir, args.worker
    threads = args.threads
    if task == "train":
        with np.load(os.path.join(directory, "examples.npz")) as saved:
            positives, negatives = saved["positives"], saved["negatives"]
        volume = np.load(os.path.join(directory, "train.npy"), mmap_mode="r")
        start = time.perf_counter()
        picker = LearnedPicker.create(args.diameter, VOXEL, classifier=args.classifier, seed=0)
        picker.add_examples(volume, VOXEL, positives, negatives, n_threads=threads)
        picker.fit(threads)
        seconds = time.perf_counter() - start
        picker.save(os.path.join(directory, f"model_{args.classifier}.npz"))
        out = {"train_s": seconds, "fit_s": picker.fit_seconds, "n_voxels": len(picker.training)}
    else:
        picker = LearnedPicker.load(os.path.join(directory, f"model_{args.classifier}.npz"),
                                    n_threads=threads)
        volume = np.load(os.path.join(directory, "test.npy"), mmap_mode="r")
        start = time.perf_counter()
        detection = pick(picker, volume, VOXEL, n_threads=threads)
        seconds = time.perf_counter() - start
        np.save(os.path.join(directory, f"picks_{args.classifier}.npy"), detection.positions)
        out = {"predict_s": seconds, "threshold": detection.threshold,
               "n_picks": len(detection.positions)}
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps(out), flush=True)


def spawn(directory, task, classifier, diameter, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", task, "--dir", directory,
           "--classifier", classifier, "--diameter", str(diameter), "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------- parts
def part_speed(directory, threads):
    train = phantom(12, (128, 256, 256), 180, n_vesicles=2)
    test = phantom(11, (128, 256, 256), 180, n_vesicles=2)
    diameter = diameter_of(train)
    save(directory, "train", train)
    save(directory, "test", test)
    positives, negatives = examples(train, 10)
    np.savez(os.path.join(directory, "examples.npz"), positives=positives, negatives=negatives)
    rows = []
    print(f"classifier  train 10+10 (s)  fit (s)  predict 128x256x256 (s)  peak RSS train/"
          f"predict (GB)  F1 1:1 ({int((test.particles.group_ids == RIBOSOME).sum())} "
          f"ribosomes)")
    for classifier in ("hgb", "rf"):
        tr = spawn(directory, "train", classifier, diameter * VOXEL, threads)
        pr = spawn(directory, "predict", classifier, diameter * VOXEL, threads)
        score = f1(np.load(os.path.join(directory, f"picks_{classifier}.npy")), test, diameter)
        rows.append(dict(classifier=classifier, train=tr, predict=pr, f1=score["f1"],
                         precision=score["precision"], recall=score["recall"]))
        print(f"{classifier:10s}  {tr['train_s']:15.1f}  {tr['fit_s']:7.2f}  "
              f"{pr['predict_s']:23.1f}  {tr['peak_rss_gb']:.2f} / {pr['peak_rss_gb']:.2f}"
              f"{'':14s}  {score['f1']:.3f} (P {score['precision']:.2f} R "
              f"{score['recall']:.2f})", flush=True)
    hgb, rf = rows
    print(f"random forest / gradient boosting: train "
          f"x{rf['train']['train_s'] / hgb['train']['train_s']:.2f}, predict "
          f"x{rf['predict']['predict_s'] / hgb['predict']['predict_s']:.2f}")
    return rows


def part_examples(threads):
    train = phantom(21, (128, 256, 256), 220, n_vesicles=2)
    test = phantom(11, (128, 256, 256), 180, n_vesicles=2)
    diameter = diameter_of(train)
    rows = []
    print("examples per side   F1 1:1   precision  recall   train (s)")
    for n in (5, 10, 20, 50):
        positives, negatives = examples(train, n)
        start = time.perf_counter()
        picker = LearnedPicker.create(diameter * VOXEL, VOXEL, seed=0)
        picker.add_examples(train.tomogram, VOXEL, positives, negatives, n_threads=threads)
        picker.fit(threads)
        seconds = time.perf_counter() - start
        score = f1(pick(picker, test.tomogram, VOXEL, n_threads=threads).positions, test,
                   diameter)
        rows.append(dict(n=n, n_positives=len(positives), n_negatives=len(negatives),
                         train_s=seconds, **{k: score[k] for k in ("f1", "precision",
                                                                   "recall")}))
        print(f"{len(positives):3d} + {len(negatives):3d}           {score['f1']:.3f}    "
              f"{score['precision']:.3f}      {score['recall']:.3f}    {seconds:.1f}",
              flush=True)
    return rows


def part_crowded(threads):
    from tomopick.core import picket as pk
    from tomopick.core.picket import localize as pl

    crowded = dict(n_particles=110, particle_classes=(RIBOSOME,), background_amplitude=0.3,
                   thickness_gradient=True)
    train = phantom(31, (96, 160, 160), **crowded)
    test = phantom(32, (96, 160, 160), **crowded)
    diameter = diameter_of(test)
    truth = test.particles.positions[test.particles.group_ids == RIBOSOME]
    close = np.sort(np.linalg.norm(truth[:, None] - truth[None], axis=2), axis=1)[:, 1]
    print(f"crowded phantom: {len(truth)} ribosomes, extent {diameter:.1f} voxels, "
          f"{np.mean(close < diameter):.0%} with a neighbour closer than one extent")
    positives, negatives = examples(train, 10)
    start = time.perf_counter()
    picker = LearnedPicker.create(diameter * VOXEL, VOXEL, seed=0)
    picker.add_examples(train.tomogram, VOXEL, positives, negatives, n_threads=threads)
    detection = pick(picker.fit(threads), test.tomogram, VOXEL, n_threads=threads)
    learned = f1(detection.positions, test, diameter)
    learned_s = time.perf_counter() - start
    print(f"learned picking (10 + 10): F1 {learned['f1']:.3f} (P {learned['precision']:.2f} "
          f"R {learned['recall']:.2f}), {learned_s:.1f} s train + pick", flush=True)
    rows, best = [], None
    for mode in ("FFT", "Gabor", "intensities"):
        for clusterer in ("KMeans", "GMM"):
            start = time.perf_counter()
            seg = pk.segment_tomogram(test.tomogram, mode, clusterer,
                                      particle_diameter=diameter, n_threads=threads, seed=0)
            for loc in pl.LOCALIZATIONS:
                picks, _ = pl.localize_segmentation(seg, loc, diameter)
                score = f1(picks.positions, test, diameter)
                row = dict(mode=mode, clusterer=clusterer, localization=loc,
                           seconds=time.perf_counter() - start, **{
                               k: score[k] for k in ("f1", "precision", "recall")})
                rows.append(row)
                if best is None or row["f1"] > best["f1"]:
                    best = row
                print(f"  PickET {mode:11s} {clusterer:6s} {loc:21s} F1 {score['f1']:.3f} "
                      f"(P {score['precision']:.2f} R {score['recall']:.2f})", flush=True)
    print(f"crowded: learned picking F1 {learned['f1']:.3f} vs PickET's best "
          f"({best['mode']} {best['clusterer']} {best['localization']}) {best['f1']:.3f}")
    return {"learned": dict(learned, seconds=learned_s), "picket": rows, "picket_best": best}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", default="all", choices=("all", "speed", "examples", "crowded"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--classifier", default="hgb", help=argparse.SUPPRESS)
    ap.add_argument("--diameter", type=float, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-learned-") as directory:
        if args.part in ("all", "speed"):
            results["speed"] = part_speed(directory, args.threads)
    if args.part in ("all", "examples"):
        results["examples"] = part_examples(args.threads)
    if args.part in ("all", "crowded"):
        results["crowded"] = part_crowded(args.threads)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
