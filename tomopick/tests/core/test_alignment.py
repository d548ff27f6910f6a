"""Apply alignment: Scipion matrix convention, exact trilinear, no wrap-around, averages."""
import numpy as np
import pytest
from scipy import ndimage

from tomopick.core import alignment as al
from tomopick.core.rotations import euler_zxz_to_matrix, homogeneous, rotation_from_z_axis


def _smooth_box(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal((n, n, n)), 1.5).astype(np.float32)


def _template(n=32):
    """Asymmetric particle in canonical orientation: a body plus a knob on +z and one on +x."""
    z, y, x = np.indices((n, n, n), dtype=float) - n // 2
    body = np.exp(-0.5 * (x ** 2 + y ** 2 + (z / 1.6) ** 2) / 3.0 ** 2)
    knob_z = np.exp(-0.5 * (x ** 2 + y ** 2 + (z - 7) ** 2) / 1.5 ** 2)
    knob_x = 0.6 * np.exp(-0.5 * ((x - 5) ** 2 + y ** 2 + z ** 2) / 1.5 ** 2)
    return (body + knob_z + knob_x).astype(np.float32)


def _place(template, matrix):
    """The subtomogram s with s(r) = template(R^T (r - t)): exactly invertible by alignment."""
    R, t = matrix[:3, :3], matrix[:3, 3]
    inverse = homogeneous(R.T, -R.T @ t)
    return ndimage.affine_transform(template, *al._index_transform(inverse, template.shape),
                                    order=3, mode="grid-constant").astype(np.float32)


def _correlation(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_linear_equals_scipy_affine_transform_grid_constant():
    box = _smooth_box(28)
    rng = np.random.default_rng(1)
    for seed in range(4):
        M = homogeneous(euler_zxz_to_matrix(*rng.uniform(-180, 180, 3)), rng.uniform(-3, 3, 3))
        A, offset = al._index_transform(M, box.shape)
        reference = ndimage.affine_transform(box, A, offset, order=1, mode="grid-constant")
        np.testing.assert_allclose(al.align_box(box, M), reference, atol=1e-5)


def test_non_cubic_boxes_follow_the_same_convention():
    box = np.random.default_rng(2).standard_normal((12, 20, 30)).astype(np.float32)
    M = homogeneous(euler_zxz_to_matrix(10, 20, 30), (0.5, 1.0, -2.0))
    A, offset = al._index_transform(M, box.shape)
    reference = ndimage.affine_transform(box, A, offset, order=1, mode="grid-constant")
    np.testing.assert_allclose(al.align_box(box, M), reference, atol=1e-5)


def test_identity_returns_the_box():
    box = _smooth_box()
    np.testing.assert_allclose(al.align_box(box, np.eye(4)), box, atol=1e-6)


def test_shift_reads_the_box_at_r_plus_t_and_never_wraps():
    box = _smooth_box() + 5.0  # no zeros in the box
    aligned = al.align_box(box, homogeneous(shift=(10, -3, 2)))
    # aligned[z, y, x] = box[z + 2, y - 3, x + 10]
    np.testing.assert_allclose(aligned[:-2, 3:, :-10], box[2:, :-3, 10:], atol=1e-6)
    # what came from outside the box is zero, not the opposite edge
    assert np.all(aligned[:, :, -10:] == 0)
    assert np.all(aligned[:, :3, :] == 0)
    assert np.all(aligned[-2:, :, :] == 0)


def test_rotation_about_the_box_centre_index_n_over_2():
    n = 32
    box = np.zeros((n, n, n), np.float32)
    box[16, 16, 24] = 1.0  # at (x, y, z) = (8, 0, 0) from the centre
    R = euler_zxz_to_matrix(90, 0, 0)  # 90 degrees about z: R e_x = e_y
    # aligned(r) = box(R r): the voxel at R^T (8, 0, 0) = (0, -8, 0) lights up
    aligned = al.align_box(box, homogeneous(R))
    assert np.unravel_index(np.argmax(aligned), aligned.shape) == (16, 8, 16)
    assert aligned.max() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("interpolation", ["linear", "cubic"])
def test_aligned_particle_matches_the_canonical_template(interpolation):
    template = _template()
    rng = np.random.default_rng(4)
    for _ in range(3):
        M = homogeneous(euler_zxz_to_matrix(*rng.uniform(-180, 180, 3)), rng.uniform(-2, 2, 3))
        aligned = al.align_box(_place(template, M), M, interpolation)
        assert _correlation(aligned, template) > 0.98


def test_membrane_normal_ends_along_plus_z():
    # a slab perpendicular to the normal with a protein knob on its outer side
    n = 32
    z, y, x = np.indices((n, n, n), dtype=float) - n // 2
    canonical = (np.exp(-0.5 * (z / 1.5) ** 2)
                 + 1.5 * np.exp(-0.5 * (x ** 2 + y ** 2 + (z - 5) ** 2) / 2.0 ** 2))
    canonical = canonical.astype(np.float32)
    normal = np.array([0.3, -0.8, 0.5])
    M = homogeneous(rotation_from_z_axis(normal, in_plane=25.0))
    aligned = al.align_box(_place(canonical, M), M, "linear")
    inner = aligned[:, 8:24, 8:24]
    profile = inner.mean(axis=(1, 2))
    # the membrane at the centre plane, the protein above it (+z) not below
    assert abs(int(np.argmax(profile)) - n // 2) <= 1
    assert profile[n // 2 + 5] > 2 * profile[n // 2 - 5]


def test_cubic_is_at_least_as_accurate_as_linear_on_smooth_data():
    template = _template()
    M = homogeneous(euler_zxz_to_matrix(33, 71, -12), (0.4, -0.3, 0.7))
    placed = _place(template, M)
    errors = {kind: np.abs(al.align_box(placed, M, kind) - template).mean()
              for kind in al.INTERPOLATIONS}
    assert errors["cubic"] <= errors["linear"]


def test_batch_with_threads_equals_box_by_box():
    boxes = np.stack([_smooth_box(24, seed) for seed in range(6)])
    rng = np.random.default_rng(5)
    M = homogeneous(euler_zxz_to_matrix(*rng.uniform(-180, 180, (3, 6))),
                    rng.uniform(-2, 2, (6, 3)))
    batch = al.apply_alignment(boxes, M, workers=3)
    for box, matrix, got in zip(boxes, M, batch):
        np.testing.assert_array_equal(got, al.align_box(box, matrix))


def test_average_of_aligned_noisy_copies_reaches_the_noise_limited_correlation():
    template = _template()
    rng = np.random.default_rng(6)
    count, sigma = 16, 0.3
    M = homogeneous(euler_zxz_to_matrix(*rng.uniform(-180, 180, (3, count))),
                    rng.uniform(-1.5, 1.5, (count, 3)))
    boxes = np.stack([_place(template, m) for m in M])
    boxes += rng.normal(0, sigma, boxes.shape).astype(np.float32)
    average = al.average_aligned(boxes, M, batch=5)
    # a perfect average keeps noise of variance sigma^2 / count: its expected
    # correlation with the template is sqrt(S / (S + sigma^2 / count))
    limit = np.sqrt(template.var() / (template.var() + sigma ** 2 / count))
    assert _correlation(average, template) > 0.95 * limit
    # without alignment the knobs blur out (the round body alone still correlates ~0.7)
    assert _correlation(average, template) > _correlation(boxes.mean(axis=0), template) + 0.15


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="interpolation"):
        al.align_box(_smooth_box(8), np.eye(4), "nearest")
    with pytest.raises(ValueError, match="4x4"):
        al.apply_alignment(np.zeros((2, 8, 8, 8)), np.eye(4)[None])
    with pytest.raises(ValueError, match="empty"):
        al.average_aligned(np.zeros((0, 8, 8, 8)), np.zeros((0, 4, 4)))


# -- round trip on the simulated phantom: extract at the true positions with the
#    true orientations, apply alignment, average -------------------------------

def _phantom(**kwargs):
    from tomopick.core.simulate import simulate_tomogram
    return simulate_tomogram(shape=(64, 96, 96), n_particles=12, n_vesicles=1,
                             proteins_per_vesicle=16, seed=1, **kwargs)


def _class_averages(phantom, box_size=None):
    """(class id, kind, template, aligned average, unaligned average, sphere mask) per class."""
    from tomopick.core.extraction import extract_subtomograms
    picks, info = phantom.particles, phantom.particle_info
    # the orientation only: the coordinates' positions are the particle centres
    matrices = homogeneous(picks.matrices[:, :3, :3])
    for class_id, template in sorted(phantom.templates.items()):
        rows = np.flatnonzero(picks.group_ids == class_id)
        if len(rows) < 2:
            continue
        n = box_size or template.shape[0]
        # contrast 'dark': invert so particles are positive like the templates
        result = extract_subtomograms(phantom.tomogram, picks.positions[rows], n,
                                      matrices=matrices[rows], invert=True, out_of_bounds="pad")
        average = al.average_aligned(result.boxes, result.matrices)
        z, y, x = np.indices(template.shape) - template.shape[0] // 2
        mask = x ** 2 + y ** 2 + z ** 2 <= (info["diameter"][rows[0]] / 2) ** 2
        yield (class_id, info["kind"][rows[0]], template, average, result.boxes.mean(axis=0),
               mask, info["offset"][rows])


def test_phantom_round_trip_average_matches_the_template_without_noise():
    # noise-free, no wedge/CTF, no ice/background: only neighbours reaching into
    # the particle sphere keep the correlation below 1
    phantom = _phantom(snr=None, tilt_range=None, ctf=False, background_amplitude=0.0,
                       ice_density=0.0)
    free = [c for c in _class_averages(phantom) if c[1] == "free"]
    assert len(free) >= 2
    for class_id, _, template, average, unaligned, mask, _ in free:
        assert _correlation(average[mask], template[mask]) > 0.9, class_id
        assert _correlation(average[mask], template[mask]) > \
            _correlation(unaligned[mask], template[mask]) + 0.15, class_id


def test_phantom_round_trip_with_noise_wedge_and_ctf_beats_the_unaligned_average():
    phantom = _phantom(snr=0.5)
    classes = list(_class_averages(phantom))
    assert len(classes) >= 3
    for class_id, _, template, average, unaligned, mask, _ in classes:
        aligned_cc = _correlation(average[mask], template[mask])
        unaligned_cc = _correlation(unaligned[mask], template[mask])
        # measured 0.65-0.88 against 0.10-0.64 (seed 1)
        assert aligned_cc > unaligned_cc + 0.1, (class_id, aligned_cc, unaligned_cc)
        assert aligned_cc > 0.5, (class_id, aligned_cc)


def test_phantom_membrane_proteins_align_membrane_horizontal_protein_on_plus_z():
    phantom = _phantom(snr=None, tilt_range=None, ctf=False, background_amplitude=0.0,
                       ice_density=0.0)
    n = 32
    membrane = [c for c in _class_averages(phantom, box_size=n) if c[1] == "membrane"]
    assert membrane
    _, _, _, average, _, _, offsets = membrane[0]
    centre = n // 2
    mid_plane = centre - float(np.median(offsets))  # bilayer mid-plane below the centre
    z, y, x = np.indices(average.shape) - centre
    radius = np.sqrt(x ** 2 + y ** 2)

    def profile(lo, hi):
        ring = (radius >= lo) & (radius < hi)
        return np.array([average[k][ring[k]].mean() for k in range(n)])

    heights = np.arange(n)
    slab = np.abs(heights - mid_plane) <= 3.5
    # the phantom's vesicles are small (radius ~14 voxels): look at the membrane
    # near the axis, where its sag is below a voxel
    for lo, hi in ((0, 3), (3, 6)):
        column = profile(lo, hi)
        # a bilayer across the box at one height: perpendicular to z ...
        window = np.where(slab, column, 0.0)
        assert abs((heights * window).sum() / window.sum() - mid_plane) < 1.0, (lo, hi)
        assert column[slab].mean() > 0.3
    # ... and the protein on its +z (outward) side: density on the axis above
    # the membrane, none below it
    axis = profile(0, 3)
    above = axis[int(np.ceil(mid_plane + 3.5)):].sum()
    below = axis[:int(np.floor(mid_plane - 3.5))].sum()
    assert above > 2.0 and above > 20 * below


# ------------------------------------------------------------ batch boundaries
@pytest.mark.parametrize("n_boxes", [al.BATCH - 1, al.BATCH, al.BATCH + 1])
@pytest.mark.parametrize("interpolation", ["linear", "cubic"])
def test_batches_at_the_boundary_align_each_box_exactly_as_alone(n_boxes, interpolation):
    rng = np.random.default_rng(n_boxes)
    boxes = rng.standard_normal((n_boxes, 8, 8, 8)).astype(np.float32)
    matrices = homogeneous(euler_zxz_to_matrix(*rng.uniform(0, 360, (3, n_boxes))),
                           rng.normal(0, 1.5, (n_boxes, 3)))
    # a lazy sequence, as the protocol passes: only one batch is ever read at a time
    read = []

    class Lazy:
        def __len__(self):
            return n_boxes

        def __getitem__(self, rows):
            read.append(len(boxes[rows]))
            return list(boxes[rows])

    batches = list(al.align_in_batches(Lazy(), matrices, interpolation, workers=2))
    assert read == [len(a) for _, a in batches] and max(read) <= al.BATCH
    assert len(batches) == (1 if n_boxes <= al.BATCH else 2)
    assert [start for start, _ in batches] == list(range(0, n_boxes, al.BATCH))
    aligned = np.concatenate([a for _, a in batches])
    alone = np.array([al.align_box(b, m, interpolation) for b, m in zip(boxes, matrices)])
    np.testing.assert_array_equal(aligned, alone)
    average = al.average_aligned(Lazy(), matrices, interpolation, workers=2)
    np.testing.assert_allclose(average, alone.astype(np.float64).mean(axis=0), rtol=0,
                               atol=1e-6)
