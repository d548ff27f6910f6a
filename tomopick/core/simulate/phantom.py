"""The phantom: `simulate_tomogram`, its result `Phantom` and the ground-truth files.

`simulate_tomogram` runs the steps of the other modules in a fixed order
(the order of the random draws is what makes equal seeds give equal
phantoms): ice geometry, class shapes, placement (vesicles with membrane
proteins, filaments, gold, free particles; `placement`), ice and background
(`imaging._add_ice`), missing wedge and CTF, intensity drift, noise
(`imaging`), and the truth records.

`Phantom.save` writes ``name.mrc``, ``name_truth.json`` and
``name_particles.csv``; `load_truth` reads the JSON back.
"""
import csv
import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..fourier import wedge_mask
from ..formats.mrc import write_mrc
from ..picks import Picks
from ..rotations import dynamo_euler_to_matrix, homogeneous, matrix_to_dynamo_euler
from .imaging import (_add_drift, _add_ice, _add_noise, _filtered_spectrum, _inverse,
                      _masked_var, _slab_mask)
from .placement import (_ice_geometry, _place_filaments, _place_free_particles, _place_gold,
                        _place_vesicles, _Scene)
from .shapes import FREE_CLASSES, MEMBRANE_CLASS, PARTICLE_CLASSES, _centered_shape


# ---------------------------------------------------------------------------
# The phantom
# ---------------------------------------------------------------------------

@dataclass
class Phantom:
    """A simulated tomogram and its ground truth (see `simulate_tomogram`).

    Attributes
    ----------
    tomogram : (nz, ny, nx) float32
        Final volume: density with missing wedge, CTF band-pass and noise.
    clean : (nz, ny, nx) float32
        Noise-free, wedge-free, unfiltered density with the tomogram's polarity.
    particles : Picks
        Every particle centre (free and membrane), group_ids = class id,
        matrices = true orientation (``R @ z`` = particle axis; for membrane
        proteins the outward normal of their vesicle).
    particle_info : dict of (N,) arrays
        'class_name', 'diameter' (voxels), 'kind' ('free'/'membrane'),
        'vesicle' (index or -1), 'offset' (membrane proteins: distance of the
        centre from the bilayer mid-plane along the normal, voxels; NaN for
        free ones).
    vesicles : list of dict
        'center' (x, y, z), 'semi_axes' (a, b, c) of the bilayer mid-plane
        and 'thickness' (leaflet separation), all voxels; 'rotation' (3x3,
        column i = direction of semi-axis i).
    filaments : list of (K, 3) ndarray
        Axis polylines (x, y, z), voxels.
    filament_info : list of dict
        'type' ('actin'/'microtubule') and 'radius' (outer, voxels).
    gold : list of dict
        'center' (x, y, z) and 'radius', voxels.
    templates : dict
        class id -> cubic float32 template (positive density, centroid at the
        centre voxel, canonical orientation).
    voxel_size : float
        Å per voxel.
    ice_bounds : tuple of (ny, nx) ndarrays
        z of the lamella's bottom and top surfaces at every (y, x).
    params : dict
        The arguments of the build.
    """
    tomogram: np.ndarray
    clean: np.ndarray
    particles: Picks
    particle_info: dict
    vesicles: list
    filaments: list
    filament_info: list
    gold: list
    templates: dict
    voxel_size: float
    ice_bounds: tuple
    params: dict = field(default_factory=dict)
    classes: dict = None

    def sample_mask(self):
        """Boolean [z, y, x] mask of voxels inside the ice slab."""
        return _slab_mask(self.tomogram.shape, *self.ice_bounds)

    def truth_dict(self, tomo_id=None):
        """JSON-ready ground truth (see `save`)."""
        tomo_id = tomo_id or (str(self.particles.tomo_ids[0]) if len(self.particles)
                              else "phantom")
        n = len(self.particles)
        particles = []
        if n:
            tdrot, tilt, narot = matrix_to_dynamo_euler(self.particles.matrices)
            for i in range(n):
                x, y, z = (float(v) for v in self.particles.positions[i])
                particles.append(dict(
                    tsId=tomo_id, x=x, y=y, z=z,
                    class_id=int(self.particles.group_ids[i]),
                    class_name=str(self.particle_info["class_name"][i]),
                    kind=str(self.particle_info["kind"][i]),
                    vesicle=int(self.particle_info["vesicle"][i]),
                    diameter=float(self.particle_info["diameter"][i]),
                    offset=(None if np.isnan(self.particle_info["offset"][i])
                            else float(self.particle_info["offset"][i])),
                    tdrot=float(tdrot[i]), tilt=float(tilt[i]), narot=float(narot[i]),
                    rotation=self.particles.matrices[i, :3, :3].tolist()))
        return dict(
            tsId=tomo_id,
            voxel_size=float(self.voxel_size),
            shape=list(self.tomogram.shape),
            classes={str(k): dict(name=v["name"], kind=v["kind"])
                     for k, v in (self.classes or PARTICLE_CLASSES).items()},
            particles=particles,
            vesicles=[dict(center=list(map(float, v["center"])),
                           semi_axes=list(map(float, v["semi_axes"])),
                           rotation=np.asarray(v["rotation"]).tolist(),
                           thickness=float(v["thickness"])) for v in self.vesicles],
            filaments=[dict(points=np.asarray(f).tolist(), **info)
                       for f, info in zip(self.filaments, self.filament_info)],
            gold=[dict(center=list(map(float, g["center"])), radius=float(g["radius"]))
                  for g in self.gold],
            params={k: (list(v) if isinstance(v, tuple) else v) for k, v in self.params.items()},
        )

    def save(self, directory, name, save_clean=False, save_templates=False):
        """Write ``name.mrc``, ``name_truth.json`` and ``name_particles.csv``.

        Parameters
        ----------
        directory : str
            Created when missing.
        name : str
            File stem and the particles' tsId. The in-memory ``particles``
            take this tsId too, so that they keep matching what the files
            say (a tomogram imported from ``name.mrc`` has tsId ``name``).
        save_clean : bool
            Also write the clean volume as ``name_clean.mrc``.
        save_templates : bool
            Also write each class template as ``name_template_<class id>.mrc``.

        Returns
        -------
        mrc_path, json_path, csv_path : str
            The CSV has the columns tomoId,x,y,z,groupId,tdrot,tilt,narot
            (voxels, bottom-left origin, Dynamo ZXZ degrees).
        """
        os.makedirs(directory, exist_ok=True)
        mrc_path = os.path.join(directory, f"{name}.mrc")
        write_mrc(mrc_path, self.tomogram, self.voxel_size)
        if save_clean:
            if self.clean is None:
                raise ValueError("this phantom was built with keep_clean=False: no clean volume")
            write_mrc(os.path.join(directory, f"{name}_clean.mrc"), self.clean,
                       self.voxel_size)
        if save_templates:
            for class_id, template in self.templates.items():
                write_mrc(os.path.join(directory, f"{name}_template_{class_id}.mrc"), template,
                           self.voxel_size)
        self.particles.tomo_ids = np.full(len(self.particles), str(name))
        truth = self.truth_dict(name)
        json_path = os.path.join(directory, f"{name}_truth.json")
        with open(json_path, "w") as fh:
            json.dump(truth, fh)
        csv_path = os.path.join(directory, f"{name}_particles.csv")
        with open(csv_path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["tomoId", "x", "y", "z", "groupId", "tdrot", "tilt", "narot"])
            for p in truth["particles"]:
                writer.writerow([name, f"{p['x']:.4f}", f"{p['y']:.4f}", f"{p['z']:.4f}",
                                 p["class_id"], f"{p['tdrot']:.4f}", f"{p['tilt']:.4f}",
                                 f"{p['narot']:.4f}"])
        return mrc_path, json_path, csv_path


def load_truth(path):
    """Read a ``*_truth.json`` written by `Phantom.save`.

    Parameters
    ----------
    path : str
        The JSON file.

    Returns
    -------
    picks : Picks
        Particles with positions (voxels), class ids, orientation matrices
        and the voxel size.
    info : dict
        'voxel_size', 'shape', 'tsId', 'classes', 'vesicles' and 'gold' (lists
        of dicts with array values), 'filaments' (list of (K, 3) arrays),
        'filament_info', 'particle_info' (dict of arrays) and 'params'.

    Examples
    --------
    >>> import tempfile
    >>> ph = simulate_tomogram(shape=(32, 48, 48), n_particles=2, n_vesicles=0, seed=2)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     mrc, js, csv_path = ph.save(d, "tomo1")
    ...     picks, info = load_truth(js)
    >>> str(picks.tomo_ids[0]), info["shape"]
    ('tomo1', (32, 48, 48))
    >>> bool(np.allclose(picks.positions, ph.particles.positions, atol=1e-9))
    True
    >>> bool(np.allclose(picks.matrices, ph.particles.matrices, atol=1e-9))
    True
    """
    try:
        with open(path) as fh:
            truth = json.load(fh)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read phantom truth file {path}: {err}") from err
    parts = truth["particles"]
    n = len(parts)
    positions = np.array([[p["x"], p["y"], p["z"]] for p in parts], dtype=float).reshape(n, 3)
    if n:
        rot = np.array([p["rotation"] for p in parts], dtype=float) if "rotation" in parts[0] \
            else dynamo_euler_to_matrix([p["tdrot"] for p in parts], [p["tilt"] for p in parts],
                                        [p["narot"] for p in parts])
        # shifts are relative to the position (SPEC.md): zero for exact truth
        matrices = homogeneous(rot)
    else:
        matrices = np.zeros((0, 4, 4))
    picks = Picks([p["tsId"] for p in parts] if n else np.zeros(0, str), positions,
                  [p["class_id"] for p in parts], matrices, None, truth["voxel_size"])
    info = dict(
        voxel_size=truth["voxel_size"], shape=tuple(truth["shape"]), tsId=truth["tsId"],
        classes={int(k): v for k, v in truth["classes"].items()},
        vesicles=[dict(center=np.array(v["center"]), semi_axes=np.array(v["semi_axes"]),
                       rotation=np.array(v["rotation"]), thickness=v["thickness"])
                  for v in truth["vesicles"]],
        filaments=[np.array(f["points"]).reshape(-1, 3) for f in truth["filaments"]],
        filament_info=[{k: v for k, v in f.items() if k != "points"} for f in truth["filaments"]],
        gold=[dict(center=np.array(g["center"]), radius=g["radius"]) for g in truth["gold"]],
        particle_info=dict(
            class_name=np.array([p["class_name"] for p in parts], dtype=str),
            kind=np.array([p["kind"] for p in parts], dtype=str),
            vesicle=np.array([p["vesicle"] for p in parts], dtype=int),
            diameter=np.array([p["diameter"] for p in parts], dtype=float),
            offset=np.array([np.nan if p["offset"] is None else p["offset"] for p in parts],
                            dtype=float)),
        params=truth.get("params", {}),
    )
    return picks, info


# ---------------------------------------------------------------------------
# simulate_tomogram
# ---------------------------------------------------------------------------

def _check_shape(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be (nz, ny, nx) with every size >= 16, got {shape}")
    return shape


def simulate_tomogram(shape=(64, 96, 96), voxel_size=10.0, n_particles=20, n_vesicles=1,
                      proteins_per_vesicle=10, n_filaments=0, n_gold=0,
                      tilt_range=(-60, 60), snr=None, ctf=True, thickness_gradient=True,
                      contrast="dark", seed=0, tomo_id="phantom", particle_classes=None,
                      ice_thickness=0.7, ice_density=0.4, background_amplitude=0.1,
                      defocus=3.0, bfactor=50.0, max_attempts=1000, keep_clean=True,
                      extra_classes=None, intensity_drift=0.0):
    """Build a synthetic tomogram with ground truth.

    Parameters
    ----------
    shape : (nz, ny, nx)
        Volume size, voxels; each >= 16.
    voxel_size : float
        Å per voxel; particle, membrane and filament sizes are physical (Å).
    n_particles : int
        Free macromolecules, classes drawn uniformly from ``particle_classes``.
    n_vesicles : int
        Vesicles (even indices spherical, odd ones ellipsoidal).
    proteins_per_vesicle : int
        Membrane proteins on each vesicle.
    n_filaments : int
        Curved helical filaments (alternately actin-like and microtubule-like).
    n_gold : int
        Gold beads (10 nm), near the lamella surfaces.
    tilt_range : (float, float) or None
        Tilt angles (degrees) of the simulated tilt series; None = no wedge.
    snr : float or None
        Variance of the filtered noise-free signal inside the ice slab
        divided by the noise variance; None = no noise. Noise is white
        inside the measured Fourier region (the wedge stays empty).
    ctf : bool
        Apply `ctf_band_pass` (phase-flipped CTF magnitude).
    thickness_gradient : bool
        Vary ice thickness (+-25 %), lamella height and ice grey level
        linearly across x/y.
    contrast : {'dark', 'bright'}
        'dark': particles darker than the background (cryo-ET); templates
        stay positive density either way.
    seed : int
        Seed of ``np.random.default_rng``; equal seeds give equal phantoms.
    tomo_id : str
        tsId of the particles.
    particle_classes : sequence of int, optional
        Free classes to draw from (default all of `FREE_CLASSES`).
    ice_thickness : float
        Mean slab thickness as a fraction of nz.
    ice_density : float
        Ice grey level relative to protein excess density 1.
    background_amplitude : float
        Standard deviation of the structured background inside the ice.
    defocus, bfactor : float
        CTF defocus (µm) and envelope B-factor (Å^2).
    max_attempts : int
        Rejection-sampling attempts per object before giving up.
    keep_clean : bool
        Keep the clean volume (False drops it after filtering to save memory).
    extra_classes : dict, optional
        More free particle classes, id -> ``dict(name=, kind="free", shape=)``
        with a shape object such as a density map
        (`tomopick.core.simulate.maps.map_particle_class`); drawn like the
        analytic ones (and by default along with them).
    intensity_drift : float
        Peak-to-peak amplitude of a slow linear grey-level ramp across x and z
        (a direction drawn in the x-z plane), in units of the standard
        deviation of the filtered signal inside the ice; added after the
        wedge and CTF, before the noise.  Real reconstructions keep such
        drifts (thickness-dependent absorption, uneven ice) although the
        CTF high-pass removes them from the simulated density, so
        segmentation must cope with particles whose grey level changes
        across the lamella.  0 = none.

    Returns
    -------
    Phantom

    Raises
    ------
    ValueError
        On bad arguments, or when the objects asked for do not fit in the ice
        slab (the message says which and how many were placed).

    Examples
    --------
    >>> ph = simulate_tomogram(shape=(32, 64, 64), n_particles=3, n_vesicles=0, snr=1.0,
    ...                        seed=1)
    >>> ph.tomogram.shape, ph.tomogram.dtype
    ((32, 64, 64), dtype('float32'))
    >>> len(ph.particles), sorted(set(ph.particle_info["kind"]))
    (3, ['free'])
    >>> again = simulate_tomogram(shape=(32, 64, 64), n_particles=3, n_vesicles=0, snr=1.0,
    ...                           seed=1)
    >>> bool(np.array_equal(ph.tomogram, again.tomogram))       # equal seeds, equal phantoms
    True
    >>> x, y, z = ph.particles.positions[0].round().astype(int)
    >>> bool(ph.clean[z, y, x] < ph.clean[0, y, x])             # dark particles, in ice
    True
    """
    shape = _check_shape(shape)
    _check_arguments(voxel_size=voxel_size, contrast=contrast, snr=snr,
                     intensity_drift=intensity_drift, ice_thickness=ice_thickness,
                     tilt_range=tilt_range, n_particles=n_particles, n_vesicles=n_vesicles,
                     proteins_per_vesicle=proteins_per_vesicle, n_filaments=n_filaments,
                     n_gold=n_gold)
    table, classes = _class_table(particle_classes, extra_classes)
    params = dict(shape=shape, voxel_size=voxel_size, n_particles=n_particles,
                  n_vesicles=n_vesicles, proteins_per_vesicle=proteins_per_vesicle,
                  n_filaments=n_filaments, n_gold=n_gold,
                  tilt_range=None if tilt_range is None else tuple(tilt_range), snr=snr,
                  ctf=ctf, thickness_gradient=thickness_gradient, contrast=contrast, seed=seed,
                  ice_thickness=ice_thickness, ice_density=ice_density,
                  background_amplitude=background_amplitude, defocus=defocus, bfactor=bfactor,
                  particle_classes=[int(c) for c in classes], tomo_id=str(tomo_id),
                  extra_classes={int(k): v["name"] for k, v in (extra_classes or {}).items()},
                  intensity_drift=float(intensity_drift))

    rng = np.random.default_rng(seed)
    z_bot, z_top, level = _ice_geometry(shape, ice_thickness, thickness_gradient, ice_density,
                                        rng)
    shapes, templates, radii = {}, {}, {}
    for c in set(classes) | {MEMBRANE_CLASS}:
        shapes[c], templates[c], radii[c] = _centered_shape(
            table[c].get("shape") or table[c]["primitives"], voxel_size)

    # --- placement ---------------------------------------------------------
    scene = _Scene(shape, z_bot, z_top, rng)
    vesicles = _place_vesicles(scene, n_vesicles, proteins_per_vesicle, shapes[MEMBRANE_CLASS],
                               radii[MEMBRANE_CLASS], voxel_size, max_attempts)
    filaments, filament_info = _place_filaments(scene, n_filaments, voxel_size, max_attempts)
    gold = _place_gold(scene, n_gold, voxel_size, max_attempts)
    _place_free_particles(scene, classes, n_particles, shapes, radii,
                          {c: table[c]["name"] for c in table}, voxel_size, max_attempts)

    # --- imaging: ice, polarity, wedge and CTF, drift, noise -------------------
    clean, scene.objects = scene.objects, None      # the only reference, for the memory peak
    _add_ice(clean, z_bot, z_top, level, background_amplitude, voxel_size, contrast, rng)
    wedge = spectrum = None
    if tilt_range is None and not ctf:
        tomogram = clean.copy() if keep_clean else clean
    else:
        spectrum, wedge = _filtered_spectrum(clean, voxel_size, tilt_range, ctf, defocus,
                                             bfactor)
        if not keep_clean:
            clean = None            # one volume less at the memory peak below
        tomogram = _inverse(spectrum, shape)
    signal_var = _add_drift(tomogram, intensity_drift, z_bot, z_top, rng)
    if snr is not None:
        signal_var = signal_var or _masked_var(tomogram, z_bot, z_top)
        _add_noise(tomogram, snr, signal_var, rng, wedge, spectrum)
    del spectrum
    if not keep_clean:
        clean = None

    # --- truth ----------------------------------------------------------------
    particles, particle_info = _truth_records(scene, table, radii, tomo_id, voxel_size)
    return Phantom(tomogram=tomogram, clean=clean, particles=particles,
                   particle_info=particle_info, vesicles=vesicles, filaments=filaments,
                   filament_info=filament_info, gold=gold, templates=templates,
                   voxel_size=float(voxel_size), ice_bounds=(z_bot, z_top), params=params,
                   classes={k: dict(name=v["name"], kind=v["kind"]) for k, v in table.items()})


def _check_arguments(voxel_size, contrast, snr, intensity_drift, ice_thickness, tilt_range,
                     **counts):
    """Raise ValueError naming the first bad argument of `simulate_tomogram`."""
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be positive, got {voxel_size}")
    if contrast not in ("dark", "bright"):
        raise ValueError(f"contrast must be 'dark' or 'bright', got {contrast!r}")
    if snr is not None and snr <= 0:
        raise ValueError(f"snr must be positive or None, got {snr}")
    if not intensity_drift >= 0:
        raise ValueError(f"intensity_drift must be >= 0, got {intensity_drift}")
    if not 0 < ice_thickness <= 1:
        raise ValueError(f"ice_thickness must be a fraction of nz in (0, 1], got {ice_thickness}")
    for name, value in counts.items():
        if int(value) != value or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value}")
    if tilt_range is not None:
        wedge_mask((2, 2, 2), tilt_range)         # validates the range


def _class_table(particle_classes, extra_classes):
    """All classes (id -> dict) and the free classes to draw from, checked."""
    table = {**PARTICLE_CLASSES, **(extra_classes or {})}
    classes = tuple((FREE_CLASSES + tuple(extra_classes or ())) if particle_classes is None
                    else particle_classes)
    for c in classes:
        if c not in table or table[c]["kind"] != "free":
            raise ValueError(f"particle class {c} is not a free class; use "
                             f"{sorted(k for k, v in table.items() if v['kind'] == 'free')}")
    return table, classes


def _truth_records(scene, table, radii, tomo_id, voxel_size):
    """The placed particles as `Picks` (true positions and orientations) and their info."""
    n = len(scene.positions)
    positions = np.array(scene.positions, dtype=float).reshape(n, 3)
    rotations = np.array(scene.rotations, dtype=float).reshape(n, 3, 3)
    class_ids = np.array(scene.class_ids, dtype=int)
    particles = Picks(np.repeat(np.array([tomo_id], dtype=str), n), positions, class_ids,
                      homogeneous(rotations, np.zeros((n, 3))), None, float(voxel_size))
    particle_info = dict(
        class_name=np.array([table[c]["name"] for c in class_ids], dtype=str),
        diameter=np.array([2 * radii[c] for c in class_ids], dtype=float),
        kind=np.array(scene.kinds, dtype=str),
        vesicle=np.array(scene.vesicle_idx, dtype=int),
        offset=np.array(scene.offsets, dtype=float))
    return particles, particle_info
