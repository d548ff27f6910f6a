"""Tests of the phantom simulator against its own ground truth."""
import csv

import mrcfile
import numpy as np
import pytest
from scipy import fft as sfft
from scipy import ndimage

from tomopick.core import simulate
from tomopick.core.fourier import wedge_mask
from tomopick.core.rotations import angle_between, dynamo_euler_to_matrix, euler_zxz_to_matrix
from tomopick.core.simulate import (load_truth, simulate_tomogram, vesicle_normals,
                                    vesicle_surface_points)
from tomopick.core.simulate.shapes import (_centered_shape, _paste_spheres, _paste_vesicle,
                                           _render)

SHAPE = (64, 96, 96)


@pytest.fixture(scope="module")
def phantom():
    return simulate_tomogram(shape=SHAPE, n_particles=20, n_vesicles=2, proteins_per_vesicle=8,
                             n_filaments=1, n_gold=2, snr=0.5, seed=7)


@pytest.fixture(scope="module")
def plain():
    """Bright, flat-ice, background-free phantom: the clean volume is ice + objects."""
    return simulate_tomogram(shape=SHAPE, n_particles=12, n_vesicles=1, proteins_per_vesicle=6,
                             tilt_range=None, snr=None, ctf=False, thickness_gradient=False,
                             background_amplitude=0.0, contrast="bright", seed=3)


def test_volumes_have_the_requested_shape_and_dtype(phantom):
    assert phantom.tomogram.shape == SHAPE and phantom.tomogram.dtype == np.float32
    assert phantom.clean.shape == SHAPE and phantom.clean.dtype == np.float32
    assert np.isfinite(phantom.tomogram).all()
    assert len(phantom.particles) == 20 + 2 * 8
    assert phantom.particles.matrices.shape == (36, 4, 4)
    assert phantom.particles.voxel_size == 10.0
    info = phantom.particle_info
    assert (info["kind"] == "membrane").sum() == 16
    assert set(info["vesicle"][info["kind"] == "membrane"]) == {0, 1}
    assert set(phantom.particles.group_ids[info["kind"] == "free"]) <= set(simulate.FREE_CLASSES)
    assert len(phantom.vesicles) == 2 and len(phantom.filaments) == 1 and len(phantom.gold) == 2
    for c, t in phantom.templates.items():
        assert t.ndim == 3 and len(set(t.shape)) == 1 and t.min() >= 0


def test_same_seed_same_phantom_other_seed_differs():
    kw = dict(shape=(40, 64, 64), n_particles=6, n_vesicles=0, snr=1.0)
    a = simulate_tomogram(seed=11, **kw)
    b = simulate_tomogram(seed=11, **kw)
    c = simulate_tomogram(seed=12, **kw)
    assert np.array_equal(a.tomogram, b.tomogram)
    assert np.array_equal(a.particles.positions, b.particles.positions)
    assert not np.allclose(a.particles.positions, c.particles.positions)


def test_templates_are_centred_on_their_box_centre():
    for c in simulate.PARTICLE_CLASSES:
        t = simulate.particle_template(c, 10.0)
        com = np.array(ndimage.center_of_mass(t))
        assert np.abs(com - t.shape[0] // 2).max() < 0.05


def _rendered(phantom, k):
    """Slices and own density of particle k, re-rendered from the truth."""
    c = int(phantom.particles.group_ids[k])
    shape_obj, _, radius = _centered_shape(simulate.PARTICLE_CLASSES[c]["primitives"],
                                                    phantom.voxel_size)
    return _render(shape_obj, phantom.particles.positions[k],
                            phantom.particles.matrices[k, :3, :3], phantom.voxel_size, radius,
                            phantom.clean.shape)


def test_particles_do_not_overlap(phantom):
    # every particle's solid part (density > 0.5) is disjoint from every other's
    count = np.zeros(phantom.clean.shape, np.int16)
    for k in range(len(phantom.particles)):
        box, dens = _rendered(phantom, k)
        count[box] += dens > 0.5
    assert count.max() == 1
    # and free particles stay clear of membranes, gold and filament axes
    others = np.zeros(phantom.clean.shape, np.float32)
    for ves in phantom.vesicles:
        _paste_vesicle(others, ves, 0.6)
    for g in phantom.gold:
        _paste_spheres(others, g["center"], g["radius"], 1.0, 0.5)
    for axis, info in zip(phantom.filaments, phantom.filament_info):
        _paste_spheres(others, axis[::2], 1.0, 1.0, 0.5)
    for k in np.flatnonzero(phantom.particle_info["kind"] == "free"):
        box, dens = _rendered(phantom, k)
        assert not np.any((dens > 0.5) & (others[box] > 0.5)), k


def test_pasted_particles_are_the_rotated_templates_at_the_recorded_centres(plain):
    clean = plain.clean - np.float32(plain.params["ice_density"])
    for k in np.flatnonzero(plain.particle_info["kind"] == "free"):
        c = int(plain.particles.group_ids[k])
        t = plain.templates[c]
        h = t.shape[0] // 2
        zz, yy, xx = np.nonzero(t > 0.05)
        r = np.stack([xx, yy, zz], 1) - h                     # canonical offsets (x, y, z)
        R = plain.particles.matrices[k, :3, :3]
        x = plain.particles.positions[k] + r @ R.T            # position + R r
        sampled = ndimage.map_coordinates(clean, x[:, ::-1].T, order=1)
        # linear interpolation of a ~1-voxel-edged density costs a few per cent
        assert np.corrcoef(sampled, t[zz, yy, xx])[0, 1] > 0.95, k


def test_isolated_particle_centroid_is_its_recorded_position():
    ph = simulate_tomogram(shape=(64, 96, 96), n_particles=3, n_vesicles=0, tilt_range=None,
                           ctf=False, thickness_gradient=False, background_amplitude=0.0,
                           contrast="dark", seed=5)
    density = -ph.clean - np.float32(ph.params["ice_density"])   # dark: negate back
    pos = ph.particles.positions
    for k in range(len(pos)):
        r = ph.particle_info["diameter"][k] / 2
        others = np.delete(np.arange(len(pos)), k)
        gaps = np.linalg.norm(pos[others] - pos[k], axis=1) - r - \
            ph.particle_info["diameter"][others] / 2
        if gaps.min() < 2:
            continue                      # a neighbour would leak into the box
        lo = np.floor(pos[k] - r - 1).astype(int)
        hi = np.ceil(pos[k] + r + 2).astype(int)
        box = density[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
        com = np.array(ndimage.center_of_mass(np.clip(box, 0, None)))[::-1] + lo
        assert np.linalg.norm(com - pos[k]) < 0.5


def test_membrane_protein_axes_are_outward_vesicle_normals(phantom):
    info = phantom.particle_info
    for k in np.flatnonzero(info["kind"] == "membrane"):
        ves = phantom.vesicles[info["vesicle"][k]]
        z_axis = phantom.particles.matrices[k, :3, 2]
        foot = phantom.particles.positions[k] - info["offset"][k] * z_axis
        c, a, R = (np.asarray(ves[n], float) for n in ("center", "semi_axes", "rotation"))
        assert np.linalg.norm(((foot - c) @ R) / a) == pytest.approx(1, abs=1e-9)
        assert angle_between(z_axis, vesicle_normals(ves, foot)[0]) < 1.0
        assert (foot - c) @ z_axis > 0                                  # outward
        # the body sits outside the outer leaflet
        assert info["offset"][k] > ves["thickness"] / 2


def test_vesicle_surface_points_lie_on_the_ellipsoid_with_outward_normals():
    rng = np.random.default_rng(0)
    ves = dict(center=np.array([40.0, 50, 30]), semi_axes=np.array([20.0, 14, 9]),
               rotation=euler_zxz_to_matrix(30, 40, 50), thickness=4.0)
    pts, normals = vesicle_surface_points(ves, 4000, rng)
    q = (pts - ves["center"]) @ ves["rotation"]
    assert np.allclose(np.linalg.norm(q / ves["semi_axes"], axis=1), 1)
    assert np.allclose(np.linalg.norm(normals, axis=1), 1)
    assert np.all(((pts - ves["center"]) * normals).sum(1) > 0)
    assert np.allclose(normals, vesicle_normals(ves, pts))
    # uniform over the area: the points' mean is the centre (SE ~ 0.2 voxel)
    assert np.linalg.norm(pts.mean(0) - ves["center"]) < 1.0
    moved, _ = vesicle_surface_points(ves, 10, np.random.default_rng(1), offset=3.0)
    base, n = vesicle_surface_points(ves, 10, np.random.default_rng(1))
    assert np.allclose(moved, base + 3 * n)


def test_missing_wedge_is_empty_in_fourier_space(phantom):
    power = np.abs(sfft.rfftn(phantom.tomogram)) ** 2
    nz, ny, nx = SHAPE
    kz = sfft.fftfreq(nz)[:, None, None]
    kx = sfft.rfftfreq(nx)[None, None, :]
    angle = np.degrees(np.arctan2(np.abs(kz), kx)) + 0 * sfft.fftfreq(ny)[None, :, None]
    wedge = angle > 62          # tilt range is +-60; stay clear of the edge
    seen = angle < 58
    assert power[wedge].mean() < 1e-10 * power[seen].mean()
    assert np.array_equal(wedge_mask(SHAPE, (-60, 60))[:, 0], (angle[:, 0] <= 60 + 1e-9)
                          | ((kz == 0) & (kx == 0))[:, 0])


def test_noise_has_the_requested_snr():
    kw = dict(shape=SHAPE, n_particles=15, n_vesicles=1, seed=21)
    noisy = simulate_tomogram(snr=0.5, **kw)
    signal = simulate_tomogram(snr=None, **kw).tomogram
    noise = noisy.tomogram - signal
    inside = noisy.sample_mask()
    assert signal[inside].var() / noise.var() == pytest.approx(0.5, rel=0.2)
    # the noise is zero-mean and respects the wedge too
    assert abs(noise.mean()) < 0.05 * noise.std()


def test_dark_contrast_makes_particles_darker_than_ice(plain):
    dark = simulate_tomogram(shape=SHAPE, n_particles=12, n_vesicles=1, proteins_per_vesicle=6,
                             tilt_range=None, snr=None, ctf=False, thickness_gradient=False,
                             background_amplitude=0.0, contrast="dark", seed=3)
    assert np.array_equal(dark.clean, -plain.clean)
    centres = np.round(plain.particles.positions).astype(int)
    at_particles = dark.clean[centres[:, 2], centres[:, 1], centres[:, 0]]
    ice = np.median(dark.clean[dark.sample_mask()])
    assert np.all(at_particles < ice)
    assert np.array_equal(dark.templates[1], plain.templates[1]) and plain.templates[1].max() > 0.9
    # still true after the wedge and the (phase-flipped) CTF band-pass: the
    # filtered particle centres sit below the slab's median (the ring's centre
    # is a hole, hence "most")
    filtered = simulate_tomogram(shape=SHAPE, n_particles=12, n_vesicles=1, snr=None, seed=3)
    c = np.round(filtered.particles.positions).astype(int)
    values = filtered.tomogram[c[:, 2], c[:, 1], c[:, 0]]
    assert np.mean(values < np.median(filtered.tomogram[filtered.sample_mask()])) > 0.8


def test_content_lies_inside_the_ice_slab_whose_thickness_varies(phantom, plain):
    z_bot, z_top = phantom.ice_bounds
    pos = phantom.particles.positions
    j, i = np.round(pos[:, 1]).astype(int), np.round(pos[:, 0]).astype(int)
    free = phantom.particle_info["kind"] == "free"
    assert np.all((pos[free, 2] >= z_bot[j, i][free]) & (pos[free, 2] <= z_top[j, i][free]))
    thickness = z_top - z_bot
    assert thickness.max() - thickness.min() > 0.3 * thickness.mean()
    flat = plain.ice_bounds[1] - plain.ice_bounds[0]
    assert np.ptp(flat) == 0
    # above and below the lamella the clean volume is empty (vacuum)
    assert np.abs(plain.clean[0]).max() < 1e-3 and np.abs(plain.clean[-1]).max() < 1e-3


def test_gold_is_dense_and_filaments_follow_their_axes(phantom):
    density = -phantom.clean                          # dark phantom
    ice = np.median(density[phantom.sample_mask()])
    for g in phantom.gold:
        x, y, z = np.round(g["center"]).astype(int)
        assert density[z, y, x] > ice + 4
    axis = phantom.filaments[0]
    near_axis = ndimage.map_coordinates(density, axis[:, ::-1].T, order=1)
    assert np.median(near_axis) > ice + 0.5          # actin subunits cover the axis
    assert phantom.filament_info[0]["type"] == "actin"


def test_save_and_load_truth_round_trip(phantom, tmp_path):
    mrc_path, json_path, csv_path = phantom.save(tmp_path, "lamella1", save_clean=True,
                                                 save_templates=True)
    with mrcfile.open(tmp_path / "lamella1_clean.mrc") as mrc:
        assert np.array_equal(mrc.data, phantom.clean)
    with mrcfile.open(tmp_path / "lamella1_template_5.mrc") as mrc:
        assert np.array_equal(mrc.data, phantom.templates[5])
    with mrcfile.open(mrc_path) as mrc:
        assert np.array_equal(mrc.data, phantom.tomogram)
        assert float(mrc.voxel_size.x) == pytest.approx(10.0)
    picks, info = load_truth(json_path)
    assert set(picks.tomo_ids) == {"lamella1"} == set(phantom.particles.tomo_ids)
    assert np.allclose(picks.positions, phantom.particles.positions)
    assert np.allclose(picks.matrices, phantom.particles.matrices, atol=1e-12)
    assert np.array_equal(picks.group_ids, phantom.particles.group_ids)
    assert picks.voxel_size == 10.0 and info["shape"] == SHAPE
    assert np.allclose(info["vesicles"][1]["semi_axes"], phantom.vesicles[1]["semi_axes"])
    assert np.allclose(info["filaments"][0], phantom.filaments[0])
    assert np.allclose(info["gold"][0]["center"], phantom.gold[0]["center"])
    assert np.array_equal(info["particle_info"]["kind"], phantom.particle_info["kind"])
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["tomoId", "x", "y", "z", "groupId", "tdrot", "tilt", "narot"]
    assert len(rows) == len(phantom.particles)
    euler = np.array([[float(r[k]) for k in ("tdrot", "tilt", "narot")] for r in rows])
    R = dynamo_euler_to_matrix(*euler.T)
    assert np.allclose(R[:, :, 2], phantom.particles.matrices[:, :3, 2], atol=1e-3)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="contrast"):
        simulate_tomogram(contrast="grey")
    with pytest.raises(ValueError, match="tilt_range"):
        simulate_tomogram(tilt_range=(60, -60))
    with pytest.raises(ValueError, match="n_particles"):
        simulate_tomogram(n_particles=-1)
    with pytest.raises(ValueError, match="n_particles=500"):
        simulate_tomogram(shape=(32, 48, 48), n_particles=500, n_vesicles=0, max_attempts=50)
    with pytest.raises(ValueError, match="truth file"):
        load_truth("/nonexistent/x_truth.json")


def test_ctf_band_pass_attenuates_low_frequencies_and_has_zeros():
    k = np.linspace(0, 0.1, 20001)                      # 1/Å
    h = simulate.ctf_band_pass(k, defocus=3.0, bfactor=0.0)
    assert h[0] == pytest.approx(0.07)                  # amplitude contrast only
    assert h.max() == pytest.approx(1.0, abs=1e-3)
    # zeros where sqrt(1 - A^2) sin(chi) = -A cos(chi): chi = n pi - atan(A / sqrt(1 - A^2))
    wavelength = 0.019687                                 # Å at 300 kV
    chi0 = np.pi - np.arctan(0.07 / np.sqrt(1 - 0.07 ** 2))
    k0 = np.sqrt(chi0 / (np.pi * wavelength * 3e4))
    assert simulate.ctf_band_pass(k0, defocus=3.0, bfactor=0.0) < 1e-3
    minima = np.flatnonzero((h[1:-1] < h[:-2]) & (h[1:-1] < h[2:])) + 1
    assert len(minima) >= 4 and k[minima[0]] == pytest.approx(k0, rel=1e-3)


def test_drift_is_a_linear_ramp_across_x_and_z():
    kwargs = dict(shape=(32, 40, 48), n_particles=4, n_vesicles=0, snr=None, seed=2)
    flat = simulate_tomogram(**kwargs).tomogram
    drift = simulate_tomogram(intensity_drift=2.0, **kwargs).tomogram
    ramp = (drift - flat).astype(np.float64)
    # linear in x and z, constant along y, peak-to-peak 2 signal standard deviations
    assert np.abs(ramp - ramp[:, :1]).max() < 1e-4 * np.abs(ramp).max()
    z, x = np.indices(ramp[:, 0].shape)
    design = np.column_stack([np.ones(z.size), z.ravel(), x.ravel()])
    coef, res, *_ = np.linalg.lstsq(design, ramp[:, 0].ravel(), rcond=None)
    assert res[0] < 1e-8 * (ramp ** 2).sum()
    assert abs(coef[1]) > 0 and abs(coef[2]) > 0
    with pytest.raises(ValueError, match="intensity_drift"):
        simulate_tomogram(intensity_drift=-1, **kwargs)
