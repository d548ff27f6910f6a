"""Subtomogram extraction: exact boxes, options, out-of-bounds policy, sub-voxel shifts."""
import numpy as np
import pytest

from tomopick.core import extraction as ex
from tomopick.core.alignment import apply_alignment
from tomopick.core.formats.mrc import read_mrc, write_mrc
from tomopick.core.rotations import euler_zxz_to_matrix, homogeneous


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(1)
    return rng.standard_normal((40, 50, 60)).astype(np.float32)  # z, y, x


def _slice(vol, center, n):
    x, y, z = (int(v) - n // 2 for v in center)
    return vol[z:z + n, y:y + n, x:x + n]


def _gaussian_volume(shape, center, sigmas, rotation=np.eye(3)):
    """Anisotropic Gaussian (x, y, z sigmas along the rotated axes), sampled exactly."""
    z, y, x = np.indices(shape, dtype=float)
    d = np.stack([x - center[0], y - center[1], z - center[2]], -1)
    local = d @ rotation  # coordinates in the particle frame: R^T d
    return np.exp(-0.5 * ((local / np.asarray(sigmas)) ** 2).sum(-1)).astype(np.float32)


def _centroid_xyz(box):
    z, y, x = np.indices(box.shape, dtype=float)
    w = np.clip(box, 0, None)
    return np.array([(w * x).sum(), (w * y).sum(), (w * z).sum()]) / w.sum()


@pytest.mark.parametrize("n", [8, 9])
def test_integer_positions_give_exact_numpy_slices_from_mmap(tmp_path, volume, n):
    path = tmp_path / "tomo.mrc"
    write_mrc(path, volume, voxel_size=10.0)
    mm = read_mrc(path, mmap=True)
    positions = np.array([[10, 12, 8], [30, 25, 20], [45, 40, 30], [20, 20, 11]], float)
    result = ex.extract_subtomograms(mm, positions, n)
    assert result.n_skipped == 0 and not result.padded.any()
    for box, row in zip(result.boxes, result.index):
        np.testing.assert_array_equal(box, _slice(volume, positions[row], n))
    np.testing.assert_array_equal(np.sort(result.index), np.arange(4))
    np.testing.assert_array_equal(result.matrices, np.broadcast_to(np.eye(4), (4, 4, 4)))


@pytest.mark.parametrize("slab_bytes", [1, 1 << 30])
def test_dense_slabs_and_sparse_reads_give_the_same_exact_boxes(volume, slab_bytes):
    rng = np.random.default_rng(2)
    n = 10
    positions = np.column_stack([rng.integers(5, 55, 300), rng.integers(5, 45, 300),
                                 rng.integers(5, 35, 300)]).astype(float)
    result = ex.extract_subtomograms(volume, positions, n, slab_bytes=slab_bytes)
    assert len(result.index) == 300
    for box, row in zip(result.boxes, result.index):
        np.testing.assert_array_equal(box, _slice(volume, positions[row], n))


def test_inversion_negates_the_box(volume):
    positions = [[20, 20, 20]]
    plain = ex.extract_subtomograms(volume, positions, 12).boxes
    inverted = ex.extract_subtomograms(volume, positions, 12, invert=True).boxes
    np.testing.assert_array_equal(inverted, -plain)


def test_normalize_gives_zero_mean_unit_std_in_the_box(volume):
    boxes = ex.extract_subtomograms(3.0 * volume + 7.0, [[20, 20, 20], [30, 25, 15]], 12,
                                    normalize="normalize").boxes
    np.testing.assert_allclose(boxes.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(boxes.std(axis=(1, 2, 3)), 1, atol=1e-5)


def test_edge_mean_gives_zero_mean_unit_std_on_the_box_edge(volume):
    vol = 3.0 * volume + 7.0
    vol[15:25, 15:25, 15:25] += 50.0  # a bright particle must not set the scale
    boxes = ex.extract_subtomograms(vol, [[20, 20, 20]], 16, normalize="edge mean").boxes
    edge = ex.edge_mask(16)
    np.testing.assert_allclose(boxes[0][edge].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(boxes[0][edge].std(), 1, atol=1e-5)
    # the particle is ~50/3 background standard deviations above the edge
    assert boxes[0][8, 8, 8] > 10


def test_down_factor_two_halves_the_box_and_keeps_the_particle_centred():
    center = (30.3, 29.8, 31.4)
    vol = _gaussian_volume((64, 64, 64), center, (3, 3, 3))
    result = ex.extract_subtomograms(vol, [center], 32, down_factor=2.0)
    assert result.boxes.shape == (1, 16, 16, 16)
    assert result.scale == 2.0
    # the remainder (0.3, -0.2, 0.4) source voxels is (0.15, -0.1, 0.2) output voxels
    np.testing.assert_allclose(result.matrices[0, :3, 3], [0.15, -0.1, 0.2], atol=1e-9)
    expected = np.array([8, 8, 8]) + result.matrices[0, :3, 3]
    np.testing.assert_allclose(_centroid_xyz(result.boxes[0]), expected, atol=0.05)
    # Fourier cropping keeps the mean of a band-limited box
    raw = ex.extract_subtomograms(vol, [center], 32).boxes[0]
    assert abs(result.boxes[0].mean() - raw.mean()) < 1e-3 * raw.max()


def test_fourier_crop_of_an_odd_box_keeps_the_centre_voxel():
    box = _gaussian_volume((33, 33, 33), (16, 16, 16), (3, 3, 3))[None]
    small = ex.fourier_crop_boxes(box, 16)
    np.testing.assert_allclose(_centroid_xyz(small[0]), [8, 8, 8], atol=0.02)


def test_out_of_bounds_boxes_are_skipped_and_counted(volume):
    positions = [[2, 20, 20], [30, 25, 20], [58, 25, 20], [30, 25, 38]]
    result = ex.extract_subtomograms(volume, positions, 10, out_of_bounds="skip")
    assert result.n_skipped == 3
    np.testing.assert_array_equal(result.index, [1])


def test_out_of_bounds_boxes_are_padded_with_the_tomogram_mean(volume):
    positions = [[2, 20, 20], [30, 25, 20]]
    result = ex.extract_subtomograms(volume, positions, 10, out_of_bounds="pad")
    assert result.n_skipped == 0
    np.testing.assert_array_equal(result.padded[np.argsort(result.index)], [True, False])
    box = result.boxes[list(result.index).index(0)]
    # x runs from -3 to 6: three columns outside are the mean, the rest is the tomogram
    np.testing.assert_allclose(box[:, :, :3], volume.mean(), rtol=1e-5)
    np.testing.assert_array_equal(box[:, :, 3:], volume[15:25, 15:25, 0:7])


def test_a_box_entirely_outside_is_an_error_naming_the_position(volume):
    with pytest.raises(ValueError, match="position 0"):
        ex.extract_subtomograms(volume, [[-50, 20, 20]], 10, out_of_bounds="pad")


def test_bad_parameters_are_rejected_with_their_value(volume):
    with pytest.raises(ValueError, match="box size"):
        ex.extract_subtomograms(volume, [[20, 20, 20]], 0)
    with pytest.raises(ValueError, match="downsampling factor"):
        ex.extract_subtomograms(volume, [[20, 20, 20]], 10, down_factor=0.5)
    with pytest.raises(ValueError, match="not finite"):
        ex.extract_subtomograms(volume, [[np.nan, 20, 20]], 10)


def test_fractional_positions_become_shifts_and_rotations_are_kept(volume):
    R = euler_zxz_to_matrix(30, 60, -45)
    M = homogeneous(R, (1.0, -2.0, 0.5))
    result = ex.extract_subtomograms(volume, [[20.3, 19.6, 20.5]], 10, matrices=[M])
    np.testing.assert_allclose(result.matrices[0, :3, :3], R)
    # z remainder 20.5 -> centre 21, remainder -0.5
    np.testing.assert_allclose(result.matrices[0, :3, 3], [1.3, -2.4, 0.0], atol=1e-12)
    np.testing.assert_array_equal(result.boxes[0], _slice(volume, (20, 20, 21), 10))


@pytest.mark.parametrize("down_factor", [1.0, 2.0])
def test_particle_at_subvoxel_position_is_centred_after_apply_alignment(down_factor):
    # elongated Gaussian along the particle z-axis, at a non-integer position
    R = euler_zxz_to_matrix(40, 70, 10)
    rng = np.random.default_rng(3)
    centers = 32 + rng.uniform(-0.5, 0.5, (4, 3))
    for center in centers:
        vol = _gaussian_volume((64, 64, 64), center, (1.8, 1.8, 4.0), R)
        result = ex.extract_subtomograms(vol, [center], 40, matrices=[homogeneous(R)],
                                         down_factor=down_factor)
        aligned = apply_alignment(result.boxes, result.matrices)[0]
        m = aligned.shape[0]
        np.testing.assert_allclose(_centroid_xyz(aligned), [m // 2] * 3, atol=0.1)
        # and the long axis is along z of the box
        z, y, x = np.indices(aligned.shape) - m // 2
        w = np.clip(aligned, 0, None)
        spread = [np.sqrt((w * c ** 2).sum() / w.sum()) for c in (x, y, z)]
        assert spread[2] > 1.8 * max(spread[0], spread[1])


def test_volume_mean_streams_in_slabs(volume):
    assert abs(ex.volume_mean(volume, chunk_bytes=1) - volume.mean(dtype=np.float64)) < 1e-9


class _RecordingVolume:
    """A read-only volume that records how many voxels each slicing reads."""

    def __init__(self, array):
        self._array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim
        self.voxels_read = 0

    def __getitem__(self, key):
        part = self._array[key]
        self.voxels_read += part.size
        return part


def test_a_few_boxes_read_only_their_own_voxels(volume):
    recording = _RecordingVolume(volume)
    positions = [[10, 12, 8], [45, 40, 30], [30, 25, 20]]
    result = ex.extract_subtomograms(recording, positions, 8)
    assert len(result.index) == 3
    assert recording.voxels_read == 3 * 8 ** 3  # never a slab, never the whole tomogram
    for box, row in zip(result.boxes, result.index):
        np.testing.assert_array_equal(box, _slice(volume, positions[row], 8))


# ------------------------------------------------------------ chunk boundaries
@pytest.mark.parametrize("n_particles", [ex.CHUNK - 1, ex.CHUNK, ex.CHUNK + 1])
def test_chunks_at_the_boundary_give_each_particle_exactly_its_own_extraction(n_particles):
    # around CHUNK particles: one chunk, then two; boxes near the edges are padded
    # with the tomogram mean, downsampled and normalised in each chunk, and every
    # one must equal the particle extracted on its own, bit for bit
    rng = np.random.default_rng(n_particles)
    volume = rng.standard_normal((24, 30, 36)).astype(np.float32)
    positions = rng.uniform([-1, -1, -1], [37, 31, 25], (n_particles, 3))
    matrices = homogeneous(euler_zxz_to_matrix(*rng.uniform(0, 180, (3, n_particles))),
                           rng.normal(0, 1, (n_particles, 3)))
    options = dict(down_factor=1.5, invert=True, normalize="edge mean", out_of_bounds="pad",
                   workers=2)
    chunks = list(ex.extract_in_chunks(volume, positions, 6, matrices=matrices, **options))
    assert len(chunks) == (1 if n_particles <= ex.CHUNK else 2)
    assert max(len(rows) for rows, _ in chunks) <= ex.CHUNK
    rows = np.concatenate([rows for rows, _ in chunks])
    np.testing.assert_array_equal(np.sort(rows), np.arange(n_particles))
    assert np.all(np.diff(positions[rows, 2]) >= 0)            # z order
    pad_value = ex.volume_mean(volume)
    for chunk_rows, result in chunks:
        assert sorted(result.index) == list(range(len(chunk_rows)))   # 'pad' skips nothing
        for row, box, matrix, padded in zip(chunk_rows[result.index], result.boxes,
                                            result.matrices, result.padded):
            alone = ex.extract_subtomograms(volume, positions[[row]], 6,
                                            matrices=matrices[[row]], pad_value=pad_value,
                                            **options)
            np.testing.assert_array_equal(box, alone.boxes[0])
            np.testing.assert_array_equal(matrix, alone.matrices[0])
            assert padded == alone.padded[0]


def test_chunks_under_skip_leave_out_exactly_the_boxes_outside():
    rng = np.random.default_rng(3)
    volume = rng.standard_normal((20, 20, 20)).astype(np.float32)
    positions = rng.uniform(-2, 22, (ex.CHUNK + 1, 3))
    kept = sum(len(result.index) for _, result in
               ex.extract_in_chunks(volume, positions, 4, workers=1))
    assert kept == ex.count_boxes(volume.shape, positions, 4, "skip") < ex.CHUNK + 1
