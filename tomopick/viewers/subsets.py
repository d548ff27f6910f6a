"""Subsets of coordinates saved in a napari view, registered as protocol outputs.

The napari process writes each subset the user saves as
``<result_dir>/subset_NNN.json`` (kept object ids). The Scipion viewer, in the
project window's process, registers them when the napari process ends (a
thread waits for it) as new ``coordinatesSubset_N`` outputs of the protocol
that made the coordinates, the way scipion-em-tomo's viewers register subsets;
a lock keeps two viewers of one set from registering a file twice.
"""
import json
import logging
import os
import threading

SUBSET_PREFIX = "coordinatesSubset"
logger = logging.getLogger(__name__)


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
