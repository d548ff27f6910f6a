"""Open the napari viewers described by a view spec (``python -m tomopick.viewers.launch``).

Scipion's project window runs Tk; napari needs Qt's event loop. The Scipion
viewers (`.viewers`) therefore write a *view spec* (JSON + an .npz of
coordinates) and run this module in a separate process. Subsets the user saves
are written as ``subset_NNN.json`` files ({"kept_ids": [...]}) in the spec's
``result_dir``; the Scipion side registers them when the process ends.

Spec keys: ``kind`` (tomograms, coordinates, meshes, subtomograms, average,
masks, scores), ``title``, ``tomograms`` (list of {tsId, path, voxel_size}), ``picks``
(a `Picks.save` file: positions in voxels of each tomogram, core matrices and
scores when the set has them, ``extra['ids']`` the object ids), ``model_types`` and ``interiors`` (meshes, keyed
"tsId:modelId"), ``subtomograms`` (list of {name, path}),
``masks`` (list of {tsId, path, tomogram}), ``scores`` (list of {tsId, path}: score
maps drawn over the tomogram of the same tsId), ``plot`` (an image shown beside an
average, e.g. its FSC curve), ``result_dir``.
"""
import json
import os
import sys

import numpy as np

from tomopick.core.formats.mrc import read_mrc
from tomopick.core.picks import Picks


def load_picks(path):
    """The `Picks` of a spec (``extra['ids']``: the coordinates' object ids)."""
    return Picks.load(path)


class SubsetCollector:
    """Kept ids across several per-tomogram views of one coordinate set.

    Tomograms never opened keep all their coordinates.
    """

    def __init__(self, picks, result_dir):
        self.picks = picks
        self.result_dir = result_dir
        self.views = {}
        self.saved = []

    def kept_ids(self):
        kept = []
        for ts_id in dict.fromkeys(self.picks.tomo_ids.tolist()):
            rows = self.picks.tomo_ids == ts_id
            if ts_id in self.views:
                kept.append(self.views[ts_id].kept_ids())
            else:
                kept.append(self.picks.extra["ids"][rows])
        return np.concatenate(kept) if kept else np.zeros(0, int)

    def save(self, _kept_in_view=None):
        """Write the current subset as the next ``subset_NNN.json``; returns its path."""
        os.makedirs(self.result_dir, exist_ok=True)
        path = os.path.join(self.result_dir, f"subset_{len(self.saved) + 1:03d}.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as out:
            json.dump({"kept_ids": [int(i) for i in self.kept_ids()]}, out)
        os.replace(tmp, path)
        self.saved.append(path)
        return path


def open_tomogram(spec, ts_id, show=True, collector=None):
    """The view of one tomogram of a spec (coordinates, meshes or masks kind)."""
    from . import slice_viewer

    entry = {t["tsId"]: t for t in spec["tomograms"]}[ts_id]
    volume = read_mrc(entry["path"], mmap=True)
    kind = spec["kind"]
    title = f"{spec.get('title', kind)}: {ts_id}"
    picks = load_picks(spec["picks"]) if spec.get("picks") else None
    if picks is not None:
        sub = picks.for_tomogram(ts_id)
    if kind == "meshes":
        prefix = f"{ts_id}:"
        types = {int(k[len(prefix):]): v for k, v in spec.get("model_types", {}).items()
                 if k.startswith(prefix)}
        interiors = {int(k[len(prefix):]): v for k, v in spec.get("interiors", {}).items()
                     if k.startswith(prefix)}
        return slice_viewer.mesh_viewer(volume, sub.positions, sub.group_ids,
                                        model_type=types or "Vesicle", interiors=interiors,
                                        title=title, show=show)
    if kind == "scores":
        score = next(m for m in spec["scores"] if m["tsId"] == ts_id)
        positions = sub.positions if picks is not None else None
        return slice_viewer.tomogram_viewer(
            volume, positions, scores=sub.scores if picks is not None else None,
            colors_by="score" if picks is not None and sub.scores is not None else "group",
            overlay=read_mrc(score["path"]), point_size=spec.get("point_size", 8.0),
            title=title, show=show, voxel_size=entry.get("voxel_size"))
    if kind == "masks":
        mask = next(m for m in spec["masks"] if m["tsId"] == ts_id)
        labels = read_mrc(mask["path"])
        return slice_viewer.segmentation_viewer(volume, labels, title=title, show=show)
    if kind == "coordinates":
        # a score slider only when the set has scores that differ
        has_scores = picks.scores is not None and len(picks) > 0 and np.ptp(picks.scores) > 0
        scores = sub.scores if has_scores else None
        colors_by = spec.get("colors_by") or ("score" if scores is not None else "group")
        view = slice_viewer.tomogram_viewer(
            volume, sub.positions, matrices=sub.matrices,
            group_ids=sub.group_ids, scores=scores, ids=sub.extra["ids"], colors_by=colors_by,
            point_size=spec.get("point_size", 8.0), title=title, show=show,
            voxel_size=entry.get("voxel_size"),
            on_save=collector.save if collector is not None else None)
        if collector is not None:
            collector.views[ts_id] = view
        return view
    return slice_viewer.tomogram_viewer(volume, title=title, show=show,
                                        voxel_size=entry.get("voxel_size"))


def open_views(spec, show=True):
    """Build the views of a spec.

    Returns
    -------
    list
        The open views; for multi-tomogram kinds a chooser dialog is added as
        ``views[0]`` (a QDialog) that opens tomograms on double-click.
    SubsetCollector or None
    """
    from . import slice_viewer

    kind = spec["kind"]
    if kind == "subtomograms":
        volumes = [read_mrc(s["path"]) for s in spec["subtomograms"]]
        names = [s["name"] for s in spec["subtomograms"]]
        return [slice_viewer.subtomogram_gallery(volumes, names, title=spec.get("title", kind),
                                                 show=show)], None
    if kind == "average":
        views = [slice_viewer.average_viewer(read_mrc(spec["average"]),
                                             title=spec.get("title", kind), show=show)]
        if spec.get("plot"):
            from skimage.io import imread
            views.append(slice_viewer.plot_viewer(imread(spec["plot"]),
                                                  title=os.path.basename(spec["plot"]),
                                                  show=show))
        return views, None
    collector = None
    if kind == "coordinates":
        collector = SubsetCollector(load_picks(spec["picks"]), spec["result_dir"])
    ts_ids = [t["tsId"] for t in spec["tomograms"]]
    if len(ts_ids) == 1:
        return [open_tomogram(spec, ts_ids[0], show, collector)], collector
    return [_chooser(spec, ts_ids, show, collector)], collector


def _chooser(spec, ts_ids, show, collector):
    from qtpy.QtWidgets import QDialog, QLabel, QListWidget, QPushButton, QVBoxLayout

    dialog = QDialog()
    dialog.setWindowTitle(f"tomopick: {spec.get('title', spec['kind'])}")
    layout = QVBoxLayout(dialog)
    layout.addWidget(QLabel("Double-click a tomogram to open it."))
    listing = QListWidget()
    listing.addItems(ts_ids)
    layout.addWidget(listing)
    dialog.views = {}

    def opened(item):
        ts_id = item.text()
        dialog.views[ts_id] = open_tomogram(spec, ts_id, True, collector)

    listing.itemDoubleClicked.connect(opened)
    if collector is not None:
        button = QPushButton("Save subset (all tomograms)")
        button.clicked.connect(lambda _checked=False: collector.save())
        layout.addWidget(button)
    close = QPushButton("Close")
    close.clicked.connect(dialog.accept)
    layout.addWidget(close)
    dialog.listing = listing
    if show:
        dialog.show()
    return dialog


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tomopick.viewers.launch SPEC.json", file=sys.stderr)
        return 2
    with open(argv[0]) as handle:
        spec = json.load(handle)
    from napari.qt import get_qapp

    app = get_qapp()
    views, _collector = open_views(spec, show=True)  # noqa: F841 (keep the views alive)
    app.exec_()
    return 0


if __name__ == "__main__":
    sys.exit(main())
