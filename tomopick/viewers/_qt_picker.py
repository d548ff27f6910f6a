"""Qt / napari widgets of the interactive picker (imported only when a picker opens).

The widgets hold no picking state: every action goes through a
`tomopick.viewers.picker.PickingSession`, which saves the points CSV, and the
widgets redraw from the session when it reports a change.
"""
import numpy as np
from qtpy.QtCore import QEventLoop, Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog, QDoubleSpinBox,
                            QFormLayout, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                            QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from tomopick.core.formats.mrc import read_mrc

from . import display

HELP = """<b>Keys</b> (mouse over the image)<br>
a &nbsp; add point under cursor<br>
Ctrl+click &nbsp; add point<br>
d &nbsp; delete last point of the model<br>
c / Shift+click &nbsp; delete nearest point<br>
n &nbsp; new model (vesicle / membrane)<br>
i &nbsp; interior marker under cursor<br>
g &nbsp; Gaussian contrast on/off<br>
m &nbsp; montage of neighbouring slices<br>
f &nbsp; preview the fitted model<br>
Shift+Z / Y / X &nbsp; slice along Z / Y / X<br>
wheel, Up/Down, PgUp/PgDn &nbsp; move slices<br>
Ctrl+wheel &nbsp; zoom; drag &nbsp; pan"""

PARTICLE_HELP = """<b>Particles</b> (mouse over the image)<br>
click &nbsp; add a positive (a particle)<br>
Ctrl+click / b &nbsp; add a negative (must not be picked)<br>
Shift+click / c &nbsp; remove the nearest pick<br>
a &nbsp; positive under cursor<br>
d &nbsp; delete the last positive of the set<br>
n &nbsp; new particle set (group id)<br>
g &nbsp; Gaussian contrast on/off<br>
m &nbsp; montage of neighbouring slices<br>
Shift+Z / Y / X &nbsp; slice along Z / Y / X<br>
wheel, Up/Down, PgUp/PgDn &nbsp; move slices<br>
Ctrl+wheel &nbsp; zoom; drag &nbsp; pan<br>
Circles: the box, on every slice it spans"""

NEGATIVE_COLOR = (1.0, 0.2, 0.2, 1.0)


def _gray_qimage(image, limits):
    """A 2D float array as an 8-bit grayscale QImage (copy, owns its memory)."""
    low, high = limits
    scaled = np.clip((np.asarray(image, dtype=float) - low) / (high - low), 0, 1)
    data = np.ascontiguousarray((scaled * 255).astype(np.uint8))
    h, w = data.shape
    return QImage(data.data, w, h, w, QImage.Format_Grayscale8).copy()


class PickerWindow:
    """napari picker of one tomogram of a `PickingSession`.

    Parameters
    ----------
    session : PickingSession
    ts_id : str
    volume : (nz, ny, nx) array-like
        The tomogram (a memory map is fine).
    box_size : int
        Voxels; markers are drawn ``max(4, box_size / 4)`` voxels wide and are
        visible on slices within that distance. For a `ParticleSession`
        (particle mode) every pick is a circle of the box's diameter, drawn
        on every slice the box spans (shrinking as a sphere's section does).
    show : bool
        Show the window (False for scripted / test use).
    sigma : float
        Gaussian contrast filter width (voxels).
    """

    def __init__(self, session, ts_id, volume, box_size=32, show=True, sigma=1.5):
        import napari

        self.session = session
        self.ts_id = ts_id
        self.volume = volume
        self.sigma = float(sigma)
        self.axis = "z"
        self.particles = session.particles
        self.marker_size = float(box_size) if self.particles else max(4.0, box_size / 4.0)
        self.limits = display.contrast_limits(volume)
        self._filtered_limits = None
        self.viewer = napari.Viewer(title=f"tomopick picker: {ts_id}", show=show,
                                    axis_labels=("z", "y", "x"))
        self.image = self.viewer.add_image(volume, name=ts_id, colormap="gray",
                                           contrast_limits=self.limits)
        self.points_layer = self.viewer.add_points(
            np.zeros((0, 3)), ndim=3, name="positives" if self.particles else "points",
            size=self.marker_size, symbol="ring" if self.particles else "disc",
            out_of_slice_display=True, border_width=0.15, border_width_is_relative=True)
        self.negatives_layer = self.viewer.add_points(
            np.zeros((0, 3)), ndim=3, name="negatives", symbol="x", size=self.marker_size,
            out_of_slice_display=True, face_color=[NEGATIVE_COLOR], visible=self.particles)
        self.interior_layer = self.viewer.add_points(
            np.zeros((0, 3)), ndim=3, name="interior", symbol="cross",
            size=self.marker_size * 1.5, out_of_slice_display=True, face_color="red",
            visible=not self.particles)
        self.fit_layer = self.viewer.add_points(
            np.zeros((0, 3)), ndim=3, name="fitted model", size=self.marker_size / 2,
            out_of_slice_display=True, opacity=0.7, visible=False)
        self.fit_failures = {}
        # picking needs the image selected so the points layers' own keys do not fire
        self.viewer.layers.selection.active = self.image
        self.viewer.dims.current_step = tuple(n // 2 for n in volume.shape)
        self.viewer.camera.mouse_zoom = False  # the wheel moves slices; Ctrl+wheel zooms
        self._bind()
        self._build_panel()
        session.add_listener(self._on_session_change)
        self.viewer.dims.events.current_step.connect(self._on_slice_change)
        self.refresh()

    # -- wiring ---------------------------------------------------------------
    def _bind(self):
        v = self.viewer
        bindings = {
            "a": lambda _v: self.add_point_at_cursor(),
            "b": lambda _v: self.add_negative_at_cursor(),
            "d": lambda _v: self.delete_last(),
            "c": lambda _v: self.delete_nearest_to_cursor(),
            "n": lambda _v: self.new_model(),
            "i": lambda _v: self.set_interior_at_cursor(),
            "g": lambda _v: self.set_gaussian(not self.gaussian_on),
            "m": lambda _v: self.set_montage(not self.montage_on),
            "f": lambda _v: self.set_fit_preview(not self.fit_preview_on),
            "Shift-Z": lambda _v: self.set_axis("z"),
            "Shift-Y": lambda _v: self.set_axis("y"),
            "Shift-X": lambda _v: self.set_axis("x"),
            "Up": lambda _v: self.move_slice(1),
            "Down": lambda _v: self.move_slice(-1),
            "PageUp": lambda _v: self.move_slice(10),
            "PageDown": lambda _v: self.move_slice(-10),
        }
        for key, func in bindings.items():
            v.bind_key(key, func, overwrite=True)
        v.mouse_wheel_callbacks.append(self._on_wheel)
        v.mouse_drag_callbacks.append(self._on_click)

    def _build_panel(self):
        panel = QWidget()
        layout = QVBoxLayout(panel)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        if self.particles:
            buttons = [("New set (n)", self.new_model), ("Delete last positive (d)",
                                                         self.delete_last)]
        else:
            buttons = [("New model (n)", self.new_model), ("Delete last (d)", self.delete_last),
                       ("Interior at cursor (i)", self.set_interior_at_cursor)]
        for text, slot in buttons:
            button = QPushButton(text)
            button.clicked.connect(lambda _checked=False, s=slot: s())
            layout.addWidget(button)
        form = QFormLayout()
        self.axis_box = QComboBox()
        self.axis_box.addItems(["z", "y", "x"])
        self.axis_box.currentTextChanged.connect(self.set_axis)
        form.addRow("Slice along", self.axis_box)
        self.gaussian_box = QCheckBox("Gaussian contrast")
        self.gaussian_box.toggled.connect(self.set_gaussian)
        self.sigma_box = QDoubleSpinBox()
        self.sigma_box.setRange(0.5, 10.0)
        self.sigma_box.setSingleStep(0.5)
        self.sigma_box.setValue(self.sigma)
        self.sigma_box.valueChanged.connect(self.set_sigma)
        form.addRow(self.gaussian_box, self.sigma_box)
        self.montage_box = QCheckBox("Montage of slices")
        self.montage_box.toggled.connect(self.set_montage)
        form.addRow(self.montage_box)
        self.fit_box = QCheckBox("Preview fitted model")
        self.fit_box.toggled.connect(self.set_fit_preview)
        if not self.particles:
            form.addRow(self.fit_box)
        layout.addLayout(form)
        help_label = QLabel(PARTICLE_HELP if self.particles else HELP)
        help_label.setTextFormat(Qt.RichText)
        layout.addWidget(help_label)
        layout.addStretch(1)
        self.panel = panel
        self.viewer.window.add_dock_widget(panel, area="right", name="picking")
        self.montage_label = QLabel()
        self.montage_label.setAlignment(Qt.AlignCenter)
        self.montage_dock = self.viewer.window.add_dock_widget(
            self.montage_label, area="bottom", name="montage")
        self.montage_dock.setVisible(False)

    # -- geometry -----------------------------------------------------------
    def cursor_xyz(self):
        """Cursor position in the tomogram, (x, y, z) voxels (bottom-left origin)."""
        z, y, x = np.asarray(self.viewer.cursor.position, dtype=float)[-3:]
        return np.array([x, y, z])

    @property
    def slice_index(self):
        return int(self.viewer.dims.current_step["zyx".index(self.axis)])

    def move_slice(self, delta):
        a = "zyx".index(self.axis)
        step = list(self.viewer.dims.current_step)
        step[a] = int(np.clip(step[a] + delta, 0, self.volume.shape[a] - 1))
        self.viewer.dims.current_step = tuple(step)

    def set_axis(self, axis):
        """Slice along 'z', 'y' or 'x' (napari dims order)."""
        if axis not in display.SLICE_ORDERS:
            raise ValueError(f"axis must be 'z', 'y' or 'x', got {axis!r}")
        self.axis = axis
        self.viewer.dims.order = display.SLICE_ORDERS[axis]
        if self.axis_box.currentText() != axis:
            self.axis_box.setCurrentText(axis)
        self.viewer.reset_view()
        self._update_montage()

    # -- actions --------------------------------------------------------------
    def add_point_at_cursor(self):
        return self.session.add_point(self.ts_id, self.cursor_xyz())

    def add_negative_at_cursor(self):
        """A negative pick under the cursor (particle mode only)."""
        if self.particles:
            return self.session.add_negative(self.ts_id, self.cursor_xyz())
        return None

    def delete_last(self):
        return self.session.delete_last(self.ts_id)

    @property
    def delete_distance(self):
        """How near (voxels) a pick must be to be removed by Shift+click or 'c'."""
        return self.marker_size / 2 if self.particles else 2 * self.marker_size

    def delete_nearest_to_cursor(self):
        return self.session.delete_nearest(self.ts_id, self.cursor_xyz(),
                                           max_distance=self.delete_distance)

    def new_model(self):
        return self.session.new_model(self.ts_id)

    def set_interior_at_cursor(self):
        if self.particles:
            return None
        return self.session.set_interior(self.ts_id, self.cursor_xyz())

    @property
    def gaussian_on(self):
        return isinstance(self.image.data, display.FilteredVolume)

    def set_gaussian(self, on):
        """Show the tomogram through the Gaussian contrast filter (or not)."""
        on = bool(on)
        if on != self.gaussian_on:
            if on:
                data = display.FilteredVolume(self.volume, self.sigma)
                if self._filtered_limits is None:
                    # the filtered range is narrower: estimate it on the central slab
                    a = "zyx".index(self.axis)
                    self._filtered_limits = display.contrast_limits(
                        data[(slice(None),) * a + (self.slice_index,)])
                self.image.data = data
                self.image.contrast_limits = self._filtered_limits
            else:
                self.image.data = self.volume
                self.image.contrast_limits = self.limits
        if self.gaussian_box.isChecked() != on:
            self.gaussian_box.setChecked(on)
        self._update_montage()

    def set_sigma(self, sigma):
        self.sigma = float(sigma)
        self._filtered_limits = None
        if self.gaussian_on:
            self.set_gaussian(False)
            self.set_gaussian(True)

    @property
    def montage_on(self):
        return self.montage_box.isChecked()

    def set_montage(self, on):
        """Show / hide the montage of the 5 slices around the current one."""
        if self.montage_box.isChecked() != bool(on):
            self.montage_box.setChecked(bool(on))  # re-enters through toggled
            return
        self.montage_dock.setVisible(bool(on))
        self._update_montage()

    def montage_image(self, count=5):
        """The montage shown in the dock: (mosaic, slice indices)."""
        data = self.image.data
        return display.montage(data, axis=self.axis, center=self.slice_index, count=count,
                               ncols=count)

    def _update_montage(self):
        if not self.montage_on:
            return
        mosaic, _ = self.montage_image()
        limits = self.image.contrast_limits
        pixmap = QPixmap.fromImage(_gray_qimage(mosaic, limits))
        self.montage_label.setPixmap(pixmap.scaledToHeight(200, Qt.SmoothTransformation))

    @property
    def fit_preview_on(self):
        return self.fit_box.isChecked()

    def set_fit_preview(self, on):
        """Show / hide the model workflow's fit of every model of this tomogram."""
        if self.fit_box.isChecked() != bool(on):
            self.fit_box.setChecked(bool(on))  # re-enters through toggled
            return
        self.fit_layer.visible = bool(on)
        self.refresh()

    def fitted_models(self):
        """The fit of each model (`tomopick.core.geometry.crop_model`), as the model
        workflow would make it, with cropping points one marker diameter apart.

        Returns
        -------
        fitted : dict of int -> ModelCrop
        failed : dict of int -> str
            Why a model cannot be fitted yet (e.g. too few points).
        """
        from tomopick.core import geometry

        s, ts = self.session, self.ts_id
        fitted, failed = {}, {}
        spacing = self.marker_size
        for model in s.model_ids(ts):
            points = s.points(ts, model)
            try:
                # a coarse mesh keeps the preview interactive
                fitted[model] = geometry.crop_model(
                    s.model_type, points, interior=s.interior(ts, model), spacing=spacing,
                    edge=spacing, max_triangles=5000, dz=spacing)
            except (ValueError, np.linalg.LinAlgError) as err:
                failed[model] = str(err)
        return fitted, failed

    def _refresh_fit(self):
        if not self.fit_preview_on:
            self.fit_failures = {}
            return
        fitted, self.fit_failures = self.fitted_models()
        if fitted:
            positions = np.concatenate([c.positions for c in fitted.values()])
            groups = np.concatenate([np.full(len(c), m) for m, c in fitted.items()])
            self.fit_layer.data = display.to_zyx(positions)
            self.fit_layer.face_color = display.group_colors(groups)
        else:
            self.fit_layer.data = np.zeros((0, 3))

    # -- events --------------------------------------------------------------
    def _on_wheel(self, viewer, event):
        delta = float(np.asarray(event.delta)[1]) if np.ndim(event.delta) else float(event.delta)
        if delta == 0:
            return
        if "Control" in event.modifiers:
            viewer.camera.zoom *= 1.15 ** np.sign(delta)
        else:
            self.move_slice(int(np.sign(delta)))

    def _on_click(self, viewer, event):
        if event.button != 1:
            return None
        z, y, x = np.asarray(event.position, dtype=float)[-3:]
        if "Shift" in event.modifiers:
            self.session.delete_nearest(self.ts_id, (x, y, z), max_distance=self.delete_distance)
        elif "Control" in event.modifiers:
            if self.particles:
                self.session.add_negative(self.ts_id, (x, y, z))
            else:
                self.session.add_point(self.ts_id, (x, y, z))
        elif self.particles:
            # a plain press also starts a pan: pick only if the mouse is released unmoved
            return self._pick_unless_dragged(event, (x, y, z))
        return None

    def _pick_unless_dragged(self, event, xyz):
        """napari drag-callback generator: add a positive on release without a move."""
        dragged = False
        yield
        while event.type == "mouse_move":
            dragged = True
            yield
        if not dragged:
            self.session.add_point(self.ts_id, xyz)

    def _on_slice_change(self, event=None):
        self._update_montage()

    def _on_session_change(self, ts_id):
        if ts_id is None or ts_id == self.ts_id:
            try:
                self.refresh()
            except RuntimeError:  # the user closed this window: stop listening
                self._forget()

    def _forget(self):
        self.session.remove_listener(self._on_session_change)

    def refresh(self):
        """Redraw points, interior markers and the status from the session."""
        s, ts = self.session, self.ts_id
        points = s.points(ts)
        models = s.point_models(ts)
        current = s.current_model(ts)
        colors = display.group_colors(models)
        self.points_layer.data = display.to_zyx(points)
        if len(points):
            self.points_layer.face_color = colors
            # the current model is ringed in white, the others in their own colour
            border = np.where((models == current)[:, None], [[1, 1, 1, 1]], colors)
            self.points_layer.border_color = border
        if self.particles:
            self._refresh_particles()
            return
        interior_models, interiors = s.interiors(ts)
        self.interior_layer.data = display.to_zyx(interiors)
        if len(interiors):
            self.interior_layer.face_color = display.group_colors(interior_models)
        self._refresh_fit()
        n_current = len(s.points(ts, current))
        marker = "set" if s.interior(ts) is not None else "none"
        fit = "".join(f"<br>model {m} not fitted: {why}" for m, why in self.fit_failures.items())
        self.status_label.setText(
            f"<b>{ts}</b><br>model type: {s.model_type}<br>current model: {current} "
            f"({n_current} points, interior {marker})<br>models: {len(s.model_ids(ts))}, "
            f"points: {s.point_count(ts)}<br>status: {s.status(ts)}{fit}")

    def _refresh_particles(self):
        s, ts = self.session, self.ts_id
        negatives = s.negatives(ts)
        self.negatives_layer.data = display.to_zyx(negatives)
        if len(negatives):
            self.negatives_layer.face_color = [NEGATIVE_COLOR] * len(negatives)
        current = s.current_model(ts)
        self.status_label.setText(
            f"<b>{ts}</b><br>particles, box {self.marker_size:g} voxels<br>current set: "
            f"{current} ({len(s.points(ts, current))} positives, "
            f"{len(s.negatives(ts, current))} negatives)<br>sets: {len(s.model_ids(ts))}, "
            f"positives: {s.point_count(ts)}, negatives: {s.negative_count(ts)}<br>"
            f"status: {s.status(ts)}")

    def close(self):
        self._forget()
        try:
            self.viewer.close()
        except (RuntimeError, AttributeError):  # already closed by the user
            pass


class TomogramListDialog(QDialog):
    """The tomograms of a picking session with status and counts; double-click to pick."""

    def __init__(self, session, tomograms, box_size=32, parent=None):
        super().__init__(parent)
        self.session = session
        self.COLUMNS = session.LIST_COLUMNS
        self.tomograms = {t: (path, voxel) for t, path, voxel in tomograms}
        self.order = [t for t, _, _ in tomograms]
        self.box_size = box_size
        self.pickers = {}
        self.setWindowTitle(f"tomopick picking: {session.model_type} ({session.points_csv})")
        self.setModal(False)
        layout = QVBoxLayout(self)
        self.table = QTableWidget(len(self.order), len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellDoubleClicked.connect(lambda row, _col: self.open_picker(self.order[row]))
        layout.addWidget(QLabel("Double-click a tomogram to pick it. Points are saved as you "
                                "pick."))
        layout.addWidget(self.table)
        row = QHBoxLayout()
        done = QPushButton("Done")
        done.clicked.connect(self.accept)
        row.addStretch(1)
        row.addWidget(done)
        layout.addLayout(row)
        session.add_listener(self._on_session_change)
        self.refresh()
        self.resize(560, 120 + 30 * min(len(self.order), 15))

    def refresh(self):
        for row, ts in enumerate(self.order):
            values = self.session.list_row(ts)
            for col, value in enumerate(values):
                self.table.setItem(row, col, QTableWidgetItem(str(value)))

    def row_values(self, ts_id):
        row = self.order.index(ts_id)
        return tuple(self.table.item(row, c).text() for c in range(len(self.COLUMNS)))

    def _on_session_change(self, _ts_id):
        self.refresh()

    def open_picker(self, ts_id, show=True):
        """Open (or raise) the picker of one tomogram."""
        picker = self.pickers.get(ts_id)
        if picker is not None:
            try:
                picker.viewer.window._qt_window.raise_()
                return picker
            except (RuntimeError, AttributeError):  # the user closed that window
                self.pickers.pop(ts_id, None)
        path, _voxel = self.tomograms[ts_id]
        picker = PickerWindow(self.session, ts_id, read_mrc(path, mmap=True),
                              box_size=self.box_size, show=show)
        self.pickers[ts_id] = picker
        return picker

    def done(self, result):
        for picker in list(self.pickers.values()):
            try:
                picker.close()
            except RuntimeError:
                pass
        self.pickers.clear()
        self.session.remove_listener(self._on_session_change)
        super().done(result)


def run_picker_dialog(session, tomograms, box_size=32):
    """Show the tomogram list and block until it is closed."""
    from napari.qt import get_qapp

    get_qapp()
    dialog = TomogramListDialog(session, tomograms, box_size)
    loop = QEventLoop()
    dialog.finished.connect(loop.quit)
    dialog.show()
    loop.exec_()
    return dialog.result()
