"""PickET's predicted-centroid files (.yaml), one tomogram each.

PickET (isblab/pickET, step s2) writes a YAML mapping with two keys::

    metadata: {...}                      # run parameters, tomogram_path, ...
    Predicted_Particle_Centroid_Coordinates:
    - {x: 12, y: 40, z: 7}
    - ...

Each entry is the centre of mass of a predicted particle in array indices of
the tomogram: PickET computes centroids as (z, y, x) indices and stores them
under the named keys x = index 2, y = index 1, z = index 0 (truncated to
integers). Named keys make the axis order explicit; the values are tomopick's
bottom-left voxel positions as they are. tomopick writes the same layout with
float values (PickET's reader accepts them) and a metadata block holding
``tsId``, ``tomogram_path`` and ``voxel_size``.

The tsId is, in order: the caller's ``tomo_id``, metadata ``tsId``, the base
name of metadata ``tomogram_path`` without extension, the file name.
"""

import numpy as np
import yaml

from ..picks import Picks
from .shared import _centre_positions, _require_file, _single_tomogram, tsid_from_filename

KEY = "Predicted_Particle_Centroid_Coordinates"
# libyaml's parser and emitter when PyYAML was built with them (10x faster)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _tsid(metadata, path):
    if metadata.get("tsId") not in (None, "None", ""):
        return str(metadata["tsId"])
    tomogram = metadata.get("tomogram_path")
    if tomogram not in (None, "None", ""):
        return tsid_from_filename(tomogram)
    return tsid_from_filename(path)


def read_picket_yaml(path, voxel_size=None, tomo_id=None, **_):
    """Read a PickET predicted-centroids YAML file.

    Parameters
    ----------
    path : str
    voxel_size : float, optional
        Å per voxel; default: metadata ``voxel_size`` when present.
    tomo_id : str, optional
        tsId of the tomogram (see the module doc for the default).

    Returns
    -------
    Picks
        No matrices, no scores.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the YAML does not parse (naming the line), has no
        Predicted_Particle_Centroid_Coordinates list, or an entry lacks
        numeric x, y, z (naming the entry).

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "out.yaml")
    >>> with open(path, "w") as f:
    ...     _ = f.write("metadata: {tomogram_path: /data/TS_04.mrc}\\n"
    ...                 "Predicted_Particle_Centroid_Coordinates:\\n"
    ...                 "- {x: 12, y: 40, z: 7}\\n- {x: 3, y: 4, z: 5}\\n")
    >>> picks = read_picket_yaml(path)
    >>> picks.tomo_ids.tolist(), picks.positions.tolist()
    (['TS_04', 'TS_04'], [[12.0, 40.0, 7.0], [3.0, 4.0, 5.0]])
    >>> tmp.cleanup()
    """
    _require_file(path)
    with open(path) as handle:
        try:
            content = yaml.load(handle, Loader=_LOADER)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"{path}{where}: not valid YAML "
                             f"({getattr(err, 'problem', None) or err})") from None
    if not isinstance(content, dict) or not isinstance(content.get(KEY), list):
        raise ValueError(f"{path}: no '{KEY}' list (not a PickET centroid file)")
    metadata = content.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: 'metadata' is not a mapping")
    positions = np.zeros((len(content[KEY]), 3))
    for entry, point in enumerate(content[KEY]):
        try:
            positions[entry] = [float(point[axis]) for axis in "xyz"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: entry {entry + 1} of {KEY} needs numeric x, y and z, "
                             f"got {point!r}") from None
    if not np.all(np.isfinite(positions)):
        raise ValueError(f"{path}: non-finite centroid coordinates")
    if voxel_size is None and metadata.get("voxel_size") not in (None, "None"):
        voxel_size = float(metadata["voxel_size"])
    return Picks(tomo_id or _tsid(metadata, path), positions, None, None, None, voxel_size)


def write_picket_yaml(path, picks, voxel_size=None, tomogram_path=None, **_):
    """Write the picks of one tomogram in PickET's centroid YAML layout.

    Parameters
    ----------
    path : str
    picks : Picks
        Picks of one tomogram; matrix shifts are folded into the positions.
    voxel_size : float, optional
        Recorded in the metadata; default ``picks.voxel_size``.
    tomogram_path : str, optional
        Recorded in the metadata (PickET's key for the source tomogram).

    Raises
    ------
    ValueError
        If the picks span several tomograms.

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "TS_1.yaml")
    >>> write_picket_yaml(path, Picks("TS_1", [[12.5, 40, 7]], voxel_size=10.0))
    >>> print(open(path).read())
    Predicted_Particle_Centroid_Coordinates:
    - x: 12.5
      y: 40.0
      z: 7.0
    metadata:
      tomogram_path: None
      tsId: TS_1
      voxel_size: 10.0
      written_by: tomopick
    <BLANKLINE>
    >>> read_picket_yaml(path).voxel_size
    10.0
    >>> tmp.cleanup()
    """
    ts_id = _single_tomogram(picks, path)
    voxel_size = voxel_size or picks.voxel_size
    positions = _centre_positions(picks)
    content = {
        "metadata": {"tsId": ts_id if ts_id is not None else "None",
                     "tomogram_path": tomogram_path or "None",
                     "voxel_size": float(voxel_size) if voxel_size else "None",
                     "written_by": "tomopick"},
        KEY: [{"x": round(float(x), 4), "y": round(float(y), 4), "z": round(float(z), 4)}
              for x, y, z in positions],
    }
    with open(path, "w") as handle:
        yaml.dump(content, handle, Dumper=_DUMPER, sort_keys=True)
