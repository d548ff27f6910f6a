"""``tomopick demo``: both picking workflows on simulated tomograms, headless.

Directional: a lamella with vesicles and membrane proteins; the points a user
would click on the vesicles are written, the ``directional`` workflow runs.
Non-directional (the tutorial's EMAN path): a lamella of real 80S ribosomes
(EMD-3883 through the simulator's map classes) among other particles and gold;
~50 "manual" picks are written from the truth and the ``non_directional``
workflow runs (initial model -> template matching + learned picking + PickET ->
consensus -> average). Every result is scored against the simulation's truth.
"""
import os
import time
from datetime import datetime

import numpy as np

from tomopick.core import simulate
from tomopick.core.alignment import average_aligned
from tomopick.core.evaluate import evaluate_picks, match_picks
from tomopick.core.extraction import extract_subtomograms
from tomopick.core.rotations import (angle_between, angular_distance, average_rotations,
                                     homogeneous, rotation_from_z_axis)

DEMO_SHAPE = (64, 192, 192)
TOMO_ID = "tomo_1"


def write_vesicle_points(phantom, path, points_per_vesicle=24, noise=1.0, seed=0):
    """The clicks of a user on the spherical vesicles of a phantom, as a points CSV.

    Each vesicle gets ``points_per_vesicle`` points on its membrane mid-plane,
    jittered by ``noise`` voxels, and its centre as the interior marker.

    Returns
    -------
    list of int
        Indices of the vesicles written (the spherical ones).
    """
    rng = np.random.default_rng(seed)
    rows, picked = ["tomoId,modelId,x,y,z,role"], []
    for index, vesicle in enumerate(phantom.vesicles):
        axes = np.asarray(vesicle["semi_axes"], dtype=float)
        if axes.max() - axes.min() > 0.05 * axes.mean():
            continue  # ellipsoids need the 'Ellipsoidal vesicle' model: not this workflow
        points, _ = simulate.vesicle_surface_points(vesicle, points_per_vesicle, rng)
        points = points + rng.normal(scale=noise, size=points.shape)
        model = len(picked) + 1
        rows += [f"{TOMO_ID},{model},{x:.3f},{y:.3f},{z:.3f},point" for x, y, z in points]
        cx, cy, cz = vesicle["center"]
        rows.append(f"{TOMO_ID},{model},{cx:.3f},{cy:.3f},{cz:.3f},interior")
        picked.append(index)
    with open(path, "w") as handle:
        handle.write("\n".join(rows) + "\n")
    return picked


def _correlation(a, b):
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def _outputs(prot):
    parts = []
    for name, output in prot.iterOutputAttributes():
        size = output.getSize() if hasattr(output, "getSize") else None
        parts.append(f"{name}: {size}" if size is not None else name)
    return ", ".join(parts)


def _finished(results, count, log):
    """Whether all ``count`` protocols of a workflow finished; logs their outputs or errors."""
    failed = [r for r in results if r["status"] != "finished"]
    for r in failed:
        log(f"FAILED: {r['label']}: {r['error']}")
    if failed or len(results) < count:
        return False
    for r in results:
        log(f"   {r['label']:<34s} -> {_outputs(r['protocol'])}")
    return True


def _expected_average(clean, positions, z_axes, box_size):
    """Average of the noise-free volume at given positions and orientations."""
    matrices = homogeneous(rotation_from_z_axis(z_axes)) if z_axes is not None else None
    extraction = extract_subtomograms(clean, positions, box_size, matrices=matrices,
                                      invert=True, normalize="normalize")
    return average_aligned(extraction.boxes, extraction.matrices)


def _two_peaks(profile):
    """Indices of the two highest local maxima of a 1D profile."""
    inner = np.flatnonzero((profile[1:-1] > profile[:-2]) & (profile[1:-1] >= profile[2:])) + 1
    return inner[np.argsort(profile[inner])[-2:]]


def score_directional(phantom, vesicle_indices, coordinates, average, box_size):
    """Orientation error of the model-workflow coordinates and quality of their average."""
    from tomopick.convert import picks_from_coordinates
    picks = picks_from_coordinates(coordinates)
    centers = np.array([phantom.vesicles[i]["center"] for i in vesicle_indices], dtype=float)
    # each coordinate belongs to the nearest picked vesicle
    nearest = np.argmin(((picks.positions[:, None] - centers[None]) ** 2).sum(-1), axis=1)
    true_normals = np.empty_like(picks.positions)
    on_surface = np.empty_like(picks.positions)
    for k, index in enumerate(vesicle_indices):
        rows = nearest == k
        vesicle = phantom.vesicles[index]
        normals = simulate.vesicle_normals(vesicle, picks.positions[rows])
        radius = float(np.mean(vesicle["semi_axes"]))
        true_normals[rows] = normals
        on_surface[rows] = np.asarray(vesicle["center"]) + normals * radius
    z_axes = picks.matrices[:, :3, 2]
    errors = angle_between(z_axes, true_normals)
    distance = np.linalg.norm(picks.positions - on_surface, axis=1)
    expected = _expected_average(phantom.clean, on_surface, true_normals, box_size)
    # the central column only: on small vesicles the membrane curves away from the box centre
    c = average.shape[1] // 2
    profile = average[:, c - 3:c + 4, c - 3:c + 4].mean(axis=(1, 2))
    return {"n": len(picks), "median_deg": float(np.median(errors)), "max_deg": float(errors.max()),
            "surface_distance": float(np.median(distance)),
            "avg_correlation": _correlation(average, expected),
            "leaflets_z": sorted(int(z) - average.shape[0] // 2 for z in _two_peaks(profile))}


# ------------------------------------------------------------------ non-directional

RIBOSOME_MAP = "emd3883_80S_ribosome_64px_8.66A.mrc"
RIBOSOME_CLASS = 10           # class id of the map particles in the phantom's truth
FALLBACK_CLASS = 4            # the simulator's built-in ribosome-like class
RIBOSOME_DIAMETER = 300.0     # Å, the 80S's envelope (for the forms and the matching radius)
RIBOSOME_SHAPE = (64, 192, 192)
RIBOSOME_VOXEL = 20.0


def find_data_file(name):
    """Path of a file of the shared real-data folder, or None.

    Looked for in ``$TOMOPICK_DATA``, ``<repository>/../shared/data`` and
    ``/work/shared/data`` (never downloaded).
    """
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for folder in (os.environ.get("TOMOPICK_DATA"), os.path.join(repo, "..", "shared", "data"),
                   "/work/shared/data"):
        if folder and os.path.exists(os.path.join(folder, name)):
            return os.path.abspath(os.path.join(folder, name))
    return None


def simulate_ribosomes(shape=RIBOSOME_SHAPE, voxel_size=RIBOSOME_VOXEL, n_particles=110,
                       snr=0.3, seed=0, tomo_id=TOMO_ID, log=print):
    """A lamella of real 80S ribosomes (3 in 4 particles) among a smaller class and gold.

    Falls back to the simulator's built-in ribosome-like class, with a message,
    when the EMD-3883 map is not in the shared data folder.

    Returns
    -------
    phantom : tomopick.core.simulate.Phantom
    class_id : int
        The truth's class id of the ribosomes.
    """
    path = find_data_file(RIBOSOME_MAP)
    if path is None:
        log(f"   {RIBOSOME_MAP} not found (shared data folder absent): using the simulator's "
            f"built-in ribosome-like class instead of the real map")
        class_id, extra = FALLBACK_CLASS, None
    else:
        class_id = RIBOSOME_CLASS
        extra = {class_id: simulate.map_particle_class("ribosome80S", path, None, voxel_size)}
    phantom = simulate.simulate_tomogram(
        shape=tuple(shape), voxel_size=voxel_size, n_particles=n_particles, n_vesicles=0,
        n_gold=3, tilt_range=(-60, 60), snr=snr, seed=seed, tomo_id=tomo_id,
        particle_classes=[class_id, class_id, class_id, 1], extra_classes=extra)
    return phantom, class_id


def write_manual_picks(phantom, class_id, path, count=50, jitter=1.0, seed=0):
    """The clicks of a user picking ``count`` particles of a class, as a points CSV.

    Positions of the truth jittered by ``jitter`` voxels (a hand is not exact).
    Returns the number written.
    """
    rng = np.random.default_rng(seed)
    truth = phantom.particles.subset(phantom.particles.group_ids == class_id)
    chosen = rng.permutation(len(truth))[:count]
    rows = ["tomoId,x,y,z"]
    for i in chosen:
        x, y, z = truth.positions[i] + rng.normal(scale=jitter, size=3)
        rows.append(f"{truth.tomo_ids[i]},{x:.3f},{y:.3f},{z:.3f}")
    with open(path, "w") as handle:
        handle.write("\n".join(rows) + "\n")
    return len(chosen)


def _shifted_correlation(a, b, mask):
    """Largest masked correlation of ``a`` with ``b`` over integer shifts of up to 3 voxels."""
    best = -1.0
    for dz in range(-3, 4):
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                s = np.roll(a, (dz, dy, dx), axis=(0, 1, 2))
                x, y = (s - s.mean()) * mask, (b - b.mean()) * mask
                best = max(best, float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum())))
    return best


def score_tutorial(phantom, class_id, pickers, consensus, model, average, box_size,
                   diameter=RIBOSOME_DIAMETER):
    """Accuracy of the non-directional workflow's outputs against the truth.

    Parameters
    ----------
    phantom : simulate.Phantom
    class_id : int
        Truth class the workflow is after (the ribosomes).
    pickers : dict of str -> Picks
        Each picker's output ('template matching' must be among them).
    consensus : Picks
    model, average : (n, n, n) arrays
        The initial model and the final average (contrast inverted: bright protein).
    box_size : int

    Returns
    -------
    dict
        'radius' (voxels: half the diameter, PickET's matching rule); per picker
        and 'consensus': 'n', 'precision', 'recall', 'f1' (one-to-one);
        'orientation_median_deg' / 'orientation_p90_deg' of template matching
        (after removing the model's global frame, which a reference-free model
        chooses freely); 'model_correlation' and 'average_correlation' with the
        noise-free expected average in the model's frame (best integer shift of
        up to 3 voxels, inside the particle sphere).
    """
    from tomopick.core.fourier import soft_sphere

    voxel = phantom.particles.voxel_size or RIBOSOME_VOXEL
    truth = phantom.particles.subset(phantom.particles.group_ids == class_id)
    radius = diameter / voxel / 2
    out = {"radius": radius}
    for name, picks in list(pickers.items()) + [("consensus", consensus)]:
        ev = evaluate_picks(picks, truth, radius, per_class=False)["one_to_one"]
        out[name] = {"n": len(picks), "precision": ev["precision"], "recall": ev["recall"],
                     "f1": ev["f1"]}
    tm = pickers["template matching"]
    relative = []
    for tsId in sorted(set(tm.tomo_ids)):
        mine, true = tm.for_tomogram(tsId), truth.for_tomogram(tsId)
        i, j, _ = match_picks(mine.positions, true.positions, radius)
        # pick = truth @ Q for one Q (the model frame): R_true^T R_pick is Q for every match
        relative.append(np.transpose(true.matrices[j, :3, :3], (0, 2, 1))
                        @ mine.matrices[i, :3, :3])
    relative = np.concatenate(relative)
    frame = average_rotations(relative)
    errors = angular_distance(relative, frame)
    out["orientation_median_deg"] = float(np.median(errors))
    out["orientation_p90_deg"] = float(np.percentile(errors, 90))
    # the truth seen in the model's frame: noise-free boxes at the true positions turned by Q
    matrices = homogeneous(truth.matrices[:, :3, :3] @ frame)
    extraction = extract_subtomograms(phantom.clean, truth.positions, box_size,
                                      matrices=matrices, invert=True, normalize="normalize")
    expected = average_aligned(extraction.boxes, extraction.matrices)
    mask = soft_sphere((box_size,) * 3, diameter / voxel / 2 + 1, edge=2)
    out["model_correlation"] = _shifted_correlation(model, expected, mask)
    out["average_correlation"] = _shifted_correlation(average, expected, mask)
    return out


def tutorial_outputs(results):
    """The protocols of a ``non_directional`` run by role, from `run_workflow`'s results."""
    by_class = {}
    for r in results:
        by_class.setdefault(r["protocol"].getClassName(), []).append(r["protocol"])
    return {"manual": by_class["ProtTomoPickManualPicking"][0],
            "model": by_class["ProtTomoPickInitialModel"][0],
            "template matching": by_class["ProtTomoPickTemplateMatching"][0],
            "learned picking": by_class["ProtTomoPickLearnedPicking"][0],
            "PickET": by_class["ProtTomoPickPickET"][0],
            "consensus": by_class["ProtTomoPickConsensus"][0],
            "average": by_class["ProtTomoPickApplyAlignment"][0]}


def score_tutorial_run(phantom, class_id, results, box_size):
    """`score_tutorial` on the outputs of a finished ``non_directional`` run."""
    from tomopick.convert import picks_from_coordinates
    from tomopick.core.formats import read_mrc
    prots = tutorial_outputs(results)
    pickers = {name: picks_from_coordinates(prots[name].coordinates)
               for name in ("template matching", "learned picking", "PickET")}
    consensus = picks_from_coordinates(prots["consensus"].consensusCoordinates)
    model = read_mrc(prots["model"].average.getFileName())
    average = read_mrc(prots["average"].outputAverage.getFileName())
    return score_tutorial(phantom, class_id, pickers, consensus, model, average, box_size)


def _log_tutorial_scores(s, log):
    log(f"   one-to-one vs the true ribosomes, match radius {s['radius']:.1f} voxels "
        f"(half a diameter):")
    for name in ("template matching", "learned picking", "PickET", "consensus"):
        v = s[name]
        log(f"     {name:<18s} {v['n']:4d} picks  precision {v['precision']:.2f}  recall "
            f"{v['recall']:.2f}  F1 {v['f1']:.2f}")
    log(f"   template matching orientations (model frame removed): median error "
        f"{s['orientation_median_deg']:.1f} deg, 90th percentile {s['orientation_p90_deg']:.1f} deg")
    log(f"   initial model vs the truth in its frame: correlation {s['model_correlation']:.3f}; "
        f"final average: {s['average_correlation']:.3f}")


def run_demo(project_name=None, shape=None, seed=0, log=print):
    """Simulate, run both workflows in one project, and report. Returns an exit code."""
    from tomopick import workflows
    start = time.time()
    project_name = project_name or datetime.now().strftime("tomopick_demo_%Y%m%d_%H%M%S")
    data_dir = os.path.join(os.environ["SCIPION_USER_DATA"], "tomopick_data", project_name)
    os.makedirs(data_dir, exist_ok=True)

    log(f"1. Simulating a lamella {tuple(shape or DEMO_SHAPE)} (z, y, x) at 10 Å/voxel ...")
    phantom = simulate.simulate_tomogram(shape=tuple(shape or DEMO_SHAPE), voxel_size=10.0,
                                         n_particles=40, n_vesicles=3, proteins_per_vesicle=14,
                                         n_gold=3, tilt_range=(-60, 60), snr=1.0, seed=seed,
                                         tomo_id=TOMO_ID)
    phantom.save(data_dir, TOMO_ID)
    points_csv = os.path.join(data_dir, "vesicle_points.csv")
    picked = write_vesicle_points(phantom, points_csv, seed=seed)
    info = phantom.particle_info
    log(f"   {len(phantom.particles)} particles ({int((info['kind'] == 'free').sum())} free, "
        f"{int((info['kind'] == 'membrane').sum())} on {len(phantom.vesicles)} vesicles), "
        f"{len(phantom.gold)} gold beads -> {data_dir}")
    log(f"   {len(picked)} vesicles 'clicked' ({points_csv})")

    box = 32
    fields = {"tomoDir": data_dir, "tomoPattern": "{TS}.mrc", "boxSize": str(box)}
    log("2. Directional workflow (import -> denoise -> vectorial picking -> model workflow "
        "-> extraction -> apply alignment)")
    directional = workflows.run_workflow("directional", project_name,
                                         dict(fields, pointsFile=points_csv), log=log)
    if not _finished(directional, 6, log):
        return 1
    model = directional[3]["protocol"]
    aligned = directional[5]["protocol"]
    from tomopick.core.formats import read_mrc
    avg = read_mrc(aligned.outputAverage.getFileName())
    d = score_directional(phantom, picked, model.coordinates, avg, box)
    log(f"   model workflow: {d['n']} oriented coordinates; z-axis vs true outward normal: "
        f"median {d['median_deg']:.1f} deg, max {d['max_deg']:.1f} deg; "
        f"median distance to the true membrane {d['surface_distance']:.2f} voxels")
    log(f"   directional average: correlation with the noise-free expected average "
        f"{d['avg_correlation']:.3f}; bilayer leaflets at z {d['leaflets_z']} voxels from the "
        f"box centre (central column; horizontal membrane expected at 0 +- 2)")

    rib_dir = os.path.join(data_dir, "ribosomes")
    os.makedirs(rib_dir, exist_ok=True)
    log(f"3. Simulating a lamella of ribosomes {RIBOSOME_SHAPE} (z, y, x) at "
        f"{RIBOSOME_VOXEL:.0f} Å/voxel ...")
    ribosomes, class_id = simulate_ribosomes(seed=seed, log=log)
    ribosomes.save(rib_dir, TOMO_ID)
    manual_csv = os.path.join(rib_dir, "manual_picks.csv")
    n_manual = write_manual_picks(ribosomes, class_id, manual_csv, seed=seed)
    n_rib = int((ribosomes.particles.group_ids == class_id).sum())
    log(f"   {n_rib} ribosomes among {len(ribosomes.particles)} particles, "
        f"{len(ribosomes.gold)} gold beads; {n_manual} 'manual' picks ({manual_csv})")
    rib_box = 24
    log("4. Non-directional workflow (import -> denoise -> manual picking -> extraction -> "
        "initial model -> template matching + learned picking + PickET -> consensus -> "
        "extraction -> apply alignment)")
    non_directional = workflows.run_workflow(
        "non_directional", project_name,
        {"tomoDir": rib_dir, "tomoPattern": "{TS}.mrc", "boxSize": str(rib_box),
         "pointsFile": manual_csv, "particleDiameter": str(RIBOSOME_DIAMETER)}, log=log)
    if not _finished(non_directional, 11, log):
        return 1
    log("5. Non-directional accuracy against the ground truth")
    _log_tutorial_scores(score_tutorial_run(ribosomes, class_id, non_directional, rib_box), log)
    cpu = sum(r["cpu_seconds"] for r in directional + non_directional)
    log(f"Done in {time.time() - start:.0f} s wall; the protocols used {cpu:.0f} s CPU "
        f"(directional {sum(r['cpu_seconds'] for r in directional):.0f} s, non-directional "
        f"{sum(r['cpu_seconds'] for r in non_directional):.0f} s). Open the project in the "
        f"Scipion GUI with:\n   tomopick gui {project_name}")
    return 0
