"""Real molecular shapes in the simulator (tomopick.core.simulate.maps)."""
import numpy as np

from tomopick.core.rotations import symmetry_matrices
from tomopick.core.simulate import simulate_tomogram
from tomopick.core.simulate.maps import MapShape, map_particle_class, pdb_density
from tomopick.core.template_matching import rotate_templates
from tomopick.tests.shared_data import data_file


def test_pdb_density_of_the_proteasome_is_a_d7_barrel():
    vol = pdb_density(data_file("pdb_3j9i_20S_proteasome.pdb"), 6.0)
    n = vol.shape[0]
    # a ~150 Å long barrel: the envelope spans 120-200 Å along its longest axis
    z, y, x = np.nonzero(vol > 0.2 * vol.max())
    extent = max(np.ptp(a) for a in (x, y, z)) * 6.0
    assert 120 < extent < 200
    # D7 about some axes: find the 7-fold as the axis of least inertia spread
    w = vol[z, y, x]
    pts = np.stack([x, y, z], 1) - n // 2
    cov = (pts * w[:, None]).T @ pts / w.sum()
    evals, evecs = np.linalg.eigh(cov)
    axis = evecs[:, np.argmax(np.abs(evals - np.median(evals)))]
    # rotating by 360/7 about that axis leaves the density nearly unchanged
    from tomopick.core.rotations import axis_angle_to_matrix
    R = axis_angle_to_matrix(axis * 2 * np.pi / 7)
    rot = rotate_templates(vol, R[None], order=1)[0]
    assert np.corrcoef(rot.ravel(), vol.ravel())[0, 1] > 0.9
    assert len(symmetry_matrices("d7")) == 14


def test_map_particles_are_pasted_with_their_recorded_orientation():
    rib = map_particle_class("ribosome80S", data_file("emd3883_80S_ribosome_64px_8.66A.mrc"),
                             None, 20.0)
    assert isinstance(rib["shape"], MapShape)
    ph = simulate_tomogram(shape=(40, 72, 72), voxel_size=20.0, n_particles=3, n_vesicles=0,
                           tilt_range=None, snr=None, ctf=False, particle_classes=[10],
                           extra_classes={10: rib}, background_amplitude=0, ice_density=0.0,
                           contrast="bright", seed=2)
    assert ph.truth_dict()["classes"]["10"]["name"] == "ribosome80S"
    template = ph.templates[10]
    n = template.shape[0]
    for p, M in zip(ph.particles.positions, ph.particles.matrices):
        rot = rotate_templates(template, M[None, :3, :3], order=1)[0]
        x, y, z = np.round(p).astype(int)
        box = ph.clean[z - n // 2:z - n // 2 + n, y - n // 2:y - n // 2 + n,
                       x - n // 2:x - n // 2 + n]
        if box.shape != rot.shape:
            continue
        # the particle is the template turned by R (core convention) at the position
        assert np.corrcoef(box.ravel(), rot.ravel())[0, 1] > 0.9
