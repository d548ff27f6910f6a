"""Scipion viewers: open tomopick's napari views from the project window.

`TomoPickNapariViewer` handles tomograms, coordinates, meshes, subtomograms,
averages and segmentations. It writes a view spec (`write_view_spec`) and
runs `tomopick.viewers.launch` in its own process, because the project window
runs Tk and napari needs Qt's event loop. Subsets of coordinates the user
saves there are registered, when the viewer process ends, as new outputs of
the protocol that made the coordinates (`register_coordinates_subset`), the
way scipion-em-tomo's own viewers register subsets.

Nothing here imports Qt: the module is loaded when Scipion discovers viewers.
"""
import json
import logging
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pyworkflow.viewer as pwviewer
from tomo.objects import (AverageSubTomogram, SetOfCoordinates3D, SetOfMeshes,
                          SetOfSubTomograms, SetOfTomograms, SetOfTomoMasks)

SUBSET_PREFIX = "coordinatesSubset"
logger = logging.getLogger(__name__)


def _python():
    return os.environ.get("SCIPION_PYTHON") or sys.executable


def _tomogram_entries(tomograms):
    return [{"tsId": t.getTsId(), "path": os.path.abspath(t.getFileName()),
             "voxel_size": float(t.getSamplingRate())} for t in tomograms.iterItems(orderBy="id")]


def write_view_spec(obj, directory, protocol=None, title=None):
    """Describe what to show for a Scipion object, for `tomopick.viewers.launch`.

    Parameters
    ----------
    obj : SetOfTomograms, SetOfCoordinates3D, SetOfMeshes, SetOfSubTomograms,
          AverageSubTomogram or SetOfTomoMasks
    directory : str
        Where the spec, the coordinate arrays and the saved subsets go.
    protocol : pyworkflow Protocol, optional
        The producer: its ``modelType`` parameter, when it has one, says how
        meshes are fitted; its ``scoreMaps`` output is drawn over its
        ``inputTomograms`` with its ``coordinates``; an ``extra/fsc.png`` of it
        is shown beside an average.

    Returns
    -------
    str
        Path of the spec JSON.

    Raises
    ------
    TypeError
        For an object type no tomopick view handles.
    """
    from tomopick import convert

    os.makedirs(directory, exist_ok=True)
    spec = {"title": title or (obj.getNameId() if hasattr(obj, "getNameId") else str(obj)),
            "result_dir": os.path.join(directory, "subsets")}
    # subsets of an earlier session of this view were registered then
    shutil.rmtree(spec["result_dir"], ignore_errors=True)
    if isinstance(obj, SetOfTomoMasks):  # before SetOfTomograms: it is one
        spec["kind"] = "masks"
        spec["tomograms"], spec["masks"] = [], []
        for mask in obj.iterItems(orderBy="id"):
            volume = mask.getVolName() or mask.getFileName()
            spec["tomograms"].append({"tsId": mask.getTsId(), "path": os.path.abspath(volume),
                                      "voxel_size": float(mask.getSamplingRate())})
            spec["masks"].append({"tsId": mask.getTsId(),
                                  "path": os.path.abspath(mask.getFileName())})
    elif isinstance(obj, SetOfTomograms) and _score_maps_of(protocol, obj):
        # a picker's score maps (template matching, learned picking): over the tomograms
        # searched, with the picker's coordinates
        spec["kind"] = "scores"
        searched = {t["tsId"]: t for t in _tomogram_entries(protocol.inputTomograms.get())}
        spec["scores"], spec["tomograms"] = [], []
        for score in obj.iterItems(orderBy="id"):
            tsId = score.getTsId()
            spec["scores"].append({"tsId": tsId, "path": os.path.abspath(score.getFileName())})
            spec["tomograms"].append(searched.get(tsId) or {
                "tsId": tsId, "path": os.path.abspath(score.getFileName()),
                "voxel_size": float(score.getSamplingRate())})
        coordinates = getattr(protocol, "coordinates", None)
        if isinstance(coordinates, SetOfCoordinates3D) and coordinates.getSize():
            picks = convert.picks_from_coordinates(coordinates)
            rate = spec["tomograms"][0]["voxel_size"] if spec["tomograms"] else None
            if rate and picks.voxel_size:
                picks = picks.rescaled(rate)
            spec["point_size"] = float(max(6.0, (coordinates.getBoxSize() or 32)
                                           * (picks.voxel_size or 1.0) / (rate or 1.0)))
            spec["picks"] = os.path.join(directory, "picks.npz")
            picks.save(spec["picks"])
    elif isinstance(obj, SetOfTomograms):
        spec["kind"] = "tomograms"
        spec["tomograms"] = _tomogram_entries(obj)
    elif isinstance(obj, SetOfMeshes):
        spec["kind"] = "meshes"
        spec["tomograms"] = _tomogram_entries(obj.getPrecedents())
        _mesh_spec(spec, obj, directory, protocol)
    elif isinstance(obj, SetOfCoordinates3D):
        spec["kind"] = "coordinates"
        tomograms = obj.getPrecedents()
        spec["tomograms"] = _tomogram_entries(tomograms)
        picks = convert.picks_from_coordinates(obj)
        ids = picks.extra["ids"]
        tomo_size = {t["tsId"]: t["voxel_size"] for t in spec["tomograms"]}
        # coordinates are drawn in voxels of their tomogram (sets may differ in sampling)
        positions = picks.positions.copy()
        for ts_id in np.unique(picks.tomo_ids):
            if ts_id in tomo_size and picks.voxel_size:
                rows = picks.tomo_ids == ts_id
                positions[rows] *= picks.voxel_size / tomo_size[ts_id]
        # rings as wide as the particle box, in voxels of the (first) tomogram
        box = (obj.getBoxSize() if hasattr(obj, "getBoxSize") else None) or 32
        scale = (picks.voxel_size or 1.0) / (spec["tomograms"][0]["voxel_size"] or 1.0) \
            if spec["tomograms"] else 1.0
        spec["point_size"] = float(max(6.0, box * scale))
        spec["picks"] = os.path.join(directory, "picks.npz")
        picks.positions = positions
        picks.save(spec["picks"])
    elif isinstance(obj, AverageSubTomogram):
        spec["kind"] = "average"
        spec["average"] = os.path.abspath(obj.getFileName())
        # the initial model's half-set FSC curve, beside the map
        plot = protocol._getExtraPath("fsc.png") if protocol is not None else None
        if plot and os.path.exists(plot):
            spec["plot"] = os.path.abspath(plot)
    elif isinstance(obj, SetOfSubTomograms):
        spec["kind"] = "subtomograms"
        spec["subtomograms"] = [{"name": str(s.getObjId()), "path": os.path.abspath(s.getFileName())}
                                for s in obj.iterItems(orderBy="id", limit=100)]
    else:
        raise TypeError(f"no tomopick view for {type(obj).__name__}")
    path = os.path.join(directory, "view.json")
    with open(path, "w") as out:
        json.dump(spec, out, indent=1)
    return path


def _score_maps_of(protocol, tomograms):
    """Whether a set of tomograms is the ``scoreMaps`` output of a picker protocol."""
    maps = getattr(protocol, "scoreMaps", None) if protocol is not None else None
    return (maps is not None and hasattr(protocol, "inputTomograms")
            and protocol.inputTomograms.get() is not None
            and maps.getObjId() == tomograms.getObjId())


def _mesh_spec(spec, meshes, directory, protocol=None):
    """Points, interior markers and model types of a SetOfMeshes, for the mesh view.

    The vectorial picking protocol stores each model's type and interior
    marker on its points; `convert.mesh_models` reads them back. Meshes from other
    plugins carry neither: they are fitted with the producing protocol's
    ``modelType`` when it has one, else as vesicles.
    """
    from tomopick import convert
    from tomopick.core.geometry import MODEL_TYPES
    from tomopick.core.picks import Picks

    default = "Vesicle"
    if protocol is not None and getattr(protocol, "modelType", None) is not None:
        # by the name the producing protocol's own form gives its choice
        try:
            name = protocol.getEnumText("modelType")
        except (AttributeError, TypeError, ValueError, IndexError, KeyError):
            name = None
        if name in MODEL_TYPES:
            default = name
    voxel = spec["tomograms"][0]["voxel_size"] if spec["tomograms"] else None
    rows, types = [], {}
    for model in convert.mesh_models(meshes, voxel):
        key = (model["tsId"], model["modelId"])
        rows += [(*key, *(float(v) for v in p), "point") for p in model["points"]]
        if model["type"] in MODEL_TYPES:
            types[key] = model["type"]
        if model["interior"] is not None:
            rows.append((*key, *model["interior"], "interior"))
    points = [r for r in rows if r[5] == "point"]
    spec["picks"] = os.path.join(directory, "picks.npz")
    Picks([r[0] for r in points], np.array([r[2:5] for r in points], dtype=float).reshape(-1, 3),
          [r[1] for r in points], extra={"ids": np.arange(len(points))}).save(spec["picks"])
    spec["model_types"] = {f"{t}:{m}": types.get((t, m), default)
                           for t, m in {(r[0], r[1]) for r in points}}
    spec["interiors"] = {f"{r[0]}:{r[1]}": list(r[2:5]) for r in rows if r[5] == "interior"}


def register_coordinates_subset(protocol, coordinates, kept_ids, project=None,
                                prefix=SUBSET_PREFIX):
    """Register the kept coordinates as a new output of ``protocol``.

    Parameters
    ----------
    protocol : pyworkflow Protocol
        The protocol that produced ``coordinates``; the subset becomes its
        next ``coordinatesSubset_N`` output (scipion-em-tomo's viewers do the
        same with their subsets).
    coordinates : SetOfCoordinates3D
    kept_ids : iterable of int
        Object ids of the coordinates to keep.
    project : pyworkflow Project, optional
        When given, the protocol is stored (committed) in the project database.

    Returns
    -------
    (str, SetOfCoordinates3D)
        The output name and the new set.

    Raises
    ------
    ValueError
        If no coordinate is kept or an id is not in the set.
    """
    kept = {int(i) for i in kept_ids}
    if not kept:
        raise ValueError("the subset is empty: keep at least one coordinate")
    name = protocol.getNextOutputName(prefix + "_")
    from tomopick import convert

    subset = type(coordinates).create(protocol._getPath(), prefix=name.lower())
    subset.copyInfo(coordinates)
    # the subset lies in the producer's run folder: it must keep the producer's convention
    convert.copy_convention(coordinates, subset)
    found = set()
    for coord in coordinates.iterItems(orderBy="id"):
        if coord.getObjId() in kept:
            subset.append(coord.clone())
            found.add(coord.getObjId())
    missing = sorted(kept - found)
    if missing:
        raise ValueError(f"coordinate id(s) not in {coordinates.getNameId()}: {missing[:10]}")
    subset.write()
    protocol._defineOutputs(**{name: subset})
    protocol._defineSourceRelation(coordinates, subset)
    if project is not None:
        project._storeProtocol(protocol)
    return name, subset


def _saved_subset_files(result_dir):
    """Paths of the ``subset_NNN.json`` files of a viewer process, in saving order."""
    if not os.path.isdir(result_dir):
        return []
    return [os.path.join(result_dir, f) for f in sorted(os.listdir(result_dir))
            if f.startswith("subset_") and f.endswith(".json")]


def read_saved_subsets(result_dir):
    """Kept-id lists of the subsets saved by a viewer process, in saving order."""
    subsets = []
    for path in _saved_subset_files(result_dir):
        with open(path) as handle:
            subsets.append(json.load(handle)["kept_ids"])
    return subsets


_REGISTERING = threading.Lock()


def register_saved_subsets(protocol, coordinates, result_dir, project=None):
    """Register every subset a viewer process saved, each once.

    Each file is removed once its subset is an output, so a later call (a
    viewer reopened after the Scipion GUI closed before the earlier viewer did)
    registers only what is still pending.  A subset that cannot be registered
    (empty, unknown ids) is logged and moved to ``rejected/`` beside
    ``result_dir`` with a ``.txt`` giving the reason (a new view clears
    ``result_dir``, not that folder).

    Returns
    -------
    list of str
        The new output names.
    """
    names = []
    with _REGISTERING:      # two viewers of one set must not register a file twice
        for path in _saved_subset_files(result_dir):
            with open(path) as handle:
                kept = json.load(handle)["kept_ids"]
            try:
                name, _ = register_coordinates_subset(protocol, coordinates, kept, project)
            except ValueError as error:
                rejected = os.path.join(os.path.dirname(os.path.abspath(result_dir)), "rejected")
                os.makedirs(rejected, exist_ok=True)
                kept_as = os.path.join(rejected, os.path.basename(path))
                os.replace(path, kept_as)
                with open(kept_as[:-len(".json")] + ".txt", "w") as handle:
                    handle.write(f"{error}\n")
                logger.warning("subset %s not registered: %s (kept as %s)", path, error, kept_as)
                continue
            os.remove(path)
            names.append(name)
    return names


class TomoPickNapariViewer(pwviewer.Viewer):
    """Slice views (Z/X/Y, contrast) of tomograms with coordinates and
    orientations, meshes with their fitted models, subtomogram galleries,
    averages (orthogonal sections) and segmentations, in napari."""
    _label = "tomopick napari viewer"
    _name = "tomopick napari viewer"
    _environments = [pwviewer.DESKTOP_TKINTER]
    _targets = [SetOfTomograms, SetOfCoordinates3D, SetOfMeshes, SetOfSubTomograms,
                AverageSubTomogram, SetOfTomoMasks]

    subsetThread = None  # registers the saved subsets once the viewer process ends

    def _visualize(self, obj, **kwargs):
        protocol = self.protocol
        base = protocol._getTmpPath() if protocol is not None else os.path.abspath("tomopick-view")
        directory = os.path.join(base, f"napari_{type(obj).__name__}_{obj.getObjId()}")
        result_dir = os.path.join(directory, "subsets")
        subsets = (isinstance(obj, SetOfCoordinates3D) and not isinstance(obj, SetOfMeshes)
                   and protocol is not None)
        project = self.getProject()
        if subsets:
            # subsets saved in an earlier session whose Scipion GUI closed before
            # its viewer did: register them before the new spec clears the folder
            register_saved_subsets(protocol, obj, result_dir, project)
        spec_path = write_view_spec(obj, directory, protocol)
        process = subprocess.Popen([_python(), "-m", "tomopick.viewers.launch", spec_path])
        if subsets:
            # register saved subsets once the viewer closes, without blocking the Tk window
            def wait_and_register():
                process.wait()
                register_saved_subsets(protocol, obj, result_dir, project)

            self.subsetThread = threading.Thread(target=wait_and_register, daemon=True)
            self.subsetThread.start()
        return []


def _tomopick_protocols():
    """tomopick's protocol classes, as pyworkflow discovered them (viewers do not
    import tomopick.protocols; none when discovery fails)."""
    try:
        from pyworkflow import Config
        protocols = Config.getDomain().getProtocols()
    except Exception:  # discovery of the data viewers must survive a broken protocol
        return []
    return [c for _, c in sorted(protocols.items()) if c.__module__.startswith("tomopick.")]


class _ProtocolTargets:
    """``_targets`` looked up when pyworkflow asks, not at import: a protocol
    module may import tomopick.viewers while tomopick.protocols is still loading."""

    def __get__(self, instance, owner):
        return _tomopick_protocols()


#: Outputs opened by "Analyze results", most specific first (a SetOfMeshes is
#: a SetOfCoordinates3D and a SetOfTomoMasks a SetOfTomograms).
_OUTPUT_TYPES = (SetOfMeshes, SetOfCoordinates3D, SetOfTomoMasks, AverageSubTomogram,
                 SetOfSubTomograms, SetOfTomograms)


class TomoPickResultsViewer(TomoPickNapariViewer):
    """"Analyze results" of a tomopick protocol: its outputs in napari, one window each."""
    _label = "tomopick results"
    _name = "tomopick results"
    _targets = _ProtocolTargets()

    def _visualize(self, obj, **kwargs):
        outputs = [out for _, out in obj.iterOutputAttributes()
                   if isinstance(out, _OUTPUT_TYPES)]
        # the picking outputs first: what the user wants to check after a run
        outputs.sort(key=lambda out: next(i for i, t in enumerate(_OUTPUT_TYPES)
                                          if isinstance(out, t)))
        for output in outputs[:3]:
            TomoPickNapariViewer._visualize(self, output)
        return []
