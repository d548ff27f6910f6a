"""napari viewers built from plain arrays: tomograms with coordinates, meshes,
subtomogram galleries, averages and segmentations.

Each function takes numpy arrays (no Scipion objects) and returns a small view
object holding the napari viewer, so the Scipion viewers (`.viewers`) and the
tests share one construction path. napari / Qt are imported inside the
functions: importing this module needs no display.

Conventions: volumes [z, y, x]; positions and vectors (x, y, z) voxels,
bottom-left origin; orientations are core transforms [[R, t]], drawn as arrows along
``R @ (0, 0, 1)``.
"""
import numpy as np

from . import display

#: Width of a coordinate's ring, relative to its diameter.
RING_WIDTH = 0.2


def _napari():
    import napari

    return napari


def world_to_canvas(viewer, zyx):
    """Canvas pixel (row, column) of a world point (z, y, x) on a 2D napari view.

    Uses the camera's centre and zoom and the canvas size; a canvas-only
    screenshot has that size on a 1:1 display (Xvfb).
    """
    displayed = list(viewer.dims.displayed)
    # a 2D viewer (gallery) takes the last two values: (y, x)
    point = np.asarray(zyx, dtype=float)[-viewer.dims.ndim:][displayed]
    center = np.asarray(viewer.camera.center, dtype=float)[-2:]
    zoom = float(viewer.camera.zoom)
    height, width = viewer.window._qt_viewer.canvas.size
    return (point - center) * zoom + np.array([height, width]) / 2.0


class _View:
    """Common part of the views: the viewer, screenshots, closing."""

    def __init__(self, viewer):
        self.viewer = viewer

    def screenshot(self, path=None):
        """The canvas as an (H, W, 4) uint8 RGBA array (also written to ``path``)."""
        from qtpy.QtWidgets import QApplication

        QApplication.processEvents()
        image = self.viewer.screenshot(canvas_only=True, flash=False)
        if path is not None:
            from skimage.io import imsave

            imsave(path, image[..., :3], check_contrast=False)
        return image

    def resize(self, width, height):
        """Resize the window (pixels) and fit the data to the new canvas."""
        from qtpy.QtWidgets import QApplication

        self.viewer.window._qt_window.resize(int(width), int(height))
        QApplication.processEvents()
        self.viewer.reset_view()
        QApplication.processEvents()

    def world_to_canvas(self, zyx):
        """Canvas pixel (row, column) of a world point (z, y, x); see `world_to_canvas`."""
        return world_to_canvas(self.viewer, zyx)

    def close(self):
        self.viewer.close()


class TomogramView(_View):
    """A tomogram with coordinates, orientation arrows and optional labels.

    Built by `tomogram_viewer`. The user hides coordinates below a score
    threshold (slider) and removes unwanted ones (select them in the points
    layer and press Delete / the button, or ``c`` under the cursor); "Save
    subset" passes the kept ids to ``on_save``.

    Attributes
    ----------
    ids : (N,) ndarray of int
        Identifier of each coordinate (Scipion object id).
    removed : set of int
        Ids removed by the user.
    threshold : float or None
        Coordinates with a lower score are hidden (and not kept).
    """

    def __init__(self, viewer, volume, positions, matrices, colors, group_ids, scores, ids,
                 point_size, arrow_length, on_save):
        super().__init__(viewer)
        self.volume = volume
        self.positions = positions
        self.matrices = matrices
        self.colors = colors
        self.group_ids = group_ids
        self.scores = scores
        self.ids = ids
        self.point_size = point_size
        self.arrow_length = arrow_length
        self.on_save = on_save
        self.removed = set()
        self.threshold = None
        self.axis = "z"
        self.points_layer = None
        self.vectors_layer = None
        self._shown = np.zeros(len(ids), dtype=bool)

    # -- what is kept -------------------------------------------------------
    def visible_mask(self):
        """Coordinates shown now: above the threshold and not removed."""
        mask = np.ones(len(self.ids), dtype=bool)
        if self.scores is not None:
            mask &= display.score_mask(self.scores, self.threshold)
        if self.removed:
            mask &= ~np.isin(self.ids, list(self.removed))
        return mask

    def kept_ids(self):
        """Ids of the coordinates the user keeps (visible ones), in input order."""
        return self.ids[self.visible_mask()]

    def set_threshold(self, threshold):
        """Hide coordinates whose score is below ``threshold`` (None: show all)."""
        self.threshold = None if threshold is None else float(threshold)
        self._update()

    def remove_ids(self, ids):
        """Remove coordinates by id."""
        self.removed.update(int(i) for i in np.atleast_1d(ids))
        self._update()

    def remove_selected(self):
        """Remove the coordinates selected in the points layer."""
        shown = np.flatnonzero(self._shown)
        selected = sorted(self.points_layer.selected_data)
        self.remove_ids(self.ids[shown[selected]])

    def remove_nearest(self, xyz, max_distance=None):
        """Remove the shown coordinate nearest to (x, y, z); returns its id or None."""
        shown = np.flatnonzero(self._shown)
        if not len(shown):
            return None
        distance = np.linalg.norm(self.positions[shown] - np.asarray(xyz, float), axis=1)
        best = int(np.argmin(distance))
        if max_distance is not None and distance[best] > max_distance:
            return None
        self.remove_ids([self.ids[shown[best]]])
        return int(self.ids[shown[best]])

    def restore_all(self):
        self.removed.clear()
        self._update()

    def save_subset(self):
        """Hand the kept ids to ``on_save`` (the Scipion viewer registers the subset)."""
        kept = self.kept_ids()
        if self.on_save is not None:
            self.on_save(kept)
        if getattr(self, "status_label", None) is not None:
            self.status_label.setText(f"saved a subset of {len(kept)} / {len(self.ids)}")
        return kept

    def _update(self):
        if self.points_layer is None:
            return
        mask = self.visible_mask()
        self._shown = mask
        self.points_layer.selected_data = set()
        self.points_layer.data = display.to_zyx(self.positions[mask])
        if mask.any():
            self.points_layer.border_color = self.colors[mask]
        if self.vectors_layer is not None:
            vectors = display.orientation_vectors(self.positions[mask], self.matrices[mask],
                                                  self.arrow_length)
            self.vectors_layer.data = vectors
            if mask.any():
                self.vectors_layer.edge_color = self.colors[mask]
        if getattr(self, "status_label", None) is not None:
            self.status_label.setText(f"shown / kept: {mask.sum()} of {len(mask)}")

    # -- slicing --------------------------------------------------------------
    def set_axis(self, axis):
        """Slice along 'z', 'y' or 'x'."""
        if axis not in display.SLICE_ORDERS:
            raise ValueError(f"axis must be 'z', 'y' or 'x', got {axis!r}")
        self.axis = axis
        self.viewer.dims.order = display.SLICE_ORDERS[axis]
        self.viewer.reset_view()

    def set_slice(self, index):
        """Show slice ``index`` along the current slicing axis."""
        a = "zyx".index(self.axis)
        step = list(self.viewer.dims.current_step)
        step[a] = int(np.clip(index, 0, self.volume.shape[a] - 1))
        self.viewer.dims.current_step = tuple(step)

    def set_gaussian(self, sigma):
        """Show the tomogram through a Gaussian filter of ``sigma`` voxels (0: raw)."""
        image = self.viewer.layers["tomogram"]
        box = getattr(self, "sigma_box", None)
        if box is not None and box.value() != (sigma or 0):
            box.setValue(sigma or 0)  # re-enters through valueChanged
            return
        if sigma and sigma > 0:
            image.data = display.FilteredVolume(self.volume, sigma)
            a = "zyx".index(self.axis)
            index = int(self.viewer.dims.current_step[a])
            image.contrast_limits = display.contrast_limits(
                image.data[(slice(None),) * a + (index,)])
        else:
            image.data = self.volume
            image.contrast_limits = display.contrast_limits(self.volume)


def _controls(view, score_range, subset=True):
    """Dock with slicing axis, contrast filter, score threshold, removal and saving."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QPushButton,
                                QSlider, QVBoxLayout, QWidget)

    panel = QWidget()
    layout = QVBoxLayout(panel)
    form = QFormLayout()
    axis_box = QComboBox()
    axis_box.addItems(["z", "y", "x"])
    axis_box.currentTextChanged.connect(view.set_axis)
    form.addRow("Slice along", axis_box)
    sigma_box = QDoubleSpinBox()
    sigma_box.setRange(0.0, 10.0)
    sigma_box.setSingleStep(0.5)
    sigma_box.setSpecialValueText("off")
    sigma_box.valueChanged.connect(view.set_gaussian)
    form.addRow("Gaussian contrast (voxels)", sigma_box)
    view.sigma_box = sigma_box
    view.threshold_slider = None
    if score_range is not None:
        low, high = score_range
        slider = QSlider(Qt.Horizontal)
        slider.setRange(0, 1000)
        value_label = QLabel(f"{low:.3g}")

        def moved(position):
            threshold = low + (high - low) * position / 1000.0
            value_label.setText(f"{threshold:.3g}")
            view.set_threshold(threshold if position > 0 else None)

        slider.valueChanged.connect(moved)
        form.addRow("Score threshold", slider)
        form.addRow("", value_label)
        view.threshold_slider = slider
    layout.addLayout(form)
    view.status_label = None
    if subset:
        for text, slot in (("Remove selected (Delete)", view.remove_selected),
                           ("Restore removed", view.restore_all),
                           ("Save subset", view.save_subset)):
            button = QPushButton(text)
            button.clicked.connect(lambda _checked=False, s=slot: s())
            layout.addWidget(button)
        view.status_label = QLabel()
        layout.addWidget(view.status_label)
        layout.addWidget(QLabel("c: remove nearest; select points (3) then Delete"))
    layout.addWidget(QLabel("Up/Down: move slices"))
    layout.addStretch(1)
    view.viewer.window.add_dock_widget(panel, area="right", name="coordinates")
    view.panel = panel


def tomogram_viewer(volume, positions=None, z_axes=None, colors_by="group", group_ids=None,
                    scores=None, ids=None, matrices=None, labels=None, overlay=None, title="tomogram",
                    point_size=8.0, arrow_length=None, on_save=None, voxel_size=None,
                    show=True, controls=True):
    """A napari slice viewer of a tomogram with its coordinates.

    Parameters
    ----------
    volume : (nz, ny, nx) array-like
        The tomogram (memory maps welcome).
    positions : (N, 3) array of float, optional
        Coordinates (x, y, z) voxels, bottom-left origin.
    z_axes : (N, 3) array of float, optional
        Particle z-axes ``R @ (0, 0, 1)`` (x, y, z); drawn as arrows. Use
        ``matrices`` instead to pass the full transforms.
    colors_by : {'group', 'score'}
        Colour coordinates by ``group_ids`` (a distinct colour per group) or
        by ``scores`` (viridis, low to high).
    group_ids : (N,) array of int, optional
    scores : (N,) array of float, optional
        Enables the score threshold slider.
    ids : (N,) array of int, optional
        Identifiers returned by `TomogramView.kept_ids`; default 0..N-1.
    matrices : (N, 4, 4) array, optional
        Scipion transforms; their z-axes are drawn when ``z_axes`` is None.
    overlay : (nz, ny, nx) array of float, optional
        A per-voxel map (e.g. a picker's score map) drawn over the tomogram in
        colour (additive; its top percent, so peaks stand out).
    labels : (nz, ny, nx) array of int, optional
        Segmentation drawn over the tomogram as a napari Labels layer.
    point_size : float
        Marker diameter in voxels (markers show on slices within that distance).
    arrow_length : float, optional
        Voxels; default ``1.5 * point_size``.
    on_save : callable, optional
        ``on_save(kept_ids)`` when the user presses "Save subset".
    voxel_size : float, optional
        Å/voxel, shown in the title.
    show : bool
        Show the window (False for tests that only drive the logic).
    controls : bool
        Add the dock with axis / contrast / threshold / subset controls.

    Returns
    -------
    TomogramView

    Raises
    ------
    ValueError
        If the volume is not 3D or an array's length disagrees with ``positions``.
    """
    napari = _napari()
    has_points = positions is not None
    if len(volume.shape) != 3:
        raise ValueError(f"the tomogram must be 3D [z, y, x], got shape {volume.shape}")
    positions = np.zeros((0, 3)) if positions is None else np.asarray(positions, float).reshape(-1, 3)
    n = len(positions)

    def per_point(value, name, dtype):
        if value is None:
            return None
        value = np.asarray(value, dtype=dtype).reshape(-1)
        if len(value) != n:
            raise ValueError(f"{len(value)} {name} for {n} positions")
        return value

    group_ids = per_point(group_ids, "group ids", int)
    scores = per_point(scores, "scores", float)
    ids = per_point(ids, "ids", int)
    ids = np.arange(n) if ids is None else ids
    if z_axes is not None:
        z_axes = np.asarray(z_axes, float).reshape(-1, 3)
        if len(z_axes) != n:
            raise ValueError(f"{len(z_axes)} z-axes for {n} positions")
        # a rotation-free stand-in whose third column is the given axis: only R @ z is drawn
        matrices = np.zeros((n, 3, 3))
        matrices[:, :, 2] = z_axes
    elif matrices is not None:
        matrices = np.asarray(matrices, float)
        if len(matrices) != n:
            raise ValueError(f"{len(matrices)} matrices for {n} positions")
    if colors_by == "score":
        if scores is None:
            raise ValueError("colors_by='score' needs scores")
        colors = display.score_colors(scores)
    elif colors_by == "group":
        colors = display.group_colors(np.zeros(n, int) if group_ids is None else group_ids)
    else:
        raise ValueError(f"colors_by must be 'group' or 'score', got {colors_by!r}")

    suffix = f" ({voxel_size:g} Å/voxel)" if voxel_size else ""
    viewer = napari.Viewer(title=f"tomopick: {title}{suffix}", show=show,
                           axis_labels=("z", "y", "x"))
    view = TomogramView(viewer, volume, positions, matrices, colors, group_ids, scores, ids,
                        float(point_size),
                        float(arrow_length if arrow_length else 1.5 * point_size), on_save)
    viewer.add_image(volume, name="tomogram", colormap="gray",
                     contrast_limits=display.contrast_limits(volume))
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != tuple(volume.shape):
            raise ValueError(f"labels of shape {labels.shape} do not match the tomogram "
                             f"{tuple(volume.shape)}")
        viewer.add_labels(labels.astype(np.int32, copy=False), name="segmentation", opacity=0.45)
    if overlay is not None:
        if tuple(np.shape(overlay)) != tuple(volume.shape):
            raise ValueError(f"overlay of shape {np.shape(overlay)} does not match the tomogram "
                             f"{tuple(volume.shape)}")
        # only the top percent of the map in colour: peaks, not the background's texture
        sample = np.asarray(overlay[::2, ::2, ::2], dtype=np.float32)
        low, high = (float(v) for v in np.percentile(sample, [99.0, 100.0]))
        viewer.add_image(overlay, name="score", colormap="inferno", blending="additive",
                         opacity=0.7, contrast_limits=(low, max(high, low + 1e-6)))
    if has_points:
        # rings (the particle stays visible inside), as wide as the particle
        view.points_layer = viewer.add_points(
            np.zeros((0, 3)), ndim=3, name="coordinates", size=view.point_size,
            out_of_slice_display=True, face_color="transparent",
            border_width=RING_WIDTH, border_width_is_relative=True)
    if matrices is not None:
        view.vectors_layer = viewer.add_vectors(
            np.zeros((0, 2, 3)), ndim=3, name="orientation", edge_width=max(1.0, point_size / 6),
            out_of_slice_display=True, vector_style="arrow")
    viewer.dims.current_step = tuple(s // 2 for s in volume.shape)
    viewer.layers.selection.active = view.points_layer
    view._update()

    def step(delta):
        a = "zyx".index(view.axis)
        view.set_slice(viewer.dims.current_step[a] + delta)

    viewer.bind_key("Up", lambda _v: step(1), overwrite=True)
    viewer.bind_key("Down", lambda _v: step(-1), overwrite=True)
    viewer.bind_key("c", lambda _v: view.remove_nearest(
        np.asarray(viewer.cursor.position)[::-1], max_distance=view.point_size), overwrite=True)
    if view.points_layer is not None:
        view.points_layer.bind_key("Delete", lambda _l: view.remove_selected(), overwrite=True)
        view.points_layer.bind_key("Backspace", lambda _l: view.remove_selected(), overwrite=True)
    if controls:
        score_range = None
        if scores is not None and n:
            score_range = (float(np.min(scores)), float(np.max(scores)))
        _controls(view, score_range, subset=view.points_layer is not None)
        view._update()
    return view


class ImagePanelView(_View):
    """A 2D mosaic (gallery or orthogonal sections) in a napari viewer.

    Attributes
    ----------
    image : 2D ndarray
        The mosaic.
    origins : (n, 2) ndarray of int
        Top-left (row, column) of each panel in ``image``.
    panel_shape : (int, int)
        Size of one panel.
    """

    def __init__(self, viewer, image, origins, panel_shape):
        super().__init__(viewer)
        self.image = image
        self.origins = origins
        self.panel_shape = panel_shape


def _panel_view(mosaic, origins, panel_shape, title, names, show):
    napari = _napari()
    viewer = napari.Viewer(title=f"tomopick: {title}", show=show)
    viewer.add_image(mosaic, name=title, colormap="gray",
                     contrast_limits=display.contrast_limits(mosaic))
    if names is not None:
        # one text label per panel, at its top-left corner
        viewer.add_points(origins.astype(float) + 1, name="names", size=0.1,
                          text={"string": "{name}", "color": "yellow", "size": 9,
                                "anchor": "upper_left"},
                          features={"name": [str(s) for s in names]})
    viewer.reset_view()
    return ImagePanelView(viewer, mosaic, origins, panel_shape)


def subtomogram_gallery(volumes, names=None, ncols=None, title="subtomograms", show=True):
    """A gallery of the central XY slices of subtomograms.

    Parameters
    ----------
    volumes : sequence of (n, n, n) arrays
    names : sequence of str, optional
        Label of each panel (e.g. the subtomogram id).
    ncols : int, optional
        Gallery columns (default square-ish).

    Returns
    -------
    ImagePanelView
    """
    volumes = list(volumes)
    if not volumes:
        raise ValueError("the gallery needs at least one subtomogram")
    if names is not None and len(names) != len(volumes):
        raise ValueError(f"{len(names)} names for {len(volumes)} subtomograms")
    mosaic, origins = display.gallery(volumes, ncols=ncols)
    return _panel_view(mosaic, origins, np.asarray(volumes[0]).shape[1:], title, names, show)


def average_viewer(volume, title="average", show=True):
    """The three orthogonal central sections (XY, XZ, YZ) of a volume, side by side.

    Returns
    -------
    ImagePanelView
    """
    if np.ndim(volume) != 3:
        raise ValueError(f"the average must be a 3D volume, got shape {np.shape(volume)}")
    mosaic, origins = display.sections_panel(volume)
    return _panel_view(mosaic, origins, None, title, ["XY", "XZ", "YZ"], show)


def plot_viewer(image, title="plot", show=True):
    """A 2D image (e.g. an FSC plot read from a PNG, RGB or RGBA) in its own window."""
    napari = _napari()
    image = np.asarray(image)
    viewer = napari.Viewer(title=f"tomopick: {title}", show=show)
    viewer.add_image(image, name=title, rgb=image.ndim == 3 and image.shape[-1] in (3, 4))
    viewer.reset_view()
    return _View(viewer)


def mesh_viewer(volume, points, group_ids, model_type="Vesicle", interiors=None,
                title="meshes", point_size=6.0, spacing=None, show=True):
    """User points of membrane / vesicle models and the geometry fitted to them.

    Each group is fitted with `tomopick.core.geometry.crop_model` (the model
    workflow's own fit); its cropping points are drawn small with their
    normals as arrows, over the user's points.

    Parameters
    ----------
    volume : (nz, ny, nx) array-like
    points : (N, 3) array of float
        User points (x, y, z) voxels.
    group_ids : (N,) array of int
        Model of each point.
    model_type : str or dict of int -> str
        One of `tomopick.core.geometry.MODEL_TYPES`, for all models or per
        model (models missing from the dict are fitted as 'General').
    interiors : dict of int -> (3,) float, optional
        Interior marker of a model.
    spacing : float, optional
        Voxels between drawn fitted points; default ``2 * point_size``.

    Returns
    -------
    TomogramView
        With ``fitted`` (dict group -> ModelCrop) and ``failed`` (dict group ->
        reason) attributes.
    """
    from tomopick.core import geometry

    points = np.asarray(points, float).reshape(-1, 3)
    group_ids = np.asarray(group_ids, int).reshape(-1)
    if len(group_ids) != len(points):
        raise ValueError(f"{len(group_ids)} group ids for {len(points)} points")
    spacing = float(spacing or 2 * point_size)
    fitted, failed = {}, {}
    for group in np.unique(group_ids):
        interior = None if interiors is None else interiors.get(int(group))
        kind = (model_type.get(int(group), "General") if isinstance(model_type, dict)
                else model_type)
        try:
            fitted[int(group)] = geometry.crop_model(kind, points[group_ids == group],
                                                     interior=interior, spacing=spacing,
                                                     edge=spacing, dz=spacing)
        except ValueError as err:
            failed[int(group)] = str(err)
    view = tomogram_viewer(volume, points, group_ids=group_ids, title=title,
                           point_size=point_size, show=show, controls=False)
    if len(points):
        view.points_layer.face_color = view.colors   # the user's points: filled dots
    if fitted:
        positions = np.concatenate([c.positions for c in fitted.values()])
        groups = np.concatenate([np.full(len(c), g) for g, c in fitted.items()])
        normals = np.concatenate([c.normals for c in fitted.values()])
        colors = display.group_colors(groups, alpha=0.8)
        view.viewer.add_vectors(
            np.stack([display.to_zyx(positions), display.to_zyx(normals * 1.5 * point_size)], 1),
            name="fitted normals", edge_color=colors, edge_width=max(1.0, point_size / 5),
            out_of_slice_display=True, vector_style="arrow")
        view.viewer.add_points(display.to_zyx(positions), name="fitted model",
                               size=point_size * 0.6, face_color=colors,
                               out_of_slice_display=True, border_width=0)
    # keep the user's points on top
    view.viewer.layers.move(view.viewer.layers.index("coordinates"), len(view.viewer.layers))
    view.fitted, view.failed = fitted, failed
    if failed:
        view.viewer.title += "  [not fitted: " + "; ".join(
            f"model {g}: {r}" for g, r in failed.items()) + "]"
    return view


def segmentation_viewer(volume, labels, positions=None, scores=None, title="segmentation",
                        show=True, **kwargs):
    """A tomogram with a segmentation (e.g. PickET's) as a Labels layer, and optional picks."""
    return tomogram_viewer(volume, positions, labels=labels, scores=scores,
                           colors_by="score" if scores is not None else "group",
                           title=title, show=show, **kwargs)
