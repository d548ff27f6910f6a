"""The viewers: display arrays, napari views rendered offscreen, the Scipion viewer.

Rendering tests run napari on a private Xvfb (Mesa llvmpipe) and check the
screenshots pixel by pixel: markers in their colour where the coordinates
are, arrows along the particle axes, the gallery's central slices. Without
Xvfb they are skipped; the rest runs on Qt's offscreen platform.
"""
import json
import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # replaced by xcb when Xvfb starts
# napari keeps window sizes in its settings: a private file keeps the tests' canvas
# size (and so the pixel geometry they check) independent of earlier sessions
os.environ.setdefault("NAPARI_CONFIG", os.path.join(tempfile.mkdtemp(), "napari.yaml"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import ndimage  # noqa: E402

from tomopick.viewers import display  # noqa: E402


# ------------------------------------------------------------ display arrays
def test_orientation_arrows_start_at_the_particle_and_follow_the_z_axis():
    positions = np.array([[10.0, 20.0, 30.0], [1.0, 2.0, 3.0]])
    matrices = np.tile(np.eye(4), (2, 1, 1))
    matrices[0, :3, :3] = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]  # R @ z = +x
    vectors = display.orientation_vectors(positions, matrices, length=5)
    np.testing.assert_array_equal(vectors[:, 0], [[30, 20, 10], [3, 2, 1]])   # (z, y, x)
    np.testing.assert_allclose(vectors[:, 1], [[0, 0, 5], [5, 0, 0]], atol=1e-12)
    with pytest.raises(ValueError, match="one 3x3 or 4x4 matrix per position"):
        display.orientation_vectors(positions, matrices[:1])


@pytest.mark.parametrize("sigma", [0.8, 2.0])
def test_filtered_volume_slices_equal_filtering_the_whole_volume(sigma):
    volume = np.random.default_rng(1).normal(size=(20, 24, 28)).astype(np.float32)
    lazy = display.FilteredVolume(volume, sigma)
    full = ndimage.gaussian_filter(volume, sigma, mode="nearest")
    for key in [(0,), (10,), (19,), (-1,), (slice(None), 5), (slice(None), slice(None), 27),
                (slice(3, 9), 4)]:
        np.testing.assert_allclose(lazy[key], full[key], rtol=1e-5, atol=1e-5)


def test_contrast_limits_of_a_subsampled_volume_match_the_full_percentiles():
    volume = np.random.default_rng(2).normal(size=(64, 64, 64)).astype(np.float32)
    low, high = display.contrast_limits(volume, (1, 99), max_samples=40_000)
    assert low == pytest.approx(-2.326, abs=0.1) and high == pytest.approx(2.326, abs=0.1)
    assert display.contrast_limits(np.ones((4, 4, 4))) == (0.5, 1.5)


def test_gallery_and_sections_show_the_central_planes():
    volumes = []
    for value in (1.0, 2.0, 3.0):
        v = np.zeros((9, 9, 9), np.float32)
        v[4] = value                 # only the central z plane is non-zero
        volumes.append(v)
    mosaic, origins = display.gallery(volumes, ncols=2, gap=1)
    assert mosaic.shape == (19, 19)
    for value, (r, c) in zip((1.0, 2.0, 3.0), origins):
        np.testing.assert_array_equal(mosaic[r:r + 9, c:c + 9], value)
    bar = np.zeros((8, 10, 12), np.float32)
    bar[4, 5, :] = 1                 # a rod along x through the centre
    panel, origins = display.sections_panel(bar, gap=0)
    xy, xz, yz = (panel[r:r + s[0], c:c + s[1]] for (r, c), s in
                  zip(origins, [(10, 12), (8, 12), (8, 10)]))
    assert xy[5].all() and xy.sum() == 12          # a line in XY
    assert xz[4].all() and xz.sum() == 12          # a line in XZ
    assert yz[4, 5] == 1 and yz.sum() == 1         # a dot in YZ


def test_montage_panels_are_consecutive_slices_around_the_centre():
    volume = np.arange(10)[:, None, None] * np.ones((10, 3, 4))
    mosaic, indices = display.montage(volume, "z", center=0, count=5, ncols=5, gap=0)
    np.testing.assert_array_equal(indices, [0, 1, 2])           # clipped at the edge
    np.testing.assert_array_equal(mosaic[0, ::4][:3], [0, 1, 2])
    _, indices = display.montage(volume, "x", count=3)
    np.testing.assert_array_equal(indices, [1, 2, 3])


def test_colours_separate_groups_and_order_scores():
    colors = display.group_colors([1, 2, 1])
    np.testing.assert_array_equal(colors[0], colors[2])
    assert np.abs(colors[0] - colors[1]).max() > 0.3
    viridis = display.score_colors([0.0, 0.5, 1.0])
    assert viridis[0, 2] > viridis[0, 1] and viridis[2, 1] > viridis[2, 2]  # purple .. yellow


# --------------------------------------------------------- napari views
@pytest.fixture
def views():
    opened = []
    yield opened
    for view in opened:
        view.close()


def _need(renders):
    if not renders:
        pytest.skip("no OpenGL rendering (needs Xvfb + Mesa: see tomopick.viewers.headless)")


def _blob_volume():
    volume = np.zeros((32, 48, 64), np.float32)
    volume[16, 20, 40] = 1000.0
    return ndimage.gaussian_filter(volume, 2.0)


def _colour(view, shot, xyz, radius=1):
    row, col = np.round(view.world_to_canvas(np.asarray(xyz, float)[::-1])).astype(int)
    return shot[row - radius:row + radius + 1, col - radius:col + radius + 1, :3] \
        .reshape(-1, 3).mean(0)


def _ring(view, shot, xyz, colour, tolerance=6):
    """Fraction of the pixels around a coordinate's ring that have ``colour`` (0-255 RGB).

    The ring of a marker of diameter d straddles its edge: pixels between
    0.4 d and 0.6 d from the centre, in canvas pixels.
    """
    center = view.world_to_canvas(np.asarray(xyz, float)[::-1])
    zoom = float(view.viewer.camera.zoom)
    rows, cols = np.indices(shot.shape[:2])
    distance = np.hypot(rows - center[0], cols - center[1]) / (zoom * view.point_size)
    annulus = (distance > 0.4) & (distance < 0.6)
    match = np.abs(shot[..., :3] - np.asarray(colour)).max(axis=-1) <= tolerance
    return match[annulus].mean()


def test_coordinates_are_drawn_in_their_group_colour_on_their_slice(qapp, renders, views):
    _need(renders)
    from tomopick.viewers.slice_viewer import tomogram_viewer

    positions = [[40, 20, 16], [12, 36, 16], [52, 36, 3]]
    view = tomogram_viewer(_blob_volume(), positions, group_ids=[1, 2, 1], point_size=8)
    views.append(view)
    view.resize(1000, 700)
    shot = view.screenshot().astype(int)
    expected = display.group_colors([1, 2])[:, :3] * 255
    # the ring (about 0.45-0.55 d, antialiased edges) fills ~0.8 of the 0.4-0.6 d annulus
    # at this canvas size; it has its group's colour and none of the other group's
    assert _ring(view, shot, positions[0], expected[0]) > 0.3
    assert _ring(view, shot, positions[0], expected[1]) == 0
    assert _ring(view, shot, positions[1], expected[1]) > 0.3
    # the blob inside the first ring stays visible (rings, not discs)
    assert _colour(view, shot, positions[0]).min() > 200
    assert _ring(view, shot, [52, 36, 16], expected[0]) == 0   # 13 slices away: not drawn
    view.set_slice(3)
    shot = view.screenshot().astype(int)
    assert _ring(view, shot, positions[2], expected[0]) > 0.3
    # slicing along x: the point at x = 40 shows at (z, y) = (16, 20) on slice x = 40
    view.set_axis("x")
    view.set_slice(40)
    shot = view.screenshot().astype(int)
    assert _ring(view, shot, positions[0], expected[0]) > 0.3


def test_orientation_arrows_point_along_each_particles_z_axis(qapp, renders, views):
    _need(renders)
    from tomopick.viewers.slice_viewer import tomogram_viewer

    z_axes = [[1, 0, 0], [0, -1, 0]]          # +x (right), -y (up on screen)
    positions = [[20, 24, 16], [44, 24, 16]]
    view = tomogram_viewer(np.zeros((32, 48, 64), np.float32), positions, z_axes=z_axes,
                           group_ids=[3, 3], point_size=4, arrow_length=10, controls=False)
    views.append(view)
    view.resize(1000, 700)
    shot = view.screenshot().astype(int)
    arrow = display.group_colors([3])[0, :3] * 255

    def coloured(xyz):
        return np.abs(_colour(view, shot, xyz, radius=0) - arrow).max() < 40

    # 6 voxels along the axis: beyond the 2-voxel marker radius, inside the 10-voxel arrow
    assert coloured([26, 24, 16]) and not coloured([14, 24, 16])
    assert coloured([44, 18, 16]) and not coloured([44, 30, 16])


def test_threshold_and_removal_decide_the_kept_subset(qapp, renders, views):
    from tomopick.viewers.slice_viewer import tomogram_viewer

    saved = []
    positions = [[40, 20, 16], [12, 36, 16], [30, 10, 16], [50, 40, 16]]
    view = tomogram_viewer(_blob_volume(), positions, scores=[0.9, 0.2, 0.6, 0.4],
                           ids=[11, 12, 13, 14], colors_by="score", point_size=6,
                           on_save=saved.append, show=renders)
    views.append(view)
    if renders:
        view.resize(1000, 700)
    view.threshold_slider.setValue(500)           # 0.2 + 0.7 * 0.5 = 0.55
    assert view.threshold == pytest.approx(0.55)
    np.testing.assert_array_equal(view.kept_ids(), [11, 13])
    assert view.remove_nearest((31, 11, 16), max_distance=3) == 13
    assert view.remove_nearest((0, 0, 0), max_distance=3) is None
    view.save_subset()
    np.testing.assert_array_equal(saved[-1], [11])
    view.threshold_slider.setValue(0)
    view.points_layer.selected_data = {1}         # shown rows: 11, 12, 14 -> id 12
    view.remove_selected()
    np.testing.assert_array_equal(view.kept_ids(), [11, 14])
    if renders:
        shot = view.screenshot().astype(int)
        colours = display.score_colors([0.9, 0.2, 0.6, 0.4])[:, :3] * 255
        assert _ring(view, shot, positions[0], colours[0]) > 0.3    # kept: its ring is drawn
        assert _ring(view, shot, positions[1], colours[1]) == 0     # removed: gone
        view.screenshot()
    view.restore_all()
    np.testing.assert_array_equal(view.kept_ids(), [11, 12, 13, 14])


def test_gallery_screenshot_shows_each_subtomograms_central_slice(qapp, renders, views):
    _need(renders)
    from tomopick.viewers.slice_viewer import subtomogram_gallery

    volumes = []
    for k in range(4):
        v = np.zeros((16, 16, 16), np.float32)
        v[8, 4:12, 4:12] = 1.0           # a bright square on the central slice only
        v[3, :, :] = 1.0                 # a bright plane elsewhere must not show
        volumes.append(v)
    view = subtomogram_gallery(volumes, names=["a", "b", "c", "d"])
    views.append(view)
    view.resize(1000, 700)
    shot = view.screenshot().astype(int)
    for r, c in view.origins:
        assert _colour(view, shot, (c + 8, r + 8, 0)).min() > 200   # square centre: white
        assert _colour(view, shot, (c + 2, r + 13, 0)).max() < 10   # off the square: black


def test_average_viewer_shows_the_three_central_sections(qapp, renders, views):
    _need(renders)
    from tomopick.viewers.slice_viewer import average_viewer

    rod = np.zeros((16, 16, 16), np.float32)
    rod[8, 8, 2:14] = 1.0
    view = average_viewer(rod)
    views.append(view)
    view.resize(1000, 700)
    shot = view.screenshot().astype(int)
    (r0, c0), (r1, c1), (r2, c2) = view.origins
    assert _colour(view, shot, (c0 + 4, r0 + 8, 0)).min() > 200   # XY: the rod, along x
    assert _colour(view, shot, (c1 + 4, r1 + 8, 0)).min() > 200   # XZ: the rod, along x
    assert _colour(view, shot, (c2 + 8, r2 + 8, 0)).min() > 200   # YZ: its cross-section
    assert _colour(view, shot, (c2 + 4, r2 + 8, 0)).max() < 10


def test_segmentation_is_overlaid_as_labels(qapp, renders, views):
    _need(renders)
    from tomopick.viewers.slice_viewer import segmentation_viewer

    labels = np.zeros((32, 48, 64), np.int32)
    labels[:, 10:20, 10:20] = 1
    view = segmentation_viewer(_blob_volume(), labels)
    views.append(view)
    view.resize(1000, 700)
    shot = view.screenshot().astype(int)
    inside, outside = _colour(view, shot, (15, 15, 16)), _colour(view, shot, (40, 30, 16))
    assert np.ptp(inside) > 30          # a coloured (not grey) label
    assert outside.max() < 10
    with pytest.raises(ValueError, match="do not match the tomogram"):
        segmentation_viewer(np.zeros((32, 48, 64)), labels[:5], show=False)


def test_mesh_viewer_fits_each_vesicle_from_the_user_points(qapp, renders, views):
    from tomopick.viewers.slice_viewer import mesh_viewer

    rng = np.random.default_rng(3)
    directions = rng.normal(size=(12, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    center, radius = np.array([32.0, 24.0, 16.0]), 10.0
    points = np.vstack([center + radius * directions, [[5, 5, 5], [6, 5, 5]]])
    groups = np.r_[np.full(12, 1), 2, 2]          # model 2 cannot make a sphere
    view = mesh_viewer(np.zeros((32, 48, 64), np.float32), points, groups, "Vesicle",
                       show=renders)
    views.append(view)
    assert set(view.fitted) == {1} and set(view.failed) == {2}
    fitted = view.fitted[1]
    distances = np.linalg.norm(fitted.positions - center, axis=1)
    np.testing.assert_allclose(distances, radius, atol=1e-6)
    # normals point outward, drawn as arrows
    outward = np.einsum("ij,ij->i", fitted.normals, fitted.positions - center) / radius
    assert outward.min() > 0.99
    assert len(view.viewer.layers["fitted normals"].data) == len(fitted)
    assert "model 2" in view.viewer.title


def test_tomogram_viewer_rejects_mismatched_arrays(qapp):
    from tomopick.viewers.slice_viewer import tomogram_viewer

    with pytest.raises(ValueError, match="2 group ids for 3 positions"):
        tomogram_viewer(np.zeros((4, 4, 4)), np.zeros((3, 3)), group_ids=[1, 2], show=False)
    with pytest.raises(ValueError, match="needs scores"):
        tomogram_viewer(np.zeros((4, 4, 4)), np.zeros((3, 3)), colors_by="score", show=False)
    with pytest.raises(ValueError, match="3D"):
        tomogram_viewer(np.zeros((4, 4)), show=False)


def test_multi_tomogram_chooser_keeps_unopened_tomograms_whole_in_the_subset(qapp, tmp_path):
    from tomopick.core.formats.mrc import write_mrc
    from tomopick.viewers import launch

    for name in ("a", "b"):
        write_mrc(tmp_path / f"{name}.mrc", _blob_volume(), 10.0)
    from tomopick.core.picks import Picks
    Picks(["a", "a", "b", "b"], [[40, 20, 16], [12, 36, 16], [10, 10, 10], [20, 20, 20.0]],
          [1, 1, 2, 2], scores=np.zeros(4),
          extra={"ids": np.array([7, 8, 9, 10])}).save(str(tmp_path / "picks.npz"))
    spec = {"kind": "coordinates", "title": "two", "picks": str(tmp_path / "picks.npz"),
            "tomograms": [{"tsId": n, "path": str(tmp_path / f"{n}.mrc"), "voxel_size": 10.0}
                          for n in ("a", "b")],
            "result_dir": str(tmp_path / "subsets")}
    views, collector = launch.open_views(spec, show=False)
    chooser = views[0]
    try:
        assert [chooser.listing.item(i).text() for i in range(2)] == ["a", "b"]
        chooser.listing.itemDoubleClicked.emit(chooser.listing.item(0))
        view = chooser.views["a"]
        assert view.scores is None            # all-zero scores: no threshold slider
        view.remove_ids([8])
        view.save_subset()                    # the view's button saves the whole set
    finally:
        for v in chooser.views.values():
            v.close()
        chooser.close()
    from tomopick.viewers.subsets import read_saved_subsets

    assert read_saved_subsets(spec["result_dir"]) == [[7, 9, 10]]


# -------------------------------------------------------- Scipion viewer
def test_importing_the_viewers_loads_no_qt():
    import subprocess
    import sys

    code = ("import sys, tomopick.viewers, tomopick.viewers.picker, tomopick.viewers.launch, "
            "tomopick.viewers.slice_viewer; "
            "print([m for m in sys.modules if m.split('.')[0] in "
            "('PyQt5', 'qtpy', 'napari', 'vispy')])")
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.strip() == "[]"


from tomopick.tests.protocol_base import TomoPickProtocolTest  # noqa: E402


class TestScipionViewer(TomoPickProtocolTest):
    """The Scipion side: discovery, view specs from real sets, subset registration."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        from tomopick.core.formats.mrc import write_mrc

        write_mrc(os.path.join(cls.dataDir, "t1.mrc"), _blob_volume(), 10.0)
        cls.prot = cls.importTomograms(pattern="t1.mrc")

    def _coordinates(self):
        from tomo.objects import SetOfCoordinates3D

        from tomopick import convert
        from tomopick.core.picks import Picks

        prot = self.proj.getProtocol(self.prot.getObjId())
        tomograms = prot.Tomograms
        coords = SetOfCoordinates3D.create(prot._getPath(), suffix="viewertest")
        coords.setPrecedents(tomograms)
        coords.setSamplingRate(20.0)                 # twice the tomogram's voxel size
        coords.setBoxSize(16)
        matrices = np.tile(np.eye(4), (3, 1, 1))
        matrices[0, :3, :3] = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]
        picks = Picks(["t1"] * 3, [[20, 10, 8], [6, 18, 8], [26, 20, 1]], [1, 2, 1], matrices,
                      [0.9, 0.2, 0.6], 20.0)
        convert.append_picks(coords, picks, convert.tomograms_by_tsid(tomograms))
        coords.write()
        prot._defineOutputs(testCoordinates=coords)
        self.proj._storeProtocol(prot)
        return prot, coords

    def test_viewer_is_discovered_for_every_target(self):
        from pyworkflow.plugin import Domain
        from pyworkflow.viewer import DESKTOP_TKINTER

        from tomopick.viewers import TomoPickNapariViewer

        prot, coords = self._coordinates()
        from tomo.objects import SetOfMeshes, SetOfSubTomograms, SetOfTomoMasks

        for obj in (prot.Tomograms, coords, SetOfMeshes(), SetOfSubTomograms(), SetOfTomoMasks()):
            found = Domain.findViewers(obj, DESKTOP_TKINTER)
            assert TomoPickNapariViewer in found, f"{type(obj).__name__}: {found}"

    def test_analyze_results_of_tomopick_protocols_opens_their_outputs(self):
        from pyworkflow.plugin import Domain
        from pyworkflow.viewer import DESKTOP_TKINTER

        from tomopick.viewers import scipion_viewers

        prot, coords = self._coordinates()
        assert scipion_viewers.TomoPickResultsViewer in Domain.findViewers(prot, DESKTOP_TKINTER)
        targets = scipion_viewers.TomoPickResultsViewer._targets
        assert all(t.__module__.startswith("tomopick.protocols.") for t in targets)
        opened = []
        original = scipion_viewers.TomoPickNapariViewer._visualize
        scipion_viewers.TomoPickNapariViewer._visualize = \
            lambda self, obj, **kw: opened.append(obj) or []
        try:
            scipion_viewers.TomoPickResultsViewer(project=self.proj, protocol=prot)._visualize(prot)
        finally:
            scipion_viewers.TomoPickNapariViewer._visualize = original
        # at most three windows, the coordinates before the tomograms
        names = [type(o).__name__ for o in opened]
        assert 1 <= len(names) <= 3 and names[0] == "SetOfCoordinates3D"
        assert names == sorted(names, key=["SetOfCoordinates3D", "SetOfTomograms"].index)

    def test_view_spec_and_subset_registration_round_trip(self):
        from tomopick.viewers import launch
        from tomopick.viewers.subsets import read_saved_subsets, register_coordinates_subset
        from tomopick.viewers.view_spec import write_view_spec

        prot, coords = self._coordinates()
        directory = os.path.join(prot._getTmpPath(), "view")
        spec = json.load(open(write_view_spec(coords, directory, prot)))
        assert spec["kind"] == "coordinates"
        assert spec["tomograms"][0]["tsId"] == "t1"
        picks = launch.load_picks(spec["picks"])
        assert picks.has_orientations
        # drawn in voxels of the tomogram (10 Å) although the set is at 20 Å/voxel
        np.testing.assert_allclose(picks.positions, [[40, 20, 16], [12, 36, 16], [52, 40, 2]])
        ids = picks.extra["ids"]

        views, collector = launch.open_views(spec, show=False)
        try:
            view = views[0]
            np.testing.assert_allclose(view.positions, picks.positions)
            np.testing.assert_allclose(view.matrices[0, :3, 2], [1, 0, 0], atol=1e-9)
            view.remove_ids([ids[1]])
            view.save_subset()
        finally:
            for v in views:
                v.close()
        kept = read_saved_subsets(spec["result_dir"])
        assert kept == [[int(ids[0]), int(ids[2])]]

        name, subset = register_coordinates_subset(prot, coords, kept[0], self.proj)
        reloaded = self.proj.getProtocol(prot.getObjId())
        stored = getattr(reloaded, name)
        assert sorted(c.getObjId() for c in stored.iterItems()) == kept[0]
        assert stored.getSamplingRate() == 20.0 and stored.getBoxSize() == 16
        assert stored.getPrecedents().getSize() == 1
        with pytest.raises(ValueError, match="empty"):
            register_coordinates_subset(prot, coords, [])
        with pytest.raises(ValueError, match="not in"):
            register_coordinates_subset(prot, coords, [999])

    def test_view_specs_of_tomograms_subtomograms_and_averages(self):
        from tomo.objects import AverageSubTomogram, SetOfSubTomograms, SubTomogram

        from tomopick.core.formats.mrc import write_mrc
        from tomopick.viewers import launch
        from tomopick.viewers.view_spec import write_view_spec

        prot = self.proj.getProtocol(self.prot.getObjId())
        directory = prot._getTmpPath()
        spec = json.load(open(write_view_spec(prot.Tomograms, os.path.join(directory, "t"))))
        assert spec["kind"] == "tomograms" and len(spec["tomograms"]) == 1

        subtomos = SetOfSubTomograms.create(prot._getPath(), suffix="viewertest")
        subtomos.setSamplingRate(10.0)
        for k in range(3):
            path = os.path.join(directory, f"sub{k}.mrc")
            box = np.zeros((8, 8, 8), np.float32)
            box[4, 4, 4] = k + 1
            write_mrc(path, box, 10.0)
            sub = SubTomogram(location=path)
            sub.setSamplingRate(10.0)
            subtomos.append(sub)
        spec = json.load(open(write_view_spec(subtomos, os.path.join(directory, "s"))))
        assert spec["kind"] == "subtomograms" and len(spec["subtomograms"]) == 3
        views, _ = launch.open_views(spec, show=False)
        try:
            gallery = views[0]
            values = sorted(gallery.image[r + 4, c + 4] for r, c in gallery.origins)
            assert values == [1.0, 2.0, 3.0]
        finally:
            views[0].close()

        average = AverageSubTomogram(location=os.path.join(directory, "sub2.mrc"))
        spec = json.load(open(write_view_spec(average, os.path.join(directory, "a"))))
        assert spec["kind"] == "average"
        views, _ = launch.open_views(spec, show=False)
        try:
            assert views[0].image.max() == 3.0
        finally:
            views[0].close()

    def test_score_maps_open_over_the_tomogram_and_the_fsc_beside_the_average(self):
        from types import SimpleNamespace

        from skimage.io import imsave
        from tomo.objects import AverageSubTomogram, SetOfTomograms, Tomogram

        from tomopick.core.formats.mrc import write_mrc
        from tomopick.viewers import launch
        from tomopick.viewers.view_spec import write_view_spec

        prot, coords = self._coordinates()
        directory = os.path.abspath(prot._getTmpPath())
        os.makedirs(directory, exist_ok=True)
        tomogram = prot.Tomograms.getFirstItem()
        score = np.zeros(tomogram.getDim()[::-1], np.float32)
        score[8, 10, 20] = 5.0
        write_mrc(os.path.join(directory, "score_t1.mrc"), score, 10.0)
        maps = SetOfTomograms.create(prot._getPath(), suffix="scoretest")
        maps.setSamplingRate(10.0)
        item = Tomogram(location=os.path.join(directory, "score_t1.mrc"))
        item.setTsId("t1")
        item.setSamplingRate(10.0)
        maps.append(item)
        maps.write()
        prot._defineOutputs(testScoreMaps=maps)
        self.proj._storeProtocol(prot)
        # a picker as the viewer sees it: score maps, the tomograms searched, its picks
        picker = SimpleNamespace(scoreMaps=maps, coordinates=coords,
                                 inputTomograms=SimpleNamespace(get=lambda: prot.Tomograms),
                                 _getExtraPath=lambda name: os.path.join(directory, name))
        spec = json.load(open(write_view_spec(maps, os.path.join(directory, "sc"), picker)))
        assert spec["kind"] == "scores"
        assert spec["tomograms"][0]["path"] == os.path.abspath(tomogram.getFileName())
        views, _ = launch.open_views(spec, show=False)
        try:
            layers = {layer.name: layer for layer in views[0].viewer.layers}
            np.testing.assert_array_equal(layers["score"].data, score)
            assert layers["tomogram"].data.shape == score.shape
            # the picks at the tomogram's voxel size (the set's is twice it)
            np.testing.assert_allclose(sorted(views[0].positions[:, 0]), [12, 40, 52])
        finally:
            views[0].close()
        # the same set without a producer stays a plain set of tomograms
        spec = json.load(open(write_view_spec(maps, os.path.join(directory, "sc2"))))
        assert spec["kind"] == "tomograms"

        plot = np.zeros((20, 30, 3), np.uint8)
        plot[5, 7] = (255, 0, 0)
        imsave(os.path.join(directory, "fsc.png"), plot, check_contrast=False)
        write_mrc(os.path.join(directory, "avg.mrc"), score[:8, :8, :8].copy(), 10.0)
        average = AverageSubTomogram(location=os.path.join(directory, "avg.mrc"))
        spec = json.load(open(write_view_spec(average, os.path.join(directory, "fa"), picker)))
        assert spec["plot"] == os.path.join(directory, "fsc.png")
        views, _ = launch.open_views(spec, show=False)
        try:
            assert len(views) == 2
            np.testing.assert_array_equal(views[1].viewer.layers[0].data[..., :3], plot)
        finally:
            for view in views:
                view.close()

    def _visualize_in(self, process_class, prot, coords):
        """Open the Scipion viewer on ``coords`` with ``process_class`` as the napari
        process; wait for its subset registration."""
        from tomopick.viewers import scipion_viewers

        original = scipion_viewers.subprocess.Popen
        scipion_viewers.subprocess.Popen = process_class
        try:
            viewer = scipion_viewers.TomoPickNapariViewer(project=self.proj, protocol=prot)
            assert viewer._visualize(coords) == []
            viewer.subsetThread.join(30)
        finally:
            scipion_viewers.subprocess.Popen = original

    def test_the_scipion_viewer_registers_the_subsets_saved_in_its_process(self):
        """_visualize runs the napari process and, when it ends, registers what was saved."""
        from tomopick.viewers.subsets import SUBSET_PREFIX

        prot, coords = self._coordinates()
        ids = sorted(c.getObjId() for c in coords.iterItems())
        launched = []

        class FakeProcess:  # the user saves two subsets, then closes the viewer
            def __init__(self, command):
                launched.append(command)
                spec = json.load(open(command[-1]))
                os.makedirs(spec["result_dir"])
                for n, kept in enumerate([ids[:2], ids[1:2]], start=1):
                    with open(os.path.join(spec["result_dir"], f"subset_{n:03d}.json"), "w") as f:
                        json.dump({"kept_ids": kept}, f)

            def wait(self):
                return 0

        before = {name for name, _ in prot.iterOutputAttributes()}
        self._visualize_in(FakeProcess, prot, coords)
        assert launched[0][1:3] == ["-m", "tomopick.viewers.launch"]
        reloaded = self.proj.getProtocol(prot.getObjId())
        subsets = {name: sorted(c.getObjId() for c in out.iterItems())
                   for name, out in reloaded.iterOutputAttributes() if name not in before}
        assert all(name.startswith(SUBSET_PREFIX) for name in subsets)
        assert sorted(subsets.values()) == sorted([ids[:2], ids[1:2]])

    def test_subsets_left_by_a_gui_that_closed_first_are_registered_on_the_next_view(self):
        """A subset saved after the Scipion GUI quit is registered, not deleted, next time."""
        prot, coords = self._coordinates()
        ids = sorted(c.getObjId() for c in coords.iterItems())
        directory = os.path.join(prot._getTmpPath(),
                                 f"napari_{type(coords).__name__}_{coords.getObjId()}")
        # the earlier session: one good subset and one with an unknown id, never registered
        os.makedirs(os.path.join(directory, "subsets"))
        for n, kept in enumerate([ids[1:], [999]], start=1):
            with open(os.path.join(directory, "subsets", f"subset_{n:03d}.json"), "w") as f:
                json.dump({"kept_ids": kept}, f)

        class ClosedAtOnce:     # this session saves nothing
            def __init__(self, command):
                pass

            def wait(self):
                return 0

        before = {name for name, _ in prot.iterOutputAttributes()}
        self._visualize_in(ClosedAtOnce, prot, coords)
        reloaded = self.proj.getProtocol(prot.getObjId())
        subsets = [sorted(c.getObjId() for c in out.iterItems())
                   for name, out in reloaded.iterOutputAttributes() if name not in before]
        assert subsets == [ids[1:]]
        # the bad one is set aside with its reason, out of the folder a new view clears
        rejected = os.path.join(directory, "rejected")
        assert sorted(os.listdir(rejected)) == ["subset_002.json", "subset_002.txt"]
        assert "999" in open(os.path.join(rejected, "subset_002.txt")).read()
        pending = os.path.join(directory, "subsets")
        assert not (os.path.isdir(pending) and os.listdir(pending))

    def test_view_specs_of_meshes_and_segmentations_open_their_views(self):
        from tomo.objects import SetOfMeshes, SetOfTomoMasks, TomoMask

        from tomopick import convert
        from tomopick.core.formats.mrc import write_mrc
        from tomopick.viewers import launch
        from tomopick.viewers.view_spec import write_view_spec

        prot = self.proj.getProtocol(self.prot.getObjId())
        tomograms = prot.Tomograms
        tomogram = convert.tomograms_by_tsid(tomograms)["t1"]
        directory = prot._getTmpPath()

        # a vesicle of radius 8 around (32, 24, 16): 10 user points
        rng = np.random.default_rng(4)
        u = rng.normal(size=(10, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        # the points as the vectorial picking protocol stores them: with the model
        # type and the interior marker (model 2) on every point
        from tomopick.convert import append_mesh_points

        meshes = SetOfMeshes.create(prot._getPath(), suffix="viewertest")
        meshes.setPrecedents(tomograms)
        meshes.setSamplingRate(10.0)
        tomos = {tomogram.getTsId(): tomogram}
        append_mesh_points(meshes, tomos, tomogram.getTsId(), 1, [32, 24, 16] + 8 * u, "Vesicle")
        append_mesh_points(meshes, tomos, tomogram.getTsId(), 2, [(5, 5, 5), (9, 5, 5), (5, 9, 5)],
                           "General", interior=(6, 6, 1))
        meshes.write()
        spec = json.load(open(write_view_spec(meshes, os.path.join(directory, "m"), prot)))
        assert spec["kind"] == "meshes"
        assert spec["model_types"] == {"t1:1": "Vesicle", "t1:2": "General"}
        assert spec["interiors"] == {"t1:2": [6.0, 6.0, 1.0]}
        assert len(launch.load_picks(spec["picks"])) == 13   # interior not a point
        views, collector = launch.open_views(spec, show=False)
        try:
            assert collector is None
            radius = np.linalg.norm(views[0].fitted[1].positions - [32, 24, 16], axis=1)
            np.testing.assert_allclose(radius, 8.0, atol=1e-3)
        finally:
            views[0].close()

        labels = np.zeros((32, 48, 64), np.int16)
        labels[10:20, 10:20, 10:20] = 2
        mask_path = os.path.join(directory, "t1_labels.mrc")
        write_mrc(mask_path, labels, 10.0)
        masks = SetOfTomoMasks.create(prot._getPath(), suffix="viewertest")
        masks.setSamplingRate(10.0)
        mask = TomoMask(location=mask_path)
        mask.setVolName(tomogram.getFileName())
        mask.setTsId("t1")
        mask.setSamplingRate(10.0)
        masks.append(mask)
        spec = json.load(open(write_view_spec(masks, os.path.join(directory, "k"))))
        assert spec["kind"] == "masks"
        assert spec["tomograms"][0]["path"] == os.path.abspath(tomogram.getFileName())
        views, _ = launch.open_views(spec, show=False)
        try:
            layer = views[0].viewer.layers["segmentation"]
            np.testing.assert_array_equal(np.asarray(layer.data), labels)
        finally:
            views[0].close()
