"""tomopick's CSV coordinate table (SPEC.md).

One particle per row under a header naming the columns::

    tomoId,x,y,z[,groupId][,tdrot,tilt,narot][,score][,label]

Positions are voxels, bottom-left-corner origin (the centre of array element
``[k, j, i]`` is at (i, j, k)). The three angles, in degrees, are Dynamo's
(``tomopick.core.rotations.dynamo_euler_to_matrix``): the rotation's
``R @ (0, 0, 1)`` is the particle's z-axis.
``label`` is ``positive`` (the default when empty) or ``negative``: manual
picking's examples of what must not be picked (read into
``picks.extra['labels']``). Columns may come in any order; blank lines and
lines starting with '#' are skipped. The file records no voxel size: the
caller gives it.
"""
import csv

import numpy as np

from ..picks import Picks
from ..rotations import dynamo_euler_to_matrix, homogeneous, matrix_to_dynamo_euler
from .shared import _centre_positions, _line_error, _require_file

REQUIRED = ("tomoId", "x", "y", "z")
ANGLES = ("tdrot", "tilt", "narot")
COLUMNS = REQUIRED + ("groupId",) + ANGLES + ("score", "label")
POSITIVE, NEGATIVE = "positive", "negative"
LABELS = (POSITIVE, NEGATIVE)


def _parse_header(path, line_number, names, tomo_id):
    names = [n.strip() for n in names]
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise _line_error(path, line_number,
                          f"unknown column {unknown[0]!r}; the columns are {', '.join(COLUMNS)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise _line_error(path, line_number, f"column {repeated[0]!r} appears twice")
    missing = [n for n in REQUIRED if n not in names and not (n == "tomoId" and tomo_id)]
    if missing:
        raise _line_error(path, line_number, f"missing column {missing[0]!r} "
                          f"(the header must name {', '.join(REQUIRED)})")
    present = [a for a in ANGLES if a in names]
    if present and len(present) != 3:
        raise _line_error(path, line_number, "the angle columns tdrot, tilt, narot come "
                          f"together; only {', '.join(present)} given")
    return names


def read_csv(path, voxel_size=None, tomo_id=None, **_):
    """Read a tomopick CSV coordinate table.

    Parameters
    ----------
    path : str
    voxel_size : float, optional
        Å per voxel of the positions (recorded in the returned table).
    tomo_id : str, optional
        tsId for every row when the file has no tomoId column.

    Returns
    -------
    Picks
        ``matrices`` when the angle columns are present, ``scores`` when the
        score column is, ``extra['labels']`` ((N,) str array of `LABELS`)
        when the label column is.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        On an unknown or missing column, or a row that does not parse (the
        message names the file and the line).

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "picks.csv")
    >>> with open(path, "w") as f:
    ...     _ = f.write("# picked by hand\\nx,y,z,label\\n10,20,30,\\n11,21,31,negative\\n")
    >>> picks = read_csv(path, voxel_size=8.0, tomo_id="TS_1")
    >>> picks.tomo_ids.tolist(), picks.positions.tolist(), picks.extra["labels"].tolist()
    (['TS_1', 'TS_1'], [[10.0, 20.0, 30.0], [11.0, 21.0, 31.0]], ['positive', 'negative'])
    >>> tmp.cleanup()
    """
    _require_file(path)
    names = None
    rows = []
    with open(path, newline="") as handle:
        for line_number, fields in enumerate(csv.reader(handle), start=1):
            if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
                continue
            if names is None:
                names = _parse_header(path, line_number, fields, tomo_id)
                continue
            if len(fields) != len(names):
                raise _line_error(path, line_number,
                                  f"{len(fields)} fields for {len(names)} columns")
            rows.append((line_number, [f.strip() for f in fields]))
    if names is None:
        raise ValueError(f"{path}: no header line (expected {','.join(REQUIRED)}...)")

    column = {n: i for i, n in enumerate(names)}
    n = len(rows)
    tomo_ids = np.empty(n, dtype=object)
    values = {name: np.zeros(n) for name in COLUMNS
              if name in column and name not in ("tomoId", "label")}
    labels = np.full(n, POSITIVE, dtype=object)
    for row, (line_number, fields) in enumerate(rows):
        tomo_ids[row] = fields[column["tomoId"]] if "tomoId" in column else tomo_id
        if not tomo_ids[row]:
            raise _line_error(path, line_number, "empty tomoId")
        if "label" in column:
            labels[row] = fields[column["label"]].lower() or POSITIVE
            if labels[row] not in LABELS:
                raise _line_error(path, line_number, f"label is {fields[column['label']]!r}, "
                                  f"not one of {', '.join(LABELS)}")
        for name, array in values.items():
            text = fields[column[name]]
            try:
                array[row] = float(text)
            except ValueError:
                raise _line_error(path, line_number, f"{name} is {text!r}, not a number") from None
            if not np.isfinite(array[row]):
                raise _line_error(path, line_number, f"{name} is {text!r}")
            if name == "groupId" and array[row] != int(array[row]):
                raise _line_error(path, line_number, f"groupId is {text!r}, not an integer")

    positions = np.column_stack([values[a] for a in "xyz"]) if n else np.zeros((0, 3))
    matrices = None
    if "tdrot" in values:
        matrices = homogeneous(dynamo_euler_to_matrix(values["tdrot"], values["tilt"],
                                                      values["narot"]).reshape(n, 3, 3))
    picks = Picks(tomo_ids.astype(str), positions,
                  values["groupId"].astype(int) if "groupId" in values else None,
                  matrices, values.get("score"), voxel_size)
    if "label" in column:
        picks.extra["labels"] = labels.astype(str)
    return picks


def write_csv(path, picks, **_):
    """Write a `Picks` table as a tomopick CSV coordinate table.

    The columns written are tomoId, x, y, z, groupId, then tdrot, tilt, narot
    when the table has matrices, score when it has scores and label when
    ``picks.extra`` has 'labels'. Matrix shifts are folded into the positions.

    Parameters
    ----------
    path : str
    picks : Picks

    Examples
    --------
    >>> import os, tempfile
    >>> from tomopick.core.rotations import homogeneous, dynamo_euler_to_matrix
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "picks.csv")
    >>> matrices = homogeneous(dynamo_euler_to_matrix([30.0], [60.0], [90.0]).reshape(1, 3, 3))
    >>> matrices[0, :3, 3] = [0.5, 0, 0]       # a shift, folded into x
    >>> write_csv(path, Picks("TS_1", [[10, 20, 30]], [2], matrices, [0.75]))
    >>> print(open(path).read())
    tomoId,x,y,z,groupId,tdrot,tilt,narot,score
    TS_1,10.5000,20.0000,30.0000,2,30.0000,60.0000,90.0000,0.75
    <BLANKLINE>
    >>> back = read_csv(path)
    >>> np.allclose(back.matrices[:, :3, :3], matrices[:, :3, :3], atol=1e-6)
    True
    >>> tmp.cleanup()
    """
    positions = _centre_positions(picks)
    header = list(REQUIRED) + ["groupId"]
    if picks.matrices is not None:
        angles = np.column_stack(matrix_to_dynamo_euler(picks.matrices)) if len(picks) \
            else np.zeros((0, 3))
        header += list(ANGLES)
    if picks.scores is not None:
        header.append("score")
    labels = picks.extra.get("labels")
    if labels is not None:
        header.append("label")
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for i in range(len(picks)):
            row = [picks.tomo_ids[i]] + [f"{v:.4f}" for v in positions[i]]
            row.append(str(int(picks.group_ids[i])))
            if picks.matrices is not None:
                row += [f"{a:.4f}" for a in angles[i]]
            if picks.scores is not None:
                row.append(f"{picks.scores[i]:.6g}")
            if labels is not None:
                row.append(str(labels[i]))
            writer.writerow(row)
