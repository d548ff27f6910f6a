"""The view spec: what a tomopick napari view shows, written for `tomopick.viewers.launch`.

`write_view_spec` turns a Scipion object (tomograms, coordinates, meshes,
subtomograms, an average, segmentations) into ``view.json`` plus the arrays it
points to (``picks.npz``). The Scipion viewer writes it in the project
window's process; the napari process (`launch`) reads it, so nothing here
imports Qt. Coordinates are rescaled to voxels of their own tomogram
(`_positions_in_tomogram_voxels`): sets and tomograms may differ in sampling.
"""
import json
import os
import shutil

import numpy as np
from tomo.objects import (AverageSubTomogram, SetOfCoordinates3D, SetOfMeshes,
                          SetOfSubTomograms, SetOfTomograms, SetOfTomoMasks)


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
            spec["point_size"] = _point_size(coordinates.getBoxSize() or 32, picks.voxel_size,
                                             spec["tomograms"])
            spec["picks"] = os.path.join(directory, "picks.npz")
            picks.positions = _positions_in_tomogram_voxels(picks, spec["tomograms"])
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
        box = (obj.getBoxSize() if hasattr(obj, "getBoxSize") else None) or 32
        spec["point_size"] = _point_size(box, picks.voxel_size, spec["tomograms"])
        spec["picks"] = os.path.join(directory, "picks.npz")
        picks.positions = _positions_in_tomogram_voxels(picks, spec["tomograms"])
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
        spec["subtomograms"] = [{"name": str(s.getObjId()),
                                 "path": os.path.abspath(s.getFileName())}
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


def _positions_in_tomogram_voxels(picks, tomograms):
    """Pick positions in voxels of their own tomogram (sets may differ in sampling).

    Parameters
    ----------
    picks : Picks
        Positions (x, y, z) in voxels of ``picks.voxel_size`` Å.
    tomograms : list of dict
        Spec entries with 'tsId' and 'voxel_size' (Å).

    Returns
    -------
    (N, 3) ndarray
        A rescaled copy; rows of a tomogram not listed, or picks without a
        voxel size, are left as they are.
    """
    tomo_size = {t["tsId"]: t["voxel_size"] for t in tomograms}
    positions = picks.positions.copy()
    for ts_id in np.unique(picks.tomo_ids):
        if ts_id in tomo_size and picks.voxel_size:
            rows = picks.tomo_ids == ts_id
            positions[rows] *= picks.voxel_size / tomo_size[ts_id]
    return positions


def _point_size(box, voxel_size, tomograms):
    """Ring diameter (voxels of the first tomogram) for a particle box of ``box`` voxels.

    The rings are as wide as the particle box (at least 6 voxels), the box
    being in voxels of the coordinates (``voxel_size`` Å).
    """
    scale = (voxel_size or 1.0) / (tomograms[0]["voxel_size"] or 1.0) if tomograms else 1.0
    return float(max(6.0, box * scale))
