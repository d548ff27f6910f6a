"""The interactive picker: picking logic and its entry points.

`PickingSession` holds the user's points (per tomogram, per model) and saves
them to the points CSV after every change; it knows nothing of Qt, so it is
tested and reused without a display. `pick_interactively` opens the napari
picker on top of it (Qt is imported only there).

The points CSV it writes is ProtTomoPickVectorialPicking's ``pointsFile``
(format in `tomopick.core.formats.points`).

`ParticleSession` is the same session for particles (manual picking): each
pick is positive or negative (something that must not be picked), models are
particle *sets* (group ids), and the file is a CSV coordinate table with a
label column (`tomopick.core.formats.csv_table`), ProtTomoPickManualPicking's
``pointsFile``. `pick_interactively` opens the same napari picker in
its particle mode (``model_type=PARTICLES``).
"""
import os

import numpy as np

from tomopick.core.geometry import MODEL_TYPES  # noqa: E402,F401 (the one list)

#: Fewest points that let the model workflow fit each model type (sphere: 4
#: unknowns; general quadric ellipsoid: 9; a surface: two z-levels of two
#: points, see `SURFACE_LEVELS`; a filament axis: 2; a general cloud: 1).
MIN_POINTS = {"General": 1, "Vesicle": 4, "Ellipsoidal vesicle": 9, "Surface": 4, "Filament": 2}

#: A surface is meshed between z-levels (`geometry.surface_from_levels`): it
#: needs this many levels (points rounded to the same z) of two points or more.
SURFACE_LEVELS = 2

from tomopick.core.formats import csv_table
from tomopick.core.formats.points import INTERIOR, POINT, read_points_csv, write_points_csv
from tomopick.core.picks import Picks

#: The picker's mode for particles (manual picking), next to `MODEL_TYPES`.
PARTICLES = "Particles"


class PickingSession:
    """The user's picks on a set of tomograms, saved as they are made.

    Parameters
    ----------
    points_csv : str
        File to read existing points from (when it exists) and to rewrite,
        atomically, after every change.
    tomo_ids : sequence of str, optional
        The tomograms that can be picked; points of other tsIds found in the
        CSV are kept and written back untouched.
    model_type : str
        One of `MODEL_TYPES`; sets how many points a model needs.
    autosave : bool
        Save after every change (default); False only for scripted use.

    Notes
    -----
    Models are numbered from 1 per tomogram. The *current* model of a
    tomogram receives new points; `new_model` starts the next one.
    """

    #: Columns of the tomogram list dialog (`list_row` gives their values).
    LIST_COLUMNS = ("tsId", "status", "models", "points")
    #: Whether picks are particles (positive / negative, drawn as box circles).
    particles = False

    def __init__(self, points_csv, tomo_ids=(), model_type="General", autosave=True):
        if model_type not in MIN_POINTS:
            raise ValueError(f"unknown model type {model_type!r}; expected one of {MODEL_TYPES}")
        self.points_csv = os.fspath(points_csv)
        self.model_type = model_type
        self.autosave = autosave
        self.tomo_ids = list(dict.fromkeys(tomo_ids))
        self._points = {}      # tsId -> {modelId: [(x, y, z), ...]}
        self._interior = {}    # tsId -> {modelId: (x, y, z)}
        self._current = {}     # tsId -> modelId
        self._listeners = []
        if os.path.exists(self.points_csv):
            self.load()

    # -- persistence -------------------------------------------------------
    def load(self):
        """Replace the session's points by those of the CSV file."""
        self._points, self._interior, self._current = {}, {}, {}
        for ts_id, model, x, y, z, role in read_points_csv(self.points_csv):
            if ts_id not in self.tomo_ids:
                self.tomo_ids.append(ts_id)
            if role == INTERIOR:
                self._interior.setdefault(ts_id, {})[model] = (x, y, z)
                self._points.setdefault(ts_id, {}).setdefault(model, [])
            else:
                self._points.setdefault(ts_id, {}).setdefault(model, []).append((x, y, z))
        for ts_id, models in self._points.items():
            self._current[ts_id] = max(models)
        self._notify(None)

    def rows(self):
        """All points as CSV rows (tomoId, modelId, x, y, z, role), tomogram by tomogram."""
        rows = []
        for ts_id in self.tomo_ids:
            for model in sorted(self._points.get(ts_id, {})):
                for x, y, z in self._points[ts_id][model]:
                    rows.append((ts_id, model, x, y, z, POINT))
                if model in self._interior.get(ts_id, {}):
                    rows.append((ts_id, model, *self._interior[ts_id][model], INTERIOR))
        return rows

    def save(self):
        """Rewrite the CSV atomically with the current points."""
        write_points_csv(self.points_csv, self.rows())

    def add_listener(self, callback):
        """Call ``callback(tsId)`` after every change (tsId None: everything changed)."""
        self._listeners.append(callback)

    def remove_listener(self, callback):
        """Stop calling ``callback`` (no error when it was not registered)."""
        if callback in self._listeners:
            self._listeners.remove(callback)

    def _changed(self, ts_id):
        if self.autosave:
            self.save()
        self._notify(ts_id)

    def _notify(self, ts_id):
        for callback in list(self._listeners):  # a callback may unregister itself
            callback(ts_id)

    # -- queries -------------------------------------------------------------
    def _check(self, ts_id):
        if ts_id not in self.tomo_ids:
            raise KeyError(f"tomogram {ts_id!r} is not part of this picking session")

    def current_model(self, ts_id):
        """Model receiving new points in a tomogram (1 before anything is picked)."""
        self._check(ts_id)
        return self._current.get(ts_id, 1)

    def model_ids(self, ts_id):
        """Models of a tomogram that hold at least one point or an interior marker."""
        models = self._points.get(ts_id, {})
        return sorted(m for m in models if models[m] or m in self._interior.get(ts_id, {}))

    def points(self, ts_id, model=None):
        """(N, 3) array (x, y, z) of a model's points, or of all models when None."""
        models = self._points.get(ts_id, {})
        chosen = models.values() if model is None else [models.get(model, [])]
        points = [p for pts in chosen for p in pts]
        return np.array(points, dtype=float).reshape(-1, 3)

    def point_models(self, ts_id):
        """Model id of each row of ``points(ts_id)``."""
        models = self._points.get(ts_id, {})
        return np.array([m for m, pts in models.items() for _ in pts], dtype=int)

    def interior(self, ts_id, model=None):
        """Interior marker (x, y, z) of a model (default: current), or None."""
        model = self.current_model(ts_id) if model is None else model
        return self._interior.get(ts_id, {}).get(model)

    def interiors(self, ts_id):
        """(model ids, (M, 3) positions) of all interior markers of a tomogram."""
        markers = self._interior.get(ts_id, {})
        models = sorted(markers)
        return (np.array(models, dtype=int),
                np.array([markers[m] for m in models], dtype=float).reshape(-1, 3))

    def point_count(self, ts_id):
        return sum(len(p) for p in self._points.get(ts_id, {}).values())

    def list_row(self, ts_id):
        """Values of `LIST_COLUMNS` for one tomogram."""
        return (ts_id, self.status(ts_id), len(self.model_ids(ts_id)), self.point_count(ts_id))

    def _is_empty(self, ts_id, model):
        return not self._points.get(ts_id, {}).get(model) and \
            model not in self._interior.get(ts_id, {})

    def status(self, ts_id):
        """Picking status of a tomogram for the list dialog.

        Returns
        -------
        str
            ``'not picked'``, ``'picked'`` or ``'incomplete: model M has n/k points'``
            when a model has fewer points than its model type needs (for a
            Surface, ``'incomplete: model M has l/2 z-levels of 2+ points'``
            when its points do not span two levels).
        """
        self._check(ts_id)
        models = self.model_ids(ts_id)
        if not models:
            return "not picked"
        need = MIN_POINTS[self.model_type]
        for model in models:
            have = len(self._points[ts_id][model])
            if have < need:
                return f"incomplete: model {model} has {have}/{need} points"
            if self.model_type == "Surface":
                z = np.round(np.asarray(self._points[ts_id][model])[:, 2])
                _, per_level = np.unique(z, return_counts=True)
                levels = int((per_level >= 2).sum())
                if levels < SURFACE_LEVELS:
                    return (f"incomplete: model {model} has {levels}/{SURFACE_LEVELS} "
                            "z-levels of 2+ points")
        return "picked"

    # -- edits -------------------------------------------------------------
    @staticmethod
    def _xyz(position):
        position = np.asarray(position, dtype=float).reshape(-1)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise ValueError(f"a position must be three finite numbers (x, y, z), got {position}")
        return tuple(float(v) for v in position)

    def add_point(self, ts_id, position, model=None):
        """Add a point (x, y, z voxels) to a model (default: the current one).

        Returns
        -------
        (int, int)
            The model id and the point's index in it.
        """
        return self._add(self._points, ts_id, position, model)

    def _add(self, store, ts_id, position, model):
        """Append a position to ``store[ts_id][model]``; (model, index)."""
        self._check(ts_id)
        model = self.current_model(ts_id) if model is None else int(model)
        points = store.setdefault(ts_id, {}).setdefault(model, [])
        points.append(self._xyz(position))
        self._current.setdefault(ts_id, model)
        self._changed(ts_id)
        return model, len(points) - 1

    def delete_last(self, ts_id, model=None):
        """Remove the most recent point of a model (default: current); returns it or None."""
        self._check(ts_id)
        model = self.current_model(ts_id) if model is None else model
        points = self._points.get(ts_id, {}).get(model)
        if not points:
            return None
        removed = points.pop()
        self._changed(ts_id)
        return removed

    def delete_nearest(self, ts_id, position, max_distance=None):
        """Remove the point or interior marker nearest to ``position``.

        Parameters
        ----------
        position : (3,) float
            (x, y, z) voxels, e.g. where the user clicked.
        max_distance : float, optional
            Voxels; nothing is removed when the nearest item is farther.

        Returns
        -------
        (model, role, (x, y, z)) or None
        """
        self._check(ts_id)
        target = np.array(self._xyz(position))
        candidates = [(m, POINT, i, p) for m, pts in self._points.get(ts_id, {}).items()
                      for i, p in enumerate(pts)]
        candidates += [(m, INTERIOR, None, p) for m, p in self._interior.get(ts_id, {}).items()]
        if not candidates:
            return None
        distances = [np.linalg.norm(np.array(c[3]) - target) for c in candidates]
        best = int(np.argmin(distances))
        if max_distance is not None and distances[best] > max_distance:
            return None
        model, role, index, removed = candidates[best]
        if role == POINT:
            self._points[ts_id][model].pop(index)
        else:
            del self._interior[ts_id][model]
        self._changed(ts_id)
        return model, role, removed

    def new_model(self, ts_id):
        """Start a new model in a tomogram and make it current.

        The current model is reused while it is still empty, so repeated
        requests do not leave gaps in the numbering.

        Returns
        -------
        int
            The new current model id.
        """
        self._check(ts_id)
        current = self.current_model(ts_id)
        models = self._points.get(ts_id, {})
        if self._is_empty(ts_id, current):
            self._current[ts_id] = current
            return current
        model = max(list(models) + [current]) + 1
        models = self._points.setdefault(ts_id, {})
        models[model] = []
        self._current[ts_id] = model
        self._notify(ts_id)
        return model

    def select_model(self, ts_id, model):
        """Make an existing model current (to add points to it again)."""
        self._check(ts_id)
        self._points.setdefault(ts_id, {}).setdefault(int(model), [])
        self._current[ts_id] = int(model)
        self._notify(ts_id)

    def set_interior(self, ts_id, position, model=None):
        """Place (or move) the interior marker of a model (default: current)."""
        self._check(ts_id)
        model = self.current_model(ts_id) if model is None else int(model)
        self._interior.setdefault(ts_id, {})[model] = self._xyz(position)
        self._points.setdefault(ts_id, {}).setdefault(model, [])
        self._current.setdefault(ts_id, model)
        self._changed(ts_id)
        return model


class ParticleSession(PickingSession):
    """Particle picks, positive and negative, in sets, saved as they are made.

    Parameters
    ----------
    picks_csv : str
        CSV coordinate table ``tomoId,x,y,z,groupId,label`` (voxels,
        bottom-left origin; label 'positive' or 'negative'), read when it
        exists and rewritten atomically after every change.
    tomo_ids : sequence of str, optional
        The tomograms that can be picked; picks of other tsIds in the file are
        kept and written back.
    autosave : bool

    Notes
    -----
    Sets (the models of `PickingSession`, written as groupId) are numbered
    from 1 per tomogram; new picks go to the current set. Negatives mark what
    must not be picked (gold, ice, membrane, aggregates): learned picking
    trains on them.
    """

    LIST_COLUMNS = ("tsId", "status", "sets", "positives", "negatives")
    particles = True

    def __init__(self, picks_csv, tomo_ids=(), autosave=True):
        self._negatives = {}   # tsId -> {set: [(x, y, z), ...]}
        super().__init__(picks_csv, tomo_ids, "General", autosave)
        self.model_type = PARTICLES

    # -- persistence -------------------------------------------------------
    def load(self):
        """Replace the session's picks by those of the CSV file."""
        self._points, self._negatives, self._interior, self._current = {}, {}, {}, {}
        picks = csv_table.read_csv(self.points_csv)
        labels = picks.extra.get("labels", np.full(len(picks), csv_table.POSITIVE))
        for ts_id, xyz, group, label in zip(picks.tomo_ids, picks.positions, picks.group_ids,
                                            labels):
            ts_id = str(ts_id)
            if ts_id not in self.tomo_ids:
                self.tomo_ids.append(ts_id)
            store = self._negatives if label == csv_table.NEGATIVE else self._points
            store.setdefault(ts_id, {}).setdefault(int(group), []).append(
                tuple(float(v) for v in xyz))
        for ts_id in self.tomo_ids:
            models = self.model_ids(ts_id)
            if models:
                self._current[ts_id] = max(models)
        self._notify(None)

    def picks(self):
        """All picks as a `Picks` table with ``extra['labels']``, tomogram by tomogram."""
        tomo_ids, positions, groups, labels = [], [], [], []
        for ts_id in self.tomo_ids:
            for label, store in ((csv_table.POSITIVE, self._points),
                                 (csv_table.NEGATIVE, self._negatives)):
                for group in sorted(store.get(ts_id, {})):
                    for xyz in store[ts_id][group]:
                        tomo_ids.append(ts_id)
                        positions.append(xyz)
                        groups.append(group)
                        labels.append(label)
        picks = Picks(np.array(tomo_ids, dtype=str), np.array(positions).reshape(-1, 3),
                      np.array(groups, dtype=int))
        picks.extra["labels"] = np.array(labels, dtype=str)
        return picks

    def rows(self):
        """All picks as (tomoId, set, x, y, z, label) tuples."""
        picks = self.picks()
        return [(str(t), int(g), *map(float, p), str(lab)) for t, g, p, lab in
                zip(picks.tomo_ids, picks.group_ids, picks.positions, picks.extra["labels"])]

    def save(self):
        """Rewrite the CSV atomically (temporary file, then ``os.replace``)."""
        import tempfile

        directory = os.path.dirname(os.path.abspath(self.points_csv))
        os.makedirs(directory, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=".picks-", suffix=".csv", dir=directory)
        os.close(handle)
        try:
            csv_table.write_csv(tmp, self.picks())
            os.replace(tmp, self.points_csv)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    # -- queries -------------------------------------------------------------
    def model_ids(self, ts_id):
        """Sets of a tomogram holding at least one pick, positive or negative."""
        sets = set(m for m, p in self._points.get(ts_id, {}).items() if p)
        sets |= set(m for m, p in self._negatives.get(ts_id, {}).items() if p)
        return sorted(sets)

    def _is_empty(self, ts_id, model):
        return not self._points.get(ts_id, {}).get(model) and \
            not self._negatives.get(ts_id, {}).get(model)

    def negatives(self, ts_id, model=None):
        """(N, 3) array (x, y, z) of a set's negatives, or of all sets when None."""
        sets = self._negatives.get(ts_id, {})
        chosen = sets.values() if model is None else [sets.get(model, [])]
        return np.array([p for pts in chosen for p in pts], dtype=float).reshape(-1, 3)

    def negative_models(self, ts_id):
        """Set id of each row of ``negatives(ts_id)``."""
        sets = self._negatives.get(ts_id, {})
        return np.array([m for m, pts in sets.items() for _ in pts], dtype=int)

    def negative_count(self, ts_id):
        return sum(len(p) for p in self._negatives.get(ts_id, {}).values())

    def status(self, ts_id):
        """'not picked' or 'picked' (a tomogram with only negatives is 'negatives only')."""
        self._check(ts_id)
        if self.point_count(ts_id):
            return "picked"
        return "negatives only" if self.negative_count(ts_id) else "not picked"

    def list_row(self, ts_id):
        return (ts_id, self.status(ts_id), len(self.model_ids(ts_id)), self.point_count(ts_id),
                self.negative_count(ts_id))

    def interior(self, ts_id, model=None):
        return None

    # -- edits -------------------------------------------------------------
    def add_negative(self, ts_id, position, model=None):
        """Add a negative pick (x, y, z voxels) to a set (default: the current one).

        Returns
        -------
        (int, int)
            The set id and the negative's index in it.
        """
        return self._add(self._negatives, ts_id, position, model)

    def delete_nearest(self, ts_id, position, max_distance=None):
        """Remove the pick (positive or negative, any set) nearest to ``position``.

        Returns
        -------
        (set, label, (x, y, z)) or None
            label is 'positive' or 'negative'.
        """
        self._check(ts_id)
        target = np.array(self._xyz(position))
        candidates = [(m, label, i, p)
                      for label, store in ((csv_table.POSITIVE, self._points),
                                           (csv_table.NEGATIVE, self._negatives))
                      for m, pts in store.get(ts_id, {}).items() for i, p in enumerate(pts)]
        if not candidates:
            return None
        distances = [np.linalg.norm(np.array(c[3]) - target) for c in candidates]
        best = int(np.argmin(distances))
        if max_distance is not None and distances[best] > max_distance:
            return None
        model, label, index, removed = candidates[best]
        store = self._points if label == csv_table.POSITIVE else self._negatives
        store[ts_id][model].pop(index)
        self._changed(ts_id)
        return model, label, removed

    def set_interior(self, ts_id, position, model=None):
        raise ValueError("particle picks have no interior marker")


def _check_display():
    """Fail with a message, not a Qt abort, when no window can be opened."""
    import sys

    widgets = sys.modules.get("PyQt5.QtWidgets")
    if widgets is not None and widgets.QApplication.instance() is not None:
        return
    platform = os.environ.get("QT_QPA_PLATFORM", "xcb" if sys.platform.startswith("linux") else "")
    if platform.startswith("xcb") and not os.environ.get("DISPLAY"):
        raise RuntimeError("the interactive picker needs a display (DISPLAY is not set); "
                           "to pick without one, give a points CSV "
                           "as the protocol's pointsFile")


def pick_interactively(tomograms, points_csv, model_type="General", box_size=32):
    """Open the picker and block until the user closes it.

    A dialog lists the tomograms with their picking status and point counts;
    double-clicking one opens it in the napari picker (keys in its help panel).
    Points are written to ``points_csv`` after every change.

    Parameters
    ----------
    tomograms : sequence of (str, str, float)
        (tsId, MRC path, voxel size Å).
    points_csv : str
        Points file, read when it exists and rewritten on every change.
    model_type : str
        One of `MODEL_TYPES`, or `PARTICLES` for the particle mode (manual
        picking: click adds a positive, Ctrl+click a negative, Shift+click
        removes, 'n' starts a new set; the file is a `ParticleSession`'s CSV).
    box_size : int
        Box size in voxels; sets the size of the drawn markers (in particle
        mode, the diameter of the circle drawn at every pick).

    Returns
    -------
    PickingSession or ParticleSession
        The session as the user left it (already saved).

    Raises
    ------
    ValueError
        If no tomogram is given or a tomogram file is missing.
    RuntimeError
        If no display is available for Qt.
    """
    tomograms = [(str(t), os.fspath(p), float(v)) for t, p, v in tomograms]
    if not tomograms:
        raise ValueError("pick_interactively needs at least one tomogram")
    for ts_id, path, _ in tomograms:
        if not os.path.exists(path):
            raise ValueError(f"tomogram {ts_id}: file not found: {path}")
    ts_ids = [t[0] for t in tomograms]
    session = (ParticleSession(points_csv, ts_ids) if model_type == PARTICLES
               else PickingSession(points_csv, ts_ids, model_type))
    _check_display()
    from ._qt_picker import run_picker_dialog  # Qt only from here on

    run_picker_dialog(session, tomograms, box_size)
    return session
