"""``tomopick demo``: both picking workflows on a simulated tomogram, headless.

Simulates a lamella (vesicles with membrane proteins, free macromolecules,
gold, thickness gradient, missing wedge, CTF, noise), writes the points a user
would click on the vesicles, runs the two saved workflows in one project and
scores every result against the simulation's ground truth.
"""
import os
import time
from datetime import datetime

import numpy as np

from tomopick.core import simulate
from tomopick.core.alignment import average_aligned
from tomopick.core.evaluate import evaluate_picks
from tomopick.core.extraction import extract_subtomograms
from tomopick.core.rotations import angle_between, homogeneous, rotation_from_z_axis

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


def score_non_directional(phantom, coordinates, average, box_size, radius):
    from tomopick.convert import picks_from_coordinates
    picks = picks_from_coordinates(coordinates)
    truth = phantom.particles
    result = evaluate_picks(picks, truth, radius)
    expected = _expected_average(phantom.clean, truth.positions, None, box_size)
    return {"n": len(picks), "evaluation": result,
            "avg_correlation": _correlation(average, expected)}


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
    log("3. Non-directional workflow (import -> denoise -> PickET x2 -> consensus -> extraction "
        "-> apply alignment)")
    non_directional = workflows.run_workflow("non_directional", project_name, fields, log=log)

    failed = [r for r in directional + non_directional if r["status"] != "finished"]
    for r in directional + non_directional:
        if r["status"] == "finished":
            log(f"   {r['label']:<34s} -> {_outputs(r['protocol'])}")
    if failed or len(directional) < 6 or len(non_directional) < 7:
        for r in failed:
            log(f"FAILED: {r['label']}: {r['error']}")
        return 1

    log("4. Accuracy against the ground truth")
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
    consensus = non_directional[4]["protocol"]
    avg2 = read_mrc(non_directional[6]["protocol"].outputAverage.getFileName())
    # PickET's rule: a pick matches within half a particle diameter (of the free particles,
    # the ones a non-directional picker is after)
    radius = float(np.median(info["diameter"][info["kind"] == "free"])) / 2
    n = score_non_directional(phantom, consensus.consensusCoordinates, avg2, box, radius)
    for workflow in (2, 3):
        picks_prot = non_directional[workflow]["protocol"]
        from tomopick.convert import picks_from_coordinates
        ev = evaluate_picks(picks_from_coordinates(picks_prot.coordinates), phantom.particles, radius)
        log(f"   {non_directional[workflow]['label']}: {len(picks_prot.coordinates)} picks, "
            f"F1 one-to-one {ev['one_to_one']['f1']:.2f}, any-match {ev['any']['f1']:.2f}")
    ev = n["evaluation"]
    log(f"   consensus: {n['n']} picks; precision {ev['one_to_one']['precision']:.2f}, recall "
        f"{ev['one_to_one']['recall']:.2f}, F1 one-to-one {ev['one_to_one']['f1']:.2f} "
        f"(any-match {ev['any']['f1']:.2f}) at radius {radius:.1f} voxels")
    log(f"   non-directional average: correlation with the expected average "
        f"{n['avg_correlation']:.3f}")
    log(f"Done in {time.time() - start:.0f} s. Open the project in the Scipion GUI with:\n"
        f"   tomopick gui {project_name}")
    return 0
