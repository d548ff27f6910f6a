"""Regenerate the README screenshots of the picker and the viewers.

    python -m tomopick.viewers.screenshots docs/screenshots

Renders on a private Xvfb (see `headless`) from a simulated phantom, so the
images are reproducible: the picker with two vesicle models, coordinates with
orientation arrows, the fitted vesicle of a mesh, a subtomogram gallery, a
subtomogram average, a segmentation overlay and a template-matching score map over
its tomogram.
"""
import os
import sys

import numpy as np


def _shoot(view_or_viewer, path, size=(900, 560), canvas_only=False, zoom_on=None):
    from qtpy.QtWidgets import QApplication

    viewer = getattr(view_or_viewer, "viewer", view_or_viewer)
    qt_viewer = viewer.window._qt_viewer
    # the layer list and controls take half the width; the README shows the data
    qt_viewer.dockLayerList.setVisible(False)
    qt_viewer.dockLayerControls.setVisible(False)
    viewer.window._qt_window.resize(*size)
    for _ in range(3):
        QApplication.processEvents()
    viewer.reset_view()
    if zoom_on is not None:
        center, factor = zoom_on
        viewer.camera.center = tuple(center)
        viewer.camera.zoom = viewer.camera.zoom * factor
    QApplication.processEvents()
    image = viewer.screenshot(canvas_only=canvas_only, flash=False)[..., :3]
    # a 256-colour palette keeps the README images small; grey data loses nothing visible
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(image)).quantize(256).save(path, optimize=True)
    return path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = argv[0] if argv else os.path.join("docs", "screenshots")
    os.makedirs(out, exist_ok=True)
    import tempfile

    # fresh napari settings: window sizes saved by earlier sessions must not leak in
    os.environ.setdefault("NAPARI_CONFIG", os.path.join(tempfile.mkdtemp(), "napari.yaml"))
    from . import headless

    if headless.virtual_display() is None:
        raise SystemExit("Xvfb is needed to render the screenshots (see tomopick.viewers.headless)")
    from napari.qt import get_qapp

    get_qapp()
    from tomopick.core import alignment, extraction, simulate

    from . import slice_viewer
    from ._qt_picker import PickerWindow
    from .picker import PickingSession

    phantom = simulate.simulate_tomogram(shape=(64, 128, 128), voxel_size=10.0, n_particles=24,
                                         n_vesicles=1, proteins_per_vesicle=12, snr=2.0, seed=3)
    volume = phantom.tomogram
    written = []

    # the picker: points on the vesicle's outline in its central slice, then a second model
    vesicle = phantom.vesicles[0]
    center = np.asarray(vesicle["center"], float)
    radius = float(np.min(vesicle["semi_axes"]))
    z = int(round(center[2]))
    session = PickingSession(os.path.join(out, ".picker_points.csv"), ["phantom"], "Vesicle",
                             autosave=False)
    for angle in np.radians([0, 60, 120, 200, 280]):
        session.add_point("phantom", center + radius * np.array([np.cos(angle), np.sin(angle), 0]))
    for dz in (-0.7, 0.7):  # two more on other slices: a sphere is not fitted from one circle
        session.add_point("phantom", center + radius * np.array([0.71, 0, dz]))
    session.new_model("phantom")
    for dx in (-12, -4, 4):
        session.add_point("phantom", (20 + dx, 110, z))
    session.set_interior("phantom", (12, 100, z))
    win = PickerWindow(session, "phantom", volume, box_size=24)
    win.set_gaussian(True)
    win.viewer.dims.current_step = (z, 64, 64)
    win.set_montage(True)
    win.set_fit_preview(True)
    written.append(_shoot(win, os.path.join(out, "picker.png"), size=(1000, 720)))
    win.close()

    # coordinates with orientation arrows, coloured by particle class
    truth = phantom.particles
    view = slice_viewer.tomogram_viewer(volume, truth.positions, matrices=truth.matrices,
                                        group_ids=truth.group_ids, point_size=12,
                                        arrow_length=10, title="phantom coordinates")
    view.set_slice(z)
    view.set_gaussian(1.0)
    written.append(_shoot(view, os.path.join(out, "coordinates.png")))
    view.close()

    # a mesh: the user's points and the sphere fitted to them, with outward normals
    points, _normals = simulate.vesicle_surface_points(vesicle, 14, np.random.default_rng(0))
    view = slice_viewer.mesh_viewer(volume, points, np.ones(len(points), int), "Vesicle",
                                    title="mesh and fitted vesicle", point_size=4, spacing=4)
    view.set_slice(z)
    written.append(_shoot(view, os.path.join(out, "meshes.png"), size=(760, 520),
                          zoom_on=((z, center[1], center[0]), 2.0)))
    view.close()

    # subtomograms of one class, their gallery and their aligned average
    cls = int(np.bincount(truth.group_ids).argmax())
    rows = truth.group_ids == cls
    # the phantom's matrices hold the particle position as their shift: keep the rotation
    rotations = truth.matrices[rows].copy()
    rotations[:, :3, 3] = 0
    boxes = extraction.extract_subtomograms(volume, truth.positions[rows], 24,
                                            matrices=rotations, invert=True,
                                            normalize="normalize")
    view = slice_viewer.subtomogram_gallery(list(boxes.boxes[:12]),
                                            names=[str(i) for i in boxes.index[:12]])
    written.append(_shoot(view, os.path.join(out, "gallery.png"), size=(700, 560),
                          canvas_only=True))
    view.close()
    average = alignment.average_aligned(boxes.boxes, boxes.matrices)
    view = slice_viewer.average_viewer(average)
    written.append(_shoot(view, os.path.join(out, "average.png"), size=(800, 360),
                          canvas_only=True))
    view.close()

    # a segmentation over the tomogram (thresholded noise-free density, labelled)
    from scipy import ndimage

    clean = phantom.clean
    labels, _ = ndimage.label(clean < np.percentile(clean, 3))
    view = slice_viewer.segmentation_viewer(volume, labels, title="segmentation")
    view.set_slice(z)
    written.append(_shoot(view, os.path.join(out, "segmentation.png")))
    view.close()

    # template matching's score map over a lamella of ribosomes, with its picks
    from tomopick import demo
    from tomopick.core.formats import read_mrc
    from tomopick.core.template_matching import match_template, prepare_template

    ribosomes, class_id = demo.simulate_ribosomes(shape=(40, 112, 112), n_particles=24, seed=5,
                                                  log=print)
    map_path = demo.find_data_file(demo.RIBOSOME_MAP)
    if map_path is not None:
        reference, reference_voxel = read_mrc(map_path), 8.66
    else:   # the built-in class the phantom then holds
        reference = simulate.particle_template(class_id, demo.RIBOSOME_VOXEL)
        reference_voxel = demo.RIBOSOME_VOXEL
    template, mask, _ = prepare_template(reference, reference_voxel, demo.RIBOSOME_VOXEL,
                                         demo.RIBOSOME_DIAMETER, invert=True)
    match = match_template(ribosomes.tomogram, demo.RIBOSOME_VOXEL, template, mask,
                           demo.RIBOSOME_DIAMETER, tilt_range=(-60, 60), lowpass=60.0,
                           coarse_step=30.0)
    zr = int(round(np.median(match.positions[:, 2]))) if len(match.positions) else 20
    view = slice_viewer.tomogram_viewer(ribosomes.tomogram, match.positions,
                                        scores=match.scores, colors_by="score",
                                        overlay=match.score_map, point_size=15,
                                        title="template matching score map")
    view.set_slice(zr)
    written.append(_shoot(view, os.path.join(out, "score_map.png")))
    view.close()
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
