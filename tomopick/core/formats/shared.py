"""Helpers the coordinate-table formats share: file checks, errors, particle centres,
the filename -> tsId rule (kept apart from the dispatcher in `coordinates`, which
imports the format modules: no import circle)."""
import os

import numpy as np


def _require_file(path):
    """Raise FileNotFoundError naming ``path`` unless it is a readable file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"coordinate file not found: {path}")


def _line_error(path, line_number, message):
    """A ValueError that names the file and the (1-based) line."""
    return ValueError(f"{path}, line {line_number}: {message}")


def _centre_positions(picks):
    """Particle centres of a table: positions plus the shifts of its matrices.

    Parameters
    ----------
    picks : Picks

    Returns
    -------
    (N, 3) ndarray
        Voxels, bottom-left origin.
    """
    if picks.matrices is None:
        return picks.positions.copy()
    return picks.positions + picks.matrices[:, :3, 3]


def _single_tomogram(picks, path, tomo_id=None):
    """The one tsId of a table written to a per-tomogram format.

    Raises
    ------
    ValueError
        If the table holds several tomograms (write one file per tsId, e.g.
        with ``picks.for_tomogram(tsId)``).
    """
    ids = np.unique(picks.tomo_ids)
    if len(ids) > 1:
        raise ValueError(f"{path}: this format holds one tomogram, the picks have "
                         f"{len(ids)} ({', '.join(ids[:5])}...); write one file per tsId")
    if len(ids) == 1:
        return str(ids[0])
    return tomo_id


def tsid_from_filename(path):
    """The tsId a file name stands for: its base name up to the first dot.

    The rule of Scipion's ``normalizeTSId`` (``TS_01.mrc.mdoc`` -> ``TS_01``),
    without its sqlite-safe character replacements (`tomopick.convert.tsid_of_file`
    adds them).

    Examples
    --------
    >>> tsid_from_filename("/data/TS_01.tomostar"), tsid_from_filename("TS_02.mrc.mdoc")
    ('TS_01', 'TS_02')
    """
    name = os.path.basename(str(path))
    return name.split(".")[0] if not name.startswith(".") else name
