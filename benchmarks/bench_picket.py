"""Speed, memory and accuracy of tomopick's PickET next to PickET's explicit computation.

Data: a simulated tomogram (`tomopick.core.simulate`, default 200 x 512 x 512
voxels of 10 Å, free particles of four classes and sizes, missing wedge +-60,
CTF, thickness gradient, SNR 0.5, one particle per ~30,000 voxels).

For each of the six workflows (feature mode x clusterer) a fresh process runs
stage 1 (segmentation) and stage 2 with both localisations on the whole
tomogram, and reports wall time, peak resident memory (ru_maxrss of that
process, Python and libraries included) and one-to-one / any F1 (radius = half
the median particle diameter).

Peer, same run: PickET's explicit computation -- every n^3 window materialised
(``sliding_window_view`` + copy), features window by window (``numpy.fft.fftn``
+ ``fftshift`` + ``abs`` of all n^3 coefficients; windows @ Gabor filters; the
raw windows), labels from the fitted scikit-learn clusterer's ``predict``, z-slice
by z-slice as PickET's ``s1.py`` -- on a few whole central z-slices (PickET's
unit of work: one slice of every window at a time), with the same fitted
model's sample.  The time per voxel is that of the fastest slice (the
explicit side's best case: on a shared machine the same slice took 1x-3x)
and is extrapolated to the whole tomogram.  Our prediction is timed in the
same process, best of three on a central slab, and in the whole-tomogram run.
Speed-ups are given for the prediction (the part that scales with the voxels,
and the part the explicit computation replaces) and for the whole stage 1,
where the explicit side is charged the same preprocessing and fit as ours
plus its per-voxel prediction.  The labels of both computations on the
subvolume are compared (KMeans: identical by construction; GMM: our mixture
lives on principal components, PickET's on all features).

With ``--original [DIR]`` the ORIGINAL PickET (isblab/pickET, its own code
from a checkout DIR, or cloned from GitHub into a temporary folder when DIR is
not given) runs side by side with tomopick on the 128 x 256 x 256 distractor
lamella of ``--lamellae`` (see `original_vs_tomopick`): its stage 1 (``s1.py``:
feature extraction + clustering, the six feature x clusterer combinations) and
its stage 2 (``s2.py``: connected components and watershed), then tomopick's
same twelve workflows, each alone and sharing stage 1; per workflow the
original's and tomopick's seconds, their ratio and both F1 against the truth.
The original is run as its users run it: fitting and picking slabs given
(those tomopick finds), 100,000 fitting neighbourhoods, particle cluster 1
(its s1 makes the larger cluster 0, background), watershed min_distance 15
(its example; ``--min-distance``).  Its seconds are its own: stage 1 from its
metadata (preprocessing + features + fit + prediction, per clusterer), stage 2
timed around its ``s2.main``.  tomopick alone = `segment_tomogram` + one
localisation in a fresh process per workflow; sharing = `segment_workflows`
amortised (shared preparation / 12 + segmentation / 2 + localisation); a
workflow with both localisations = its stage 1 once + both stage 2 (the
original: its s1 + its two s2 runs), the issue's measure of speed.  Both sides
are timed warm (`_warm_up`): the original's modules are imported before its
``main`` is timed and one process runs all its workflows, so tomopick's fresh
worker processes first run their workflow once on a small volume.

With ``--accuracy`` the speed part is skipped and the six workflows x two
localisations are scored instead on smaller phantoms (96 x 160 x 160) from
noise-free to SNR 0.1, plus a crowded one and one with vesicles (membrane
proteins count as particles) and gold beads.  With ``--lamellae`` they are
scored on the three 128 x 256 x 256 lamellae of issue 19 (`LAMELLAE`:
ribosome-like particles of 16 voxels, wedge +-60, SNR 0.15; sparse: 60
particles; distractors: 110 + 16 membrane proteins on 2 vesicles, 6 gold
beads; crowded: 260 + 16, centres down to 8 voxels, gold, vesicles and an
intensity drift across x and z), defaults and the diameter only, one-to-one F1
within 6 voxels (crowded) or a particle radius; per lamella the best workflow's
F1 is also given against the free particles alone (the membrane proteins,
half the diameter given, as distractors).

Usage::

    python benchmarks/bench_picket.py [--quick] [--threads 2] [--snr 0.5] [--json FILE]
    python benchmarks/bench_picket.py --accuracy [--json FILE]
    python benchmarks/bench_picket.py --lamellae [--json FILE]
    python benchmarks/bench_picket.py --original [DIR] [--json FILE]
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

from tomopick.core import picket as pk  # noqa: E402
from tomopick.core.picket import features as pf  # noqa: E402
from tomopick.core.picket import localize as pl  # noqa: E402
from tomopick.core.picket import segment as stage1  # noqa: E402
from tomopick.core.evaluate import evaluate_picks  # noqa: E402
from tomopick.core.picks import Picks  # noqa: E402

WORKFLOWS = [(m, c) for m in ("FFT", "Gabor", "intensities") for c in ("KMeans", "GMM")]
N = 5
OURS_SLICES = 48
OURS_REPEATS = 3


def make_phantom(shape, snr, seed, directory, distractors=False):
    from tomopick.core.simulate import simulate_tomogram
    n_particles = max(10, int(np.prod(shape) / 30000))
    t = time.perf_counter()
    if distractors:
        ph = simulate_tomogram(seed=seed + 1, **LAMELLA, **LAMELLAE[1][1])
    else:
        ph = simulate_tomogram(shape=shape, n_particles=n_particles, n_vesicles=0, snr=snr,
                               seed=seed, keep_clean=False)
    np.save(os.path.join(directory, "tomogram.npy"), ph.tomogram)
    np.save(os.path.join(directory, "truth.npy"), ph.particles.positions)
    diameter = float(np.median(ph.particle_info["diameter"]))
    return {"n_particles": len(ph.particles), "diameter": diameter,
            "simulate_s": time.perf_counter() - t}


# ----------------------------------------------------------------- one workflow

def run_workflow(directory, mode, clusterer, diameter, threads, fit_n):
    """Stage 1 + both stage-2 localisations in THIS process; returns a dict."""
    tomo = np.load(os.path.join(directory, "tomogram.npy"), mmap_mode="r")
    truth = Picks("phantom", np.load(os.path.join(directory, "truth.npy")))
    t0 = time.perf_counter()
    fit = {"max_fit_neighborhoods": fit_n} if fit_n else {}     # else tomopick's default
    seg = pk.segment_tomogram(tomo, mode, clusterer, particle_diameter=diameter,
                              n_threads=threads, **fit)
    out = {"mode": mode, "clusterer": clusterer, "s1_s": time.perf_counter() - t0,
           "fit_range": seg.fit_range, "pick_range": seg.pick_range,
           "particle_cluster": seg.particle_cluster,
           "cluster_rule": seg.info.get("cluster_choice", {}).get("rule"),
           "particle_fraction": seg.info["particle_fraction"],
           "pca_components": seg.model.info.get("pca_components"),
           "timings": seg.info["timings"],
           "n_predicted": seg.info["n_predicted"],
           "predict_us_per_voxel": seg.info["timings"]["predict_s"] / seg.info["n_predicted"] * 1e6}
    for loc in pl.LOCALIZATIONS:
        t = time.perf_counter()
        picks, _ = pl.localize_segmentation(seg, loc, diameter, tomo_id="phantom")
        dt = time.perf_counter() - t
        r = evaluate_picks(picks, truth, diameter / 2)
        key = "cc" if loc.startswith("connected") else "ws"
        out[key] = {"s2_s": dt, "n": len(picks), "f1_1to1": r["one_to_one"]["f1"],
                    "precision_1to1": r["one_to_one"]["precision"],
                    "recall_1to1": r["one_to_one"]["recall"], "f1_any": r["any"]["f1"]}
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return out


def run_shared(directory, diameter, threads, fit_n):
    """All six workflows x both localisations in THIS process, sharing stage-1 work.

    `picket.segment_workflows` preprocesses, finds the z ranges and samples the
    fitting neighbourhoods once; each segmentation serves both localisations.
    """
    tomo = np.load(os.path.join(directory, "tomogram.npy"), mmap_mode="r")
    truth = Picks("phantom", np.load(os.path.join(directory, "truth.npy")))
    t0 = time.perf_counter()
    f1 = {}
    for (mode, clusterer), seg in pk.segment_workflows(
            tomo, WORKFLOWS, particle_diameter=diameter, n_threads=threads,
            **({"max_fit_neighborhoods": fit_n} if fit_n else {})):
        for loc in pl.LOCALIZATIONS:
            picks, _ = pk.localize_segmentation(seg, loc, diameter, tomo_id="phantom")
            f1[f"{mode} {clusterer} {loc}"] = evaluate_picks(picks, truth,
                                                             diameter / 2)["one_to_one"]["f1"]
    return {"total_s": time.perf_counter() - t0, "f1": f1,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


# ----------------------------------------------------------------- PickET explicit

def explicit_labels(normalized, model, full_model):
    """PickET's S1 prediction on a (sub)volume: windows, features, predict, slice by slice.

    ``full_model`` is the scikit-learn clusterer fitted on PickET's own features
    (all n^3 FFT magnitudes; Gabor / intensities as ours).  Returns the labels
    and the time of every slice.
    """
    n, h = N, N // 2
    padded = np.pad(normalized, h, mode="symmetric")
    labels = np.empty(normalized.shape, np.uint8)
    slice_s = []
    for z in range(normalized.shape[0]):
        t = time.perf_counter()
        slab = padded[z:z + n]
        windows = np.lib.stride_tricks.sliding_window_view(slab, (n, n, n))
        windows = windows.reshape(-1, n, n, n).copy()          # PickET's neighbourhoods
        if model.mode == "FFT":
            spectra = np.fft.fftshift(np.fft.fftn(windows, axes=(1, 2, 3)), axes=(1, 2, 3))
            features = np.abs(spectra).reshape(len(windows), -1)
        elif model.mode == "Gabor":
            features = windows.reshape(len(windows), -1) @ model.gabor_filters.T
        else:
            features = windows.reshape(len(windows), -1)
        labels[z] = full_model.predict(features.astype(np.float64)).reshape(labels.shape[1:])
        slice_s.append(time.perf_counter() - t)
    return labels, slice_s


def explicit_peer(directory, mode, clusterer, threads, fit_n, sub_shape):
    """Time PickET's explicit S1 prediction on a central subvolume (per voxel)."""
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture
    fit_n = fit_n or 100000
    tomo = np.load(os.path.join(directory, "tomogram.npy"), mmap_mode="r")
    normalized = stage1.preprocess(tomo, n_threads=threads)
    fit, _ = pk.lamella_z_ranges(normalized)
    rng = np.random.default_rng(0)
    nz, ny, nx = normalized.shape
    centres = np.column_stack([rng.integers(fit[0], fit[1] + 1, fit_n),
                               rng.integers(0, ny, fit_n), rng.integers(0, nx, fit_n)])
    windows = pf._sample_windows(normalized, centres, N)
    model = stage1.fit_model(windows, N, mode, clusterer, seed=0)
    if mode == "FFT":
        w = windows.reshape(-1, N, N, N)
        feats = np.abs(np.fft.fftshift(np.fft.fftn(w, axes=(1, 2, 3)), axes=(1, 2, 3)))
        feats = feats.reshape(len(w), -1)
    else:
        feats = pf.window_features(windows, N, mode, model.gabor_filters)
    fit_agreement = None
    if clusterer == "KMeans":
        # prediction equivalence: PickET's nearest-centre rule on all n^3
        # features with OUR centres (a half-space coefficient stands for itself
        # and its conjugate partner, which has the same magnitude)
        full_model = KMeans(2, random_state=0, n_init=1).fit(feats[:2000].astype(np.float64))
        centers = model.info["centers"] / model.feature_scale
        if mode == "FFT":
            freqs, _ = pf._fft_half_indices(N)
            full = np.zeros((2, N, N, N))
            for j, f in enumerate(freqs):
                full[(slice(None),) + tuple(f % N)] = centers[:, j]
                full[(slice(None),) + tuple(-f % N)] = centers[:, j]
            # the peer's features are fftshift-ed
            centers = np.fft.fftshift(full, axes=(1, 2, 3)).reshape(2, -1)
        full_model.cluster_centers_ = centers.astype(np.float64)
        # and the fit itself: PickET's KMeans on all features, same seed
        refit = KMeans(2, random_state=0, n_init=1).fit(feats.astype(np.float64))
        same = refit.predict(feats.astype(np.float64)) == model.predict_features(
            pf.window_features(windows, N, mode, model.gabor_filters))
        fit_agreement = float(max(same.mean(), 1 - same.mean()))
    else:
        full_model = GaussianMixture(2, random_state=0).fit(feats.astype(np.float64))
    sz, sy, sx = sub_shape
    sy, sx = sy or ny, sx or nx
    z0, y0, x0 = (nz - sz) // 2, (ny - sy) // 2, (nx - sx) // 2
    sub = np.ascontiguousarray(normalized[z0:z0 + sz, y0:y0 + sy, x0:x0 + sx])
    ref, slice_s = explicit_labels(sub, model, full_model)
    # ours in the same process, best of OURS_REPEATS on a central slab of
    # OURS_SLICES whole slices, through the same chunked prediction as the
    # whole-tomogram run.  Not interleaved with the explicit slices: measured
    # here, the explicit computation's large allocations ran up to 3x slower
    # right after ours had churned memory, which would flatter us.
    whole = np.zeros(normalized.shape, np.float32)
    depth = min(OURS_SLICES, nz)
    lo = (nz - depth) // 2
    ours_s = []
    for _ in range(OURS_REPEATS):
        t = time.perf_counter()
        stage1.predict_margin(normalized, model, (lo, lo + depth - 1), whole, n_threads=threads)
        ours_s.append(time.perf_counter() - t)
    del whole
    # our labels of the same subvolume, for the agreement
    margin = np.zeros(sub.shape, np.float32)
    stage1.predict_margin(sub, model, (0, sz - 1), margin, n_threads=threads)
    ours = (margin > 0).astype(np.uint8)
    agreement = float(max((ours == ref).mean(), (ours != ref).mean()))
    return {"explicit_us_per_voxel": min(slice_s) / (sy * sx) * 1e6,
            "explicit_slice_s": slice_s,
            "ours_best_us_per_voxel": min(ours_s) / (depth * ny * nx) * 1e6,
            "ours_s": ours_s,
            "label_agreement": agreement, "fit_agreement": fit_agreement,
            "sub_shape": [sz, sy, sx]}


# ----------------------------------------------------------------- original PickET

PICKET_GIT = "https://github.com/isblab/pickET"
# the original's own parameters (its example/s1_params_example.yaml), by our mode names
ORIGINAL_MODES = {
    "FFT": {"mode": "ffts", "n_fft_subsets": 64},
    "Gabor": {"mode": "gabor", "num_neighborhoods_subsets": 5, "num_sinusoids": 10,
              "num_parallel_filters": 8, "num_output_features": 64},
    "intensities": {"mode": "intensities"},
}
ORIGINAL_CLUSTERERS = {"KMeans": "kmeans", "GMM": "gmm"}
ORIGINAL_LOCALIZATIONS = {"connected components": "connected_component_labeling",
                          "watershed": "watershed_segmentation"}
# watershed marker spacing of the original's example/s2_params_example.yaml
ORIGINAL_MIN_DISTANCE = 15


def original_checkout(path, workdir):
    """Folder of an original PickET checkout (holding src/picket); cloned when ``path`` is None.

    Raises
    ------
    SystemExit
        With the reason, when ``path`` is not a checkout or the clone fails.
    """
    if path is None:
        path = os.path.join(workdir, "pickET")
        print(f"no checkout given: cloning {PICKET_GIT} into {path}", flush=True)
        proc = subprocess.run(["git", "clone", "--depth", "1", PICKET_GIT, path],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"cannot clone the original PickET from {PICKET_GIT} "
                             f"(git said: {proc.stderr.strip()[-500:]}); give a checkout: "
                             "--original DIR")
    if not os.path.isfile(os.path.join(path, "src", "picket", "s1.py")):
        raise SystemExit(f"{path} is not a checkout of the original PickET "
                         "(no src/picket/s1.py)")
    return os.path.abspath(path)


def _cpu_only_shims():
    """Make the original's imports resolve on a CPU-only machine (sys.modules entries).

    - ``cupy``: its array functions forward to numpy (``asnumpy`` = ``np.asarray``);
      ``cupy.fft`` forwards to ``scipy.fft``, which keeps float32 input in single
      precision as cupy does on the GPU (numpy.fft would promote to complex128:
      slower, which would flatter tomopick);
    - ``cupyx.scipy.ndimage``: ``scipy.ndimage`` (same gaussian_filter, 'reflect');
    - ``napari`` and ``ndjson``: imported by its utils module for a viewer and a
      deprecated writer, never called here; stand-ins that fail if used.
    """
    import types
    import scipy.fft
    import scipy.ndimage

    cupy = types.ModuleType("cupy")
    cupy.__getattr__ = lambda name: getattr(np, name)
    cupy.fft = scipy.fft
    cupy.asnumpy = np.asarray
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy.ndimage = scipy.ndimage
    sys.modules.update({"cupy": cupy, "cupy.fft": scipy.fft, "cupyx": cupyx,
                        "cupyx.scipy": cupyx.scipy, "cupyx.scipy.ndimage": scipy.ndimage})
    for name in ("napari", "ndjson"):
        if name not in sys.modules:
            stub = types.ModuleType(name)

            def unavailable(attr, name=name):
                raise RuntimeError(f"{name}.{attr} is not available in this benchmark")
            stub.__getattr__ = unavailable
            sys.modules[name] = stub


def original_worker(directory, source, ranges, min_distance):
    """The original PickET's s1 and s2, unmodified, on the phantom; in THIS process.

    ``ranges`` = (fit lo, fit hi, pick lo, pick hi), inclusive slices: the
    fitting and picking slabs the original is told to use (as its users set
    them in its yaml).  s1 runs once per feature mode (fitting both clusterers
    on the same features, as the original does); its per-clusterer stage-1
    seconds are its own metadata (``time_taken_for_s1``: preprocessing + feature
    extraction + fit + prediction).  s2 runs once per segmentation and
    localisation and is timed around ``s2.main``.  Positions are the
    original's integer centroids (z, y, x), returned as (x, y, z).
    """
    import h5py
    import mrcfile
    import yaml

    _cpu_only_shims()
    sys.path.insert(0, os.path.join(source, "src"))
    from picket import s1, s2

    fit_lo, fit_hi, pick_lo, pick_hi = ranges
    tomo_path = os.path.join(directory, "tomogram.mrc")
    with mrcfile.new(tomo_path, overwrite=True) as mrc:
        mrc.set_data(np.load(os.path.join(directory, "tomogram.npy")).astype(np.float32))
        mrc.voxel_size = LAMELLA["voxel_size"]
    out_dir = os.path.join(directory, "original")
    seg_dir = os.path.join(out_dir, "bench")
    res = {"s1_wall_s": {}, "s1_s": {}, "s2_s": {}, "positions": {}, "n": {}}

    def run(module, params):
        path = os.path.join(directory, "params.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(params, f)
        argv, sys.argv = sys.argv, [module.__name__, path]
        try:
            t = time.perf_counter()
            module.main()
            return time.perf_counter() - t
        finally:
            sys.argv = argv

    for mode, fex in ORIGINAL_MODES.items():
        np.random.seed(0)               # its fitting sample (np.random.choice)
        res["s1_wall_s"][mode] = run(s1, {
            "dataset_name": "bench", "output_dir": out_dir, "neighborhood_size": N,
            "max_num_neighborhoods_for_fitting": 100000,
            # s1 slices tomogram[lb:ub] (upper bound exclusive)
            "inputs": [{"tomogram": tomo_path, "lower_z-slice_limit": fit_lo,
                        "upper_z-slice_limit": fit_hi + 1}],
            "feature_extraction_params": [fex],
            "clustering_methods": list(ORIGINAL_CLUSTERERS.values())})
    for mode, fex in ORIGINAL_MODES.items():
        for clusterer, cl in ORIGINAL_CLUSTERERS.items():
            seg = os.path.join(seg_dir, f"segmentation_0_{fex['mode']}_{cl}.h5")
            with h5py.File(seg, "r") as f:
                res["s1_s"][f"{mode} {clusterer}"] = float(
                    f["segmentations"].attrs["time_taken_for_s1"])
            for loc, pex in ORIGINAL_LOCALIZATIONS.items():
                key = f"{mode} {clusterer} {loc}"
                pex_params = {"mode": pex}
                if pex == "watershed_segmentation":
                    pex_params["min_distance"] = int(min_distance)
                # particle cluster 1: s1 makes the larger cluster 0 (background)
                res["s2_s"][key] = run(s2, {
                    "dataset_name": "bench", "output_dir": out_dir,
                    "inputs": [{"segmentation": seg, "particle_cluster_id": 1,
                                "lower_z-slice_limit": pick_lo,
                                "upper_z-slice_limit": pick_hi}],
                    "particle_extraction_params": [pex_params]})
                name = f"predicted_centroids_0_{fex['mode']}_{cl}_{pex}.yaml"
                with open(os.path.join(seg_dir, "predicted_particles", name)) as f:
                    coords = yaml.safe_load(f)["Predicted_Particle_Centroid_Coordinates"]
                res["positions"][key] = [[c["x"], c["y"], c["z"]] for c in coords]
                res["n"][key] = len(coords)
    return res


def tomopick_shared_timed(directory, diameter, threads):
    """tomopick's twelve workflows sharing stage 1, each piece timed; in THIS process.

    Per workflow (mode, clusterer, localisation) the amortised seconds: the
    shared preparation / 12 + its segmentation / 2 + its localisation.
    """
    tomo = np.load(os.path.join(directory, "tomogram.npy"), mmap_mode="r")
    truth = Picks("phantom", np.load(os.path.join(directory, "truth.npy")))
    t0 = time.perf_counter()
    seconds, f1, n = {}, {}, {}
    prep_s = 0.0
    clock = time.perf_counter()
    for (mode, clusterer), seg in pk.segment_workflows(
            tomo, WORKFLOWS, particle_diameter=diameter, n_threads=threads):
        now = time.perf_counter()
        t = seg.info["timings"]
        # the shared preparation is timed inside the first segmentation's wait
        prep_s = prep_s or sum(t.get(k, 0.0) for k in ("preprocess_s", "sample_s"))
        seg_s = now - clock - (prep_s if not seconds else 0.0)
        for loc in pl.LOCALIZATIONS:
            t1 = time.perf_counter()
            picks, _ = pk.localize_segmentation(seg, loc, diameter, tomo_id="phantom")
            key = f"{mode} {clusterer} {loc}"
            seconds[key] = [seg_s, time.perf_counter() - t1]
            f1[key] = evaluate_picks(picks, truth, diameter / 2)["one_to_one"]["f1"]
            n[key] = len(picks)
        del seg
        clock = time.perf_counter()
    total = time.perf_counter() - t0
    per = {k: prep_s / len(seconds) + s / 2 + loc_s for k, (s, loc_s) in seconds.items()}
    return {"total_s": total, "prep_s": prep_s, "per_workflow_s": per, "f1": f1, "n": n,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def original_vs_tomopick(source, threads, seed, min_distance, json_path=None, repeats=3):
    """The original PickET and tomopick side by side on the distractor lamella.

    Each side in its own process(es), one after the other: the original (s1 of
    the three feature modes, s2 of the six segmentations x two localisations),
    then tomopick's six workflows each alone (stage 1 + both localisations in
    a fresh process, ``repeats`` times, the run of median total kept; per
    localisation the time is stage 1 + that localisation, i.e. `picket_pick`
    alone), then the twelve sharing stage 1.
    """
    from tomopick.core.simulate import simulate_tomogram
    report = {"threads": threads, "cpu_count": os.cpu_count(), "min_distance": min_distance}
    with tempfile.TemporaryDirectory() as tmp:
        source = original_checkout(source, tmp)
        ph = simulate_tomogram(seed=seed + 1, **LAMELLA, **LAMELLAE[1][1])
        diameter = float(np.median(ph.particle_info["diameter"]))
        np.save(os.path.join(tmp, "tomogram.npy"), ph.tomogram.astype(np.float32))
        np.save(os.path.join(tmp, "truth.npy"), ph.particles.positions)
        truth = Picks("phantom", ph.particles.positions)
        # the slabs the original is told to use: those tomopick finds itself
        fit, pick = pk.lamella_z_ranges(stage1.preprocess(ph.tomogram, n_threads=threads),
                                        margin=int(np.ceil(diameter / 2)))
        del ph
        print(f"distractor lamella {LAMELLA['shape']}, {len(truth)} particles, diameter "
              f"{diameter:.1f} voxels, SNR {LAMELLA['snr']}; fit slices {fit}, pick slices "
              f"{pick}; original PickET from {source}; {threads} threads, "
              f"{os.cpu_count()} CPUs", flush=True)
        t = time.perf_counter()
        orig = spawn(["--worker", "original", "--dir", tmp, "--source", source,
                      "--ranges"] + [str(v) for v in fit + pick]
                     + ["--min-distance", str(min_distance)])
        print(f"original PickET: {time.perf_counter() - t:.0f} s (s1 per feature mode: "
              + ", ".join(f"{m} {s:.0f} s" for m, s in orig["s1_wall_s"].items())
              + f"), peak RSS {orig['peak_rss_gb']:.2f} GB", flush=True)
        alone = {}
        for mode, clusterer in WORKFLOWS:
            # the run of median total time of `repeats` fresh processes: a
            # second-long run varies by +-30 % on a shared virtual machine
            runs = [spawn(["--worker", "workflow", "--mode", mode, "--clusterer", clusterer,
                           "--diameter", str(diameter), "--dir", tmp, "--threads",
                           str(threads)]) for _ in range(max(1, repeats))]
            runs.sort(key=lambda r: r["s1_s"] + r["cc"]["s2_s"] + r["ws"]["s2_s"])
            alone[(mode, clusterer)] = runs[len(runs) // 2]
        shared = spawn(["--worker", "shared-timed", "--dir", tmp, "--diameter", str(diameter),
                        "--threads", str(threads)])
    rows = []
    for mode, clusterer in WORKFLOWS:
        a = alone[(mode, clusterer)]
        for loc in pl.LOCALIZATIONS:
            key = f"{mode} {clusterer} {loc}"
            o_s = orig["s1_s"][f"{mode} {clusterer}"] + orig["s2_s"][key]
            o_picks = Picks("phantom", np.asarray(orig["positions"][key], float).reshape(-1, 3))
            short = "cc" if loc.startswith("connected") else "ws"
            t_alone = a["s1_s"] + a[short]["s2_s"]
            t_shared = shared["per_workflow_s"][key]
            # the workflow with both localisations: stage 1 once, then each (what
            # the target counts; the original's s1 + its two s2 runs)
            o_both = orig["s1_s"][f"{mode} {clusterer}"] + sum(
                orig["s2_s"][f"{mode} {clusterer} {other}"] for other in pl.LOCALIZATIONS)
            t_both = a["s1_s"] + a["cc"]["s2_s"] + a["ws"]["s2_s"]
            rows.append({"workflow": key, "original_s": o_s, "tomopick_s": t_alone,
                         "original_both_s": o_both, "tomopick_both_s": t_both,
                         "ratio_both": o_both / t_both,
                         "ratio": o_s / t_alone, "tomopick_shared_s": t_shared,
                         "ratio_shared": o_s / t_shared,
                         "f1_original": evaluate_picks(o_picks, truth,
                                                       diameter / 2)["one_to_one"]["f1"],
                         "f1_tomopick": a[short]["f1_1to1"], "f1_shared": shared["f1"][key],
                         "n_original": orig["n"][key], "n_tomopick": a[short]["n"]})
    print(f"\n{'workflow':36s} {'orig s':>7s} {'tp s':>6s} {'ratio':>6s} {'shared s':>8s} "
          f"{'ratio':>6s}   {'F1 orig':>7s} {'F1 tp':>6s}  {'n orig':>6s} {'n tp':>5s}")
    for r in rows:
        print(f"{r['workflow']:36s} {r['original_s']:7.1f} {r['tomopick_s']:6.2f} "
              f"{r['ratio']:5.1f}x {r['tomopick_shared_s']:8.2f} {r['ratio_shared']:5.1f}x   "
              f"{r['f1_original']:7.3f} {r['f1_tomopick']:6.3f}  {r['n_original']:6d} "
              f"{r['n_tomopick']:5d}")
    # totals: every workflow run on its own, and each side's own sharing (the
    # original computes features once per mode for both clusterers; s1 wall)
    o_alone = sum(r["original_s"] for r in rows)
    o_shared = sum(orig["s1_wall_s"].values()) + sum(orig["s2_s"].values())
    t_alone = sum(r["tomopick_s"] for r in rows)
    print(f"{'total, each workflow alone':36s} {o_alone:7.0f} {t_alone:6.1f} "
          f"{o_alone / t_alone:5.1f}x")
    print(f"{'total, each side sharing':36s} {o_shared:7.0f} {shared['total_s']:6.1f} "
          f"{o_shared / shared['total_s']:5.1f}x   (original: s1 once per feature mode)")
    print(f"\n{'workflow, both localisations':36s} {'orig s':>7s} {'tp s':>6s} {'ratio':>6s}")
    for r in rows[::2]:
        name = r["workflow"].rsplit(" ", 2)[0]
        print(f"{name:36s} {r['original_both_s']:7.1f} {r['tomopick_both_s']:6.2f} "
              f"{r['ratio_both']:5.1f}x")
    print(f"slowest per-workflow speed-up: {min(r['ratio_both'] for r in rows):.1f}x with "
          f"both localisations (target >= 20x); {min(r['ratio'] for r in rows):.1f}x for one "
          f"localisation alone, {min(r['ratio_shared'] for r in rows):.1f}x sharing stage 1")
    peak_alone = max(a["peak_rss_gb"] for a in alone.values())
    print(f"peak RSS: original {orig['peak_rss_gb']:.2f} GB, tomopick {peak_alone:.2f} GB "
          f"(each alone), {shared['peak_rss_gb']:.2f} GB (sharing); times on a shared, "
          "loaded machine are inflated alike on both sides, the ratios hold")
    report.update(rows=rows, original={k: v for k, v in orig.items() if k != "positions"},
                  alone={f"{m} {c}": v for (m, c), v in alone.items()}, shared=shared,
                  diameter=diameter, fit_range=fit, pick_range=pick)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1, default=float)
    return report


# ----------------------------------------------------------------- driver

def _warm_up(workflows=WORKFLOWS):
    """Run tomopick's workflows once on a small volume, untimed, in this process.

    The original is timed warm: its modules are imported before its ``main``
    is timed, and one process runs its three feature modes and all its stage-2
    runs, so only its first run pays the first-use costs (OpenMP and FFT set-up,
    thread pool discovery: ~0.1-0.3 s).  tomopick's timed workers are fresh
    processes: they pay those costs here, on a 24 x 48 x 48 volume, instead
    (the first-use import of skimage.segmentation alone is 0.2 s).
    """
    rng = np.random.default_rng(0)
    z, y, x = np.indices((24, 48, 48))
    volume = rng.normal(0, 0.5, z.shape).astype(np.float32)
    for cx, cy in [(12, 12), (34, 12), (12, 34), (34, 34)]:
        volume[(x - cx) ** 2 + (y - cy) ** 2 + (z - 12) ** 2 <= 36] -= 1.0
    # two overlapping balls: the watershed floods (its first use imports
    # skimage.segmentation) and peak_local_max spaces the markers, which the
    # four lone balls above never need
    pair = ((x - 18) ** 2 + (y - 24) ** 2 + (z - 12) ** 2 <= 36) | \
           ((x - 28) ** 2 + (y - 24) ** 2 + (z - 12) ** 2 <= 36)
    assert pl.split_watershed(pair, min_distance=3).max() == 2
    for mode, clusterer in workflows:
        seg = pk.segment_tomogram(volume, mode, clusterer, particle_diameter=12,
                                  max_fit_neighborhoods=2000)
        for loc in pl.LOCALIZATIONS:
            pl.localize_segmentation(seg, loc, 12)


def worker(args):
    if args.worker in ("workflow", "shared", "shared-timed"):
        _warm_up([(args.mode, args.clusterer)] if args.worker == "workflow" else WORKFLOWS)
    if args.worker == "workflow":
        res = run_workflow(args.dir, args.mode, args.clusterer, args.diameter, args.threads,
                           args.fit_n)
    elif args.worker == "shared":
        res = run_shared(args.dir, args.diameter, args.threads, args.fit_n)
    elif args.worker == "shared-timed":
        res = tomopick_shared_timed(args.dir, args.diameter, args.threads)
    elif args.worker == "original":
        res = original_worker(args.dir, args.source, args.ranges, args.min_distance)
        res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    else:
        res = explicit_peer(args.dir, args.mode, args.clusterer, args.threads, args.fit_n,
                            tuple(args.sub_shape))
        res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print("RESULT " + json.dumps(res, default=float))


def spawn(argv):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)] + argv,
                          capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"worker {argv} failed:\n{proc.stderr[-3000:]}")


ACCURACY_CASES = [
    ("clean", dict(snr=None)),
    ("SNR 1", dict(snr=1.0)),
    ("SNR 0.5", dict(snr=0.5)),
    ("SNR 0.2", dict(snr=0.2)),
    ("SNR 0.1", dict(snr=0.1)),
    ("crowded, SNR 0.5", dict(snr=0.5, n_particles=120)),
    ("vesicles + gold, SNR 0.5", dict(snr=0.5, n_vesicles=2, proteins_per_vesicle=10,
                                      n_gold=6)),
]


LAMELLA = dict(shape=(128, 256, 256), voxel_size=18.0, particle_classes=(4,), snr=0.15,
               keep_clean=False)
LAMELLAE = [
    ("sparse", dict(n_particles=60, n_vesicles=0, n_gold=0), None),
    ("distractors", dict(n_particles=110, n_vesicles=2, proteins_per_vesicle=8, n_gold=6),
     None),
    ("crowded", dict(n_particles=260, n_vesicles=2, proteins_per_vesicle=8, n_gold=6,
                     intensity_drift=1.5), 6.0),
]


def lamellae(threads, seed):
    """One-to-one F1 of the 12 workflows on the sparse, distractor and crowded lamellae."""
    from tomopick.core.simulate import simulate_tomogram
    rows = []
    for name, extra, radius in LAMELLAE:
        ph = simulate_tomogram(seed=seed + 1, **LAMELLA, **extra)
        diameter = float(np.median(ph.particle_info["diameter"]))
        radius = radius or diameter / 2
        # the free particles alone: the picking target of the diameter given
        # (membrane proteins are half that size, an eighth of the volume)
        free = ph.particles.subset(np.asarray(ph.particle_info["kind"]) == "free")
        print(f"{name}: {len(ph.particles)} particles ({len(free)} free), diameter "
              f"{diameter:.1f} voxels, F1 radius {radius:.1f}", flush=True)
        for mode, clusterer in WORKFLOWS:
            t = time.perf_counter()
            seg = pk.segment_tomogram(ph.tomogram, mode, clusterer, particle_diameter=diameter,
                                      n_threads=threads, seed=seed)
            s1 = time.perf_counter() - t
            for loc in pl.LOCALIZATIONS:
                picks, obj = pl.localize_segmentation(seg, loc, diameter, tomo_id="phantom")
                r = evaluate_picks(picks, ph.particles, radius)["one_to_one"]
                f1_free = evaluate_picks(picks, free, radius)["one_to_one"]["f1"]
                rows.append({"phantom": name, "mode": mode, "clusterer": clusterer,
                             "localization": loc, "n_true": len(ph.particles),
                             "n_pred": len(picks), "f1_1to1": r["f1"], "f1_free": f1_free,
                             "precision": r["precision"], "recall": r["recall"],
                             "min_distance": obj["min_distance"],
                             "particle_fraction": seg.info["particle_fraction"], "s1_s": s1})
                rows[-1].update({k: obj[k] for k in ("n_flat", "n_sheets", "n_membrane",
                                                     "n_off_membrane", "n_split")})
                print(f"  {mode:11s} {clusterer:6s} {loc:20s} n={len(picks):4d} "
                      f"P={r['precision']:.2f} R={r['recall']:.2f} F1={r['f1']:.3f} "
                      f"(particle class {seg.info['particle_fraction']:.2f}; dropped flat "
                      f"{obj['n_flat']}, sheets {obj['n_sheets']}, membrane pieces "
                      f"{obj['n_membrane']}; off membranes {obj['n_off_membrane']}; split "
                      f"{obj['n_split']})",
                      flush=True)
    print(f"\n{'workflow':40s} " + " ".join(f"{n:>11s}" for n, _, _ in LAMELLAE))
    for mode, clusterer in WORKFLOWS:
        for loc in pl.LOCALIZATIONS:
            f1 = [next(r["f1_1to1"] for r in rows if r["phantom"] == n and r["mode"] == mode
                       and r["clusterer"] == clusterer and r["localization"] == loc)
                  for n, _, _ in LAMELLAE]
            print(f"{mode + ' ' + clusterer + ' ' + loc:40s} "
                  + " ".join(f"{v:11.3f}" for v in f1))
    for n, _, _ in LAMELLAE:
        best = max((r for r in rows if r["phantom"] == n), key=lambda r: r["f1_1to1"])
        print(f"{n}: best one-to-one F1 {best['f1_1to1']:.3f} ({best['mode']} "
              f"{best['clusterer']} {best['localization']}); against the free particles "
              f"alone {best['f1_free']:.3f} (best of all workflows "
              f"{max(r['f1_free'] for r in rows if r['phantom'] == n):.3f})")
    return rows


def accuracy(threads, seed):
    """One-to-one / any F1 of every workflow on phantoms of increasing difficulty."""
    from tomopick.core.simulate import simulate_tomogram
    rows = []
    print(f"{'phantom':26s} {'workflow':20s} " + "  ".join(
        f"{loc[:12]:>12s} 1:1/any" for loc in pl.LOCALIZATIONS))
    for name, extra in ACCURACY_CASES:
        kwargs = dict(shape=(96, 160, 160), n_particles=60, n_vesicles=0, seed=seed)
        kwargs.update(extra)
        ph = simulate_tomogram(**kwargs)
        diameter = float(np.median(ph.particle_info["diameter"]))
        best = 0.0
        for mode, clusterer in WORKFLOWS:
            seg = pk.segment_tomogram(ph.tomogram, mode, clusterer, particle_diameter=diameter,
                                      n_threads=threads, seed=seed)
            cells = []
            for loc in pl.LOCALIZATIONS:
                picks, _ = pl.localize_segmentation(seg, loc, diameter, tomo_id="phantom")
                r = evaluate_picks(picks, ph.particles, diameter / 2)
                rows.append({"phantom": name, "mode": mode, "clusterer": clusterer,
                             "localization": loc, "n_true": len(ph.particles),
                             "n_pred": len(picks),
                             "f1_1to1": r["one_to_one"]["f1"], "f1_any": r["any"]["f1"]})
                best = max(best, r["one_to_one"]["f1"])
                cells.append(f"{r['one_to_one']['f1']:12.2f}/{r['any']['f1']:.2f}   ")
            print(f"{name:26s} {mode + ' ' + clusterer:20s} " + "  ".join(cells), flush=True)
        print(f"{name:26s} best one-to-one F1 {best:.2f} ({len(ph.particles)} particles, "
              f"radius {diameter / 2:.1f} voxels)", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="80 x 192 x 192 instead")
    ap.add_argument("--shape", type=int, nargs=3, default=None, help="nz ny nx")
    ap.add_argument("--snr", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fit-n", type=int, default=None, dest="fit_n",
                    help="fitting neighbourhoods (default: tomopick's)")
    ap.add_argument("--sub-shape", type=int, nargs=3, default=[5, 0, 0], dest="sub_shape",
                    help="z y x of the explicit computation's subvolume (0 = whole width; "
                    "default 5 whole slices)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--accuracy", action="store_true",
                    help="score the workflows on phantoms from clean to SNR 0.1 instead")
    ap.add_argument("--distractors", action="store_true",
                    help="time the distractor lamella of --lamellae (128 x 256 x 256, "
                    "vesicles and gold, SNR 0.15) instead of the default phantom")
    ap.add_argument("--lamellae", action="store_true",
                    help="score the 12 workflows on the sparse / distractor / crowded "
                    "128 x 256 x 256 lamellae instead")
    ap.add_argument("--original", nargs="?", const="", default=None, metavar="DIR",
                    help="time the original PickET (a checkout DIR of isblab/pickET; cloned "
                    "from GitHub when DIR is omitted) side by side with tomopick's twelve "
                    "workflows on the distractor lamella")
    ap.add_argument("--min-distance", type=int, default=ORIGINAL_MIN_DISTANCE,
                    dest="min_distance", help="the original's watershed marker spacing "
                    "(its example: 15)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="--original: tomopick's workflows run this many times each, the "
                    "run of median time kept")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--source", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ranges", type=int, nargs=4, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--clusterer", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--diameter", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.original is not None:
        original_vs_tomopick(args.original or None, args.threads, args.seed, args.min_distance,
                             args.json, args.repeats)
        return
    if args.accuracy or args.lamellae:
        rows = (lamellae if args.lamellae else accuracy)(args.threads, args.seed)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1, default=float)
        return
    shape = tuple(args.shape or ((80, 192, 192) if args.quick else (200, 512, 512)))
    if args.distractors:
        shape, args.snr = LAMELLA["shape"], LAMELLA["snr"]
    report = {"shape": shape, "snr": args.snr, "threads": args.threads, "fit_n": args.fit_n,
              "cpu_count": os.cpu_count(), "workflows": [], "explicit": []}
    with tempfile.TemporaryDirectory() as tmp:
        info = make_phantom(shape, args.snr, args.seed, tmp, args.distractors)
        report.update(info)
        print(f"phantom {shape} ({np.prod(shape) / 1e6:.1f} M voxels), "
              f"{info['n_particles']} particles, median diameter {info['diameter']:.1f} voxels, "
              f"SNR {args.snr}; simulated in {info['simulate_s']:.0f} s")
        common = ["--dir", tmp, "--threads", str(args.threads)] + (
            ["--fit-n", str(args.fit_n)] if args.fit_n else [])
        print(f"{'workflow':20s} {'S1 s':>6s} {'CC s':>6s} {'WS s':>6s} {'RAM GB':>7s}  "
              f"{'F1 CC 1:1/any':>14s}  {'F1 WS 1:1/any':>14s}  pick range  cluster rule"
              "   S1 = preprocess + fit + predict + cluster choice")
        total = 0.0
        for mode, clusterer in WORKFLOWS:
            r = spawn(["--worker", "workflow", "--mode", mode, "--clusterer", clusterer,
                       "--diameter", str(info["diameter"])] + common)
            report["workflows"].append(r)
            total += r["s1_s"] + r["cc"]["s2_s"] + r["ws"]["s2_s"]
            print(f"{mode + ' ' + clusterer:20s} {r['s1_s']:6.1f} {r['cc']['s2_s']:6.1f} "
                  f"{r['ws']['s2_s']:6.1f} {r['peak_rss_gb']:7.2f}  "
                  f"{r['cc']['f1_1to1']:6.2f}/{r['cc']['f1_any']:.2f}     "
                  f"{r['ws']['f1_1to1']:6.2f}/{r['ws']['f1_any']:.2f}    "
                  f"{r['pick_range']}  {r['cluster_rule']}   "
                  + " + ".join(f"{v:.1f}" for v in r["timings"].values()), flush=True)
        report["total_s"] = total
        print(f"all six workflows, S1 + both S2: {total:.0f} s on {args.threads} threads; "
              f"peak RAM {max(r['peak_rss_gb'] for r in report['workflows']):.2f} GB")
        shared = spawn(["--worker", "shared", "--diameter", str(info["diameter"])] + common)
        report["shared"] = shared
        print(f"the same twelve sharing stage-1 preparation (segment_workflows) and one "
              f"segmentation per pair of localisations: {shared['total_s']:.0f} s, "
              f"peak RAM {shared['peak_rss_gb']:.2f} GB", flush=True)
        sub = [s or full for s, full in zip(args.sub_shape, shape)]
        print(f"\nPrediction, us per voxel: PickET's explicit computation (window by window), "
              f"fastest of {sub[0]} whole slices of {sub[1]} x {sub[2]}; ours, fastest of "
              f"{OURS_REPEATS} runs on {OURS_SLICES} central slices in the same process (best), "
              "and in the whole-tomogram run above (run).  S1: the explicit side is charged our "
              "preprocessing and fit plus its prediction of every voxel.")
        print(f"{'workflow':20s} {'explicit':>9s} {'ours':>7s} {'speed-up':>9s} {'ours':>7s} "
              f"{'speed-up':>9s}   {'explicit S1':>11s} {'ours S1':>8s} {'speed-up':>9s}   "
              f"{'agree pred':>10s} {'agree fit':>9s}")
        print(f"{'':20s} {'':>9s} {'best':>7s} {'best':>9s} {'run':>7s} {'run':>9s}   "
              f"{'s':>11s} {'s':>8s}")
        for (mode, clusterer), w in zip(WORKFLOWS, report["workflows"]):
            e = spawn(["--worker", "explicit", "--mode", mode, "--clusterer", clusterer,
                       "--sub-shape"] + [str(s) for s in args.sub_shape] + common)
            e["ours_predict_us_per_voxel"] = w["predict_us_per_voxel"]
            e["speedup_predict_best"] = e["explicit_us_per_voxel"] / e["ours_best_us_per_voxel"]
            e["speedup_predict"] = e["explicit_us_per_voxel"] / w["predict_us_per_voxel"]
            t = w["timings"]
            e["explicit_s1_s"] = (t["preprocess_s"] + t["fit_s"]
                                  + e["explicit_us_per_voxel"] * w["n_predicted"] / 1e6)
            e["speedup_s1"] = e["explicit_s1_s"] / w["s1_s"]
            report["explicit"].append(dict(e, mode=mode, clusterer=clusterer))
            fit = "-" if e["fit_agreement"] is None else f"{e['fit_agreement']:.4f}"
            print(f"{mode + ' ' + clusterer:20s} {e['explicit_us_per_voxel']:9.3f} "
                  f"{e['ours_best_us_per_voxel']:7.3f} {e['speedup_predict_best']:8.0f}x "
                  f"{w['predict_us_per_voxel']:7.3f} {e['speedup_predict']:8.0f}x   "
                  f"{e['explicit_s1_s']:11.1f} {w['s1_s']:8.1f} {e['speedup_s1']:8.1f}x   "
                  f"{e['label_agreement']:10.4f} {fit:>9s}", flush=True)
        best = min(e["speedup_predict_best"] for e in report["explicit"])
        run = min(e["speedup_predict"] for e in report["explicit"])
        print(f"slowest prediction speed-up over the six workflows: {best:.0f}x best against "
              f"best, {run:.0f}x against the whole run (target >= 20x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)


if __name__ == "__main__":
    main()
