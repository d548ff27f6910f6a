"""The interactive picker: picking logic (no Qt) and the real napari widget.

The widget tests drive the same objects a user does (key bindings, clicks,
the tomogram list dialog, the blocking `pick_interactively`) with no screen:
a private Xvfb when installed (napari then renders, and the screenshots are
checked pixel by pixel), Qt's offscreen platform otherwise (rendering checks
are skipped, everything else runs).
"""
import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # replaced by xcb when Xvfb starts
# napari keeps window sizes in its settings: a private file keeps the tests' canvas
# size (and so the pixel geometry they check) independent of earlier sessions
os.environ.setdefault("NAPARI_CONFIG", os.path.join(tempfile.mkdtemp(), "napari.yaml"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import ndimage  # noqa: E402

from tomopick.core.formats.mrc import write_mrc  # noqa: E402
from tomopick.viewers import picker  # noqa: E402
from tomopick.core.formats.points import read_points_csv  # noqa: E402
from tomopick.viewers.picker import PickingSession  # noqa: E402


# ----------------------------------------------------------------- logic (no Qt)
def test_session_saves_every_change_and_reloads_identically(tmp_path):
    csv_path = tmp_path / "points.csv"
    session = PickingSession(csv_path, ["t1", "t2"], "Vesicle")
    assert not csv_path.exists()
    session.add_point("t1", (10, 20, 30))
    assert read_points_csv(csv_path) == [("t1", 1, 10.0, 20.0, 30.0, "point")]
    session.add_point("t1", (11.5, 21, 31))
    assert session.new_model("t1") == 2
    session.add_point("t1", (40, 41, 42))
    session.set_interior("t1", (45, 45, 45))
    session.add_point("t2", (1, 2, 3))
    rows = read_points_csv(csv_path)
    assert rows == [("t1", 1, 10.0, 20.0, 30.0, "point"), ("t1", 1, 11.5, 21.0, 31.0, "point"),
                    ("t1", 2, 40.0, 41.0, 42.0, "point"), ("t1", 2, 45.0, 45.0, 45.0, "interior"),
                    ("t2", 1, 1.0, 2.0, 3.0, "point")]

    again = PickingSession(csv_path, ["t1", "t2"], "Vesicle")
    assert again.rows() == session.rows()
    assert again.model_ids("t1") == [1, 2]
    assert again.current_model("t1") == 2
    assert again.interior("t1") == (45.0, 45.0, 45.0)
    np.testing.assert_array_equal(again.points("t1", 1), [[10, 20, 30], [11.5, 21, 31]])
    np.testing.assert_array_equal(again.point_models("t1"), [1, 1, 2])


def test_delete_last_and_delete_nearest_remove_the_right_point(tmp_path):
    session = PickingSession(tmp_path / "p.csv", ["t"])
    for p in [(0, 0, 0), (10, 0, 0), (20, 0, 0)]:
        session.add_point("t", p)
    assert session.delete_last("t") == (20.0, 0.0, 0.0)
    np.testing.assert_array_equal(session.points("t"), [[0, 0, 0], [10, 0, 0]])
    session.set_interior("t", (5, 5, 0))
    # nearest to (9, 1, 0) is the point at (10, 0, 0), not the interior marker
    assert session.delete_nearest("t", (9, 1, 0), max_distance=3) == (1, "point", (10.0, 0.0, 0.0))
    # nothing within 1 voxel of (30, 0, 0): nothing removed
    assert session.delete_nearest("t", (30, 0, 0), max_distance=1) is None
    assert session.delete_nearest("t", (5, 4, 0)) == (1, "interior", (5.0, 5.0, 0.0))
    assert session.interior("t") is None
    assert [r[2:] for r in read_points_csv(tmp_path / "p.csv")] == [(0.0, 0.0, 0.0, "point")]
    assert session.delete_last("t") == (0.0, 0.0, 0.0)
    assert session.delete_last("t") is None


def test_new_model_on_an_empty_model_does_not_skip_numbers(tmp_path):
    session = PickingSession(tmp_path / "p.csv", ["t"])
    assert session.new_model("t") == 1
    assert session.new_model("t") == 1
    session.add_point("t", (1, 1, 1))
    assert session.new_model("t") == 2
    assert session.new_model("t") == 2
    session.add_point("t", (2, 2, 2))
    assert session.model_ids("t") == [1, 2]
    session.select_model("t", 1)
    session.add_point("t", (3, 3, 3))
    np.testing.assert_array_equal(session.points("t", 1), [[1, 1, 1], [3, 3, 3]])


def test_status_names_the_model_with_too_few_points(tmp_path):
    session = PickingSession(tmp_path / "p.csv", ["t"], "Vesicle")
    assert session.status("t") == "not picked"
    for p in [(0, 0, 10), (10, 0, 0), (0, 10, 0), (-10, 0, 0)]:
        session.add_point("t", p)
    assert session.status("t") == "picked"
    session.new_model("t")
    session.add_point("t", (50, 50, 50))
    assert session.status("t") == "incomplete: model 2 has 1/4 points"


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    csv_path = tmp_path / "p.csv"
    session = PickingSession(csv_path, ["t"])
    session.add_point("t", (1, 2, 3))
    before = csv_path.read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(picker.os, "replace", broken_replace)
    with pytest.raises(OSError):
        session.add_point("t", (4, 5, 6))
    assert csv_path.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["p.csv"]  # no temporary file left behind


def test_points_of_tomograms_outside_the_session_are_written_back(tmp_path):
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("tomoId,modelId,x,y,z\nother,3,1,2,3\n")
    session = PickingSession(csv_path, ["t"])
    session.add_point("t", (7, 8, 9))
    assert read_points_csv(csv_path) == [("t", 1, 7.0, 8.0, 9.0, "point"),
                                         ("other", 3, 1.0, 2.0, 3.0, "point")]


def test_points_files_without_header_and_with_comments_are_read(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("# picked by hand\nt,2,1.5,2,3\n\nt,2,4,5,6,interior\n")
    assert read_points_csv(path) == [("t", 2, 1.5, 2.0, 3.0, "point"),
                                     ("t", 2, 4.0, 5.0, 6.0, "interior")]


@pytest.mark.parametrize("text, message", [
    ("tomoId,modelId,x,y\nt,1,1,2\n", "missing column"),
    ("tomoId,modelId,x,y,z,role\nt,1,1,2,3,centre\n", "line 2: role must be"),
    ("tomoId,modelId,x,y,z\nt,1,1,two,3\n", "line 2"),
    ("tomoId,modelId,x,y,z\nt,1,1,2\n", "line 2: 'z'"),
])
def test_bad_points_files_are_rejected_with_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        PickingSession(path, ["t"])


def test_session_rejects_unknown_tomograms_model_types_and_positions(tmp_path):
    with pytest.raises(ValueError, match="unknown model type"):
        PickingSession(tmp_path / "p.csv", ["t"], "Sphere")
    session = PickingSession(tmp_path / "p.csv", ["t"])
    with pytest.raises(KeyError, match="'u'"):
        session.add_point("u", (1, 2, 3))
    with pytest.raises(ValueError, match="three finite numbers"):
        session.add_point("t", (1, np.nan, 3))


# ------------------------------------------------------------------ the widget
def _volume():
    """A dark volume with one bright blob at (x, y, z) = (40, 20, 16)."""
    volume = np.zeros((32, 48, 64), np.float32)
    volume[16, 20, 40] = 1000.0
    return ndimage.gaussian_filter(volume, 2.0)


@pytest.fixture
def window(qapp, tmp_path):
    from tomopick.viewers._qt_picker import PickerWindow

    session = PickingSession(tmp_path / "points.csv", ["t1"], "Vesicle")
    win = PickerWindow(session, "t1", _volume(), box_size=24, show=True)
    yield win
    win.close()


def _press(viewer, key):
    """Run the viewer's binding of ``key`` as a key press would."""
    from napari.utils.key_bindings import KeyBinding

    viewer.keymap[KeyBinding.from_str(key)](viewer)


class _Click:
    def __init__(self, zyx, modifiers):
        self.button, self.position, self.modifiers = 1, zyx, modifiers


def test_keys_and_clicks_edit_points_models_and_interior(window, tmp_path):
    viewer = window.viewer
    viewer.cursor.position = (16, 20, 40)
    _press(viewer, "a")
    window._on_click(viewer, _Click((16, 30, 10), ["Control"]))
    _press(viewer, "n")
    viewer.cursor.position = (16, 5, 5)
    _press(viewer, "a")
    viewer.cursor.position = (16, 24, 44)
    _press(viewer, "i")
    rows = read_points_csv(tmp_path / "points.csv")
    assert rows == [("t1", 1, 40.0, 20.0, 16.0, "point"), ("t1", 1, 10.0, 30.0, 16.0, "point"),
                    ("t1", 2, 5.0, 5.0, 16.0, "point"), ("t1", 2, 44.0, 24.0, 16.0, "interior")]
    # the layers show what the session holds, in napari's (z, y, x) order
    np.testing.assert_array_equal(window.points_layer.data, [[16, 20, 40], [16, 30, 10], [16, 5, 5]])
    np.testing.assert_array_equal(window.interior_layer.data, [[16, 24, 44]])
    _press(viewer, "d")                       # last point of the current model (2)
    window._on_click(viewer, _Click((16, 29, 11), ["Shift"]))  # nearest: (10, 30, 16)
    rows = read_points_csv(tmp_path / "points.csv")
    assert rows == [("t1", 1, 40.0, 20.0, 16.0, "point"), ("t1", 2, 44.0, 24.0, 16.0, "interior")]
    assert "current model: 2 (0 points, interior set)" in window.status_label.text()


def test_slicing_axis_wheel_and_arrows_move_through_the_volume(window):
    viewer = window.viewer
    assert window.slice_index == 16
    _press(viewer, "Up")
    _press(viewer, "PageUp")
    assert window.slice_index == 27
    window._on_wheel(viewer, type("E", (), {"delta": (0, -1), "modifiers": []})())
    assert window.slice_index == 26
    zoom = viewer.camera.zoom
    window._on_wheel(viewer, type("E", (), {"delta": (0, 1), "modifiers": ["Control"]})())
    assert viewer.camera.zoom == pytest.approx(zoom * 1.15)
    _press(viewer, "Shift-Y")
    assert tuple(viewer.dims.order) == (1, 0, 2) and window.slice_index == 24
    # in the Y view the cursor's slice coordinate is y: the point lands at y = 24
    viewer.cursor.position = (10, 24, 30)
    _press(viewer, "a")
    np.testing.assert_array_equal(window.session.points("t1"), [[30, 24, 10]])
    _press(viewer, "Shift-X")
    assert tuple(viewer.dims.order) == (2, 0, 1) and window.axis_box.currentText() == "x"


def test_gaussian_toggle_shows_the_filtered_volume_and_montage_neighbours(window):
    volume = window.volume
    _press(window.viewer, "g")
    assert window.gaussian_on and window.gaussian_box.isChecked()
    expected = ndimage.gaussian_filter(volume, window.sigma, mode="nearest")
    np.testing.assert_allclose(window.image.data[16], expected[16], rtol=1e-5, atol=1e-6)
    _press(window.viewer, "m")
    assert window.montage_on and window.montage_label.pixmap() is not None
    mosaic, indices = window.montage_image()
    np.testing.assert_array_equal(indices, [14, 15, 16, 17, 18])
    assert mosaic.shape == (48, 5 * 64 + 4 * 2)
    # the blob is brightest in the central panel (slice 16)
    panel_max = [mosaic[:, i * 66:i * 66 + 64].max() for i in range(5)]
    assert int(np.argmax(panel_max)) == 2
    _press(window.viewer, "g")
    assert window.image.data is volume


def test_real_key_presses_and_clicks_on_the_canvas_edit_the_session(window, renders):
    """Qt events on the napari canvas, as a user's keyboard and mouse send them."""
    if not renders:
        pytest.skip("needs a real (virtual) X display for canvas input events")
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from tomopick.viewers.slice_viewer import world_to_canvas

    window.viewer.window._qt_window.resize(1000, 700)
    QApplication.processEvents()
    window.viewer.reset_view()
    QApplication.processEvents()
    canvas = window.viewer.window._qt_viewer.canvas.native
    row, col = world_to_canvas(window.viewer, (16, 20, 40))
    QTest.mouseMove(canvas, QPoint(int(col), int(row)))
    for key in (Qt.Key_A, Qt.Key_N, Qt.Key_A, Qt.Key_I, Qt.Key_Up, Qt.Key_D):
        QTest.keyClick(canvas, key)
        QApplication.processEvents()
    QTest.mouseClick(canvas, Qt.LeftButton, Qt.ControlModifier, QPoint(int(col) + 30, int(row)))
    QApplication.processEvents()
    rows = window.session.rows()
    # one canvas pixel is 1 / zoom voxels: positions within half a voxel of the target
    assert [(r[1], r[5]) for r in rows] == [(1, "point"), (2, "point"), (2, "interior")]
    np.testing.assert_allclose([r[2:5] for r in rows[::2]], [[40, 20, 16], [40, 20, 16]], atol=0.5)
    x_click = 40 + 30 / window.viewer.camera.zoom
    np.testing.assert_allclose(rows[1][2:5], [x_click, 20, 17], atol=0.5)   # Up: slice 17


def test_fit_preview_shows_the_sphere_through_the_vesicle_points(window):
    rng = np.random.default_rng(5)
    u = rng.normal(size=(6, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    center = np.array([32.0, 24.0, 16.0])
    for p in center + 10 * u:
        window.session.add_point("t1", p)
    _press(window.viewer, "f")
    assert window.fit_preview_on and window.fit_layer.visible
    fitted = window.fit_layer.data[:, ::-1]                    # back to (x, y, z)
    assert len(fitted) > 20          # sphere area 4 pi 10^2 / spacing 6^2: ~35 points
    np.testing.assert_allclose(np.linalg.norm(fitted - center, axis=1), 10.0, atol=1e-6)
    # below the 4 points a sphere needs, the preview empties and the panel says why
    for _ in range(3):
        _press(window.viewer, "d")
    assert len(window.fit_layer.data) == 0
    assert "model 1 not fitted" in window.status_label.text()
    _press(window.viewer, "f")
    assert not window.fit_layer.visible


def test_picker_screenshot_draws_each_model_in_its_colour_on_its_slice(window, renders, tmp_path):
    if not renders:
        pytest.skip("no OpenGL rendering (needs Xvfb + Mesa: see tomopick.viewers.headless)")
    from tomopick.viewers import display
    from tomopick.viewers.slice_viewer import world_to_canvas

    session = window.session
    session.add_point("t1", (40, 20, 16))
    session.new_model("t1")
    session.add_point("t1", (12, 36, 16))
    session.add_point("t1", (52, 36, 2))   # 14 slices away: not drawn on slice 16
    from qtpy.QtWidgets import QApplication

    window.viewer.window._qt_window.resize(1000, 700)
    QApplication.processEvents()
    window.viewer.reset_view()
    shot = window.viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)

    def colour_at(xyz):
        row, col = np.round(world_to_canvas(window.viewer, xyz[::-1])).astype(int)
        return shot[row - 1:row + 2, col - 1:col + 2].reshape(-1, 3).mean(0)

    for xyz, model in [((40, 20, 16), 1), ((12, 36, 16), 2)]:
        np.testing.assert_allclose(colour_at(np.array(xyz)),
                                   display.group_colors([model])[0, :3] * 255, atol=3)
    assert colour_at(np.array((52, 36, 16))).max() < 10   # dark background, no marker


def test_tomogram_list_tracks_status_and_opens_pickers(qapp, tmp_path):
    from tomopick.viewers._qt_picker import TomogramListDialog

    paths = []
    for name in ("a", "b"):
        paths.append((name, str(tmp_path / f"{name}.mrc"), 10.0))
        write_mrc(paths[-1][1], _volume(), 10.0)
    session = PickingSession(tmp_path / "points.csv", ["a", "b"], "Surface")
    dialog = TomogramListDialog(session, paths)
    try:
        assert dialog.row_values("a") == ("a", "not picked", "0", "0")
        dialog.table.cellDoubleClicked.emit(1, 0)
        win = dialog.pickers["b"]
        assert win.volume.shape == (32, 48, 64)
        for p in [(1, 1, 1), (2, 1, 1)]:
            session.add_point("b", p)
        assert dialog.row_values("b") == ("b", "incomplete: model 1 has 2/4 points", "1", "2")
        session.add_point("b", (1, 2, 1))
        session.add_point("b", (2, 2, 1))
        # four points on one z-level do not make a surface (it is meshed between levels)
        assert dialog.row_values("b") == ("b", "incomplete: model 1 has 1/2 z-levels of 2+ "
                                          "points", "1", "4")
        session.add_point("b", (1, 1, 4))
        session.add_point("b", (2, 2, 4))
        assert dialog.row_values("b") == ("b", "picked", "1", "6")
        assert dialog.open_picker("b") is win   # raised, not opened twice
        win.viewer.close()                      # the user closes the picker window
        session.add_point("b", (3, 3, 3))       # the closed window stops listening quietly
        assert win._on_session_change not in session._listeners
        assert dialog.open_picker("b") is not win
    finally:
        dialog.done(0)
    assert dialog.pickers == {}


def test_pick_interactively_blocks_until_the_dialog_closes_and_returns_the_saved_session(
        qapp, tmp_path):
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from tomopick.viewers._qt_picker import TomogramListDialog

    path = str(tmp_path / "a.mrc")
    write_mrc(path, _volume(), 10.0)
    actions = []

    def user():
        dialog = next(w for w in QApplication.topLevelWidgets()
                      if isinstance(w, TomogramListDialog) and w.isVisible())
        win = dialog.open_picker("a", show=False)
        win.viewer.cursor.position = (16, 20, 40)
        win.add_point_at_cursor()
        actions.append("picked")
        dialog.accept()

    QTimer.singleShot(300, user)
    session = picker.pick_interactively([("a", path, 10.0)], tmp_path / "out.csv", "General", 16)
    assert actions == ["picked"]
    assert read_points_csv(tmp_path / "out.csv") == [("a", 1, 40.0, 20.0, 16.0, "point")]
    assert session.point_count("a") == 1


def test_pick_interactively_rejects_missing_files(tmp_path):
    with pytest.raises(ValueError, match="tomogram a: file not found"):
        picker.pick_interactively([("a", tmp_path / "none.mrc", 10.0)], tmp_path / "p.csv")
    with pytest.raises(ValueError, match="at least one tomogram"):
        picker.pick_interactively([], tmp_path / "p.csv")


def test_without_a_display_the_picker_fails_with_a_message_not_a_crash(tmp_path):
    import subprocess
    import sys

    path = str(tmp_path / "a.mrc")
    write_mrc(path, _volume(), 10.0)
    code = ("from tomopick.viewers.picker import pick_interactively; "
            f"pick_interactively([('a', {path!r}, 10.0)], {str(tmp_path / 'p.csv')!r})")
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env["QT_QPA_PLATFORM"] = "xcb"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "needs a display" in result.stderr and "pointsFile" in result.stderr


# ------------------------------------------------------- particle mode (manual picking)
def _csv_picks(path):
    from tomopick.core.formats.csv_table import read_csv

    picks = read_csv(path)
    return [(str(t), int(g), tuple(map(float, p)), str(lab)) for t, g, p, lab in
            zip(picks.tomo_ids, picks.group_ids, picks.positions, picks.extra["labels"])]


def test_particle_session_saves_positives_negatives_and_sets_and_reopens(tmp_path):
    path = tmp_path / "picks.csv"
    session = picker.ParticleSession(path, ["t1", "t2"])
    session.add_point("t1", (10, 20, 30))
    session.add_negative("t1", (50, 50, 20))
    assert _csv_picks(path) == [("t1", 1, (10.0, 20.0, 30.0), "positive"),
                                ("t1", 1, (50.0, 50.0, 20.0), "negative")]
    assert session.new_model("t1") == 2
    session.add_point("t1", (12, 22, 32))
    session.add_negative("t2", (1, 2, 3))
    assert session.list_row("t1") == ("t1", "picked", 2, 2, 1)
    assert session.list_row("t2") == ("t2", "negatives only", 1, 0, 1)

    again = picker.ParticleSession(path, ["t1", "t2"])
    assert again.rows() == session.rows()
    assert again.current_model("t1") == 2
    np.testing.assert_array_equal(again.points("t1", 2), [[12, 22, 32]])
    np.testing.assert_array_equal(again.negatives("t1"), [[50, 50, 20]])
    np.testing.assert_array_equal(again.negative_models("t2"), [1])
    # the nearest pick goes, whatever its label; nothing within reach: nothing
    assert again.delete_nearest("t1", (49, 51, 20), max_distance=3) == \
        (1, "negative", (50.0, 50.0, 20.0))
    assert again.delete_nearest("t1", (90, 90, 90), max_distance=3) is None
    assert again.delete_nearest("t1", (11, 21, 31)) == (1, "positive", (10.0, 20.0, 30.0))
    assert _csv_picks(path) == [("t1", 2, (12.0, 22.0, 32.0), "positive"),
                                ("t2", 1, (1.0, 2.0, 3.0), "negative")]
    with pytest.raises(ValueError, match="no interior"):
        again.set_interior("t1", (1, 1, 1))


def test_particle_session_reads_a_label_column_and_rejects_bad_labels(tmp_path):
    path = tmp_path / "picks.csv"
    path.write_text("tomoId,x,y,z,label\nt,1,2,3,\nt,4,5,6,Negative\n")
    session = picker.ParticleSession(path, ["t"])
    np.testing.assert_array_equal(session.points("t"), [[1, 2, 3]])
    np.testing.assert_array_equal(session.negatives("t"), [[4, 5, 6]])
    path.write_text("tomoId,x,y,z,label\nt,1,2,3,maybe\n")
    with pytest.raises(ValueError, match=r"picks.csv, line 2: label is 'maybe'"):
        picker.ParticleSession(path, ["t"])


@pytest.fixture
def particle_window(qapp, tmp_path):
    from tomopick.viewers._qt_picker import PickerWindow

    session = picker.ParticleSession(tmp_path / "picks.csv", ["t1"])
    win = PickerWindow(session, "t1", _volume(), box_size=20, show=True)
    yield win
    win.close()


def _plain_click(window, zyx, moves=0):
    """Press, ``moves`` mouse moves, release: as napari drives a drag callback."""
    event = _Click(zyx, [])
    event.type = "mouse_press"
    gen = window._on_click(window.viewer, event)
    next(gen)
    event.type = "mouse_move"
    for _ in range(moves):
        next(gen)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gen)


def test_particle_clicks_add_positives_negatives_remove_and_draw_box_circles(
        particle_window, tmp_path):
    window, viewer = particle_window, particle_window.viewer
    _plain_click(window, (16, 20, 40))
    _plain_click(window, (16, 5, 5), moves=3)            # a drag pans: no pick
    window._on_click(viewer, _Click((16, 30, 10), ["Control"]))
    viewer.cursor.position = (10, 10, 50)
    _press(viewer, "b")
    _press(viewer, "n")
    viewer.cursor.position = (20, 40, 60)
    _press(viewer, "a")
    assert _csv_picks(tmp_path / "picks.csv") == [
        ("t1", 1, (40.0, 20.0, 16.0), "positive"), ("t1", 2, (60.0, 40.0, 20.0), "positive"),
        ("t1", 1, (10.0, 30.0, 16.0), "negative"), ("t1", 1, (50.0, 10.0, 10.0), "negative")]
    np.testing.assert_array_equal(window.points_layer.data, [[16, 20, 40], [20, 40, 60]])
    np.testing.assert_array_equal(window.negatives_layer.data, [[16, 30, 10], [10, 10, 50]])
    # every pick is a circle of the box's diameter, shown on the slices it spans
    assert window.points_layer.symbol[0].value == "ring"
    np.testing.assert_array_equal(window.points_layer.size, [20, 20])
    assert window.points_layer.out_of_slice_display
    # Shift+click removes the nearest pick within half a box, positive or negative
    window._on_click(viewer, _Click((16, 29, 12), ["Shift"]))
    window._on_click(viewer, _Click((16, 21, 41), ["Shift"]))
    window._on_click(viewer, _Click((0, 0, 0), ["Shift"]))  # nothing within 10 voxels
    assert _csv_picks(tmp_path / "picks.csv") == [
        ("t1", 2, (60.0, 40.0, 20.0), "positive"), ("t1", 1, (50.0, 10.0, 10.0), "negative")]
    assert "current set: 2 (1 positives, 0 negatives)" in window.status_label.text()
    assert not window.interior_layer.visible


def test_particle_dialog_lists_counts_and_the_blocking_call_returns_the_picks(qapp, tmp_path):
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from tomopick.viewers._qt_picker import TomogramListDialog

    path = str(tmp_path / "a.mrc")
    write_mrc(path, _volume(), 10.0)
    seen = []

    def user():
        dialog = next(w for w in QApplication.topLevelWidgets()
                      if isinstance(w, TomogramListDialog) and w.isVisible())
        win = dialog.open_picker("a", show=False)
        win.viewer.cursor.position = (16, 20, 40)
        win.add_point_at_cursor()
        win.viewer.cursor.position = (16, 40, 10)
        win.add_negative_at_cursor()
        seen.append(dialog.row_values("a"))
        dialog.accept()

    QTimer.singleShot(300, user)
    session = picker.pick_interactively([("a", path, 10.0)], tmp_path / "p.csv",
                                        picker.PARTICLES, 24)
    assert seen == [("a", "picked", "1", "1", "1")]
    assert _csv_picks(tmp_path / "p.csv") == [("a", 1, (40.0, 20.0, 16.0), "positive"),
                                              ("a", 1, (10.0, 40.0, 16.0), "negative")]
    assert isinstance(session, picker.ParticleSession)
