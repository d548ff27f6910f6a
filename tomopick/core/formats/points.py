"""The points CSV of vectorial picking: the user's clicks on vesicles, membranes, filaments.

::

    tomoId,modelId,x,y,z,role

One row per point; positions are voxels (x, y, z), bottom-left origin (the
centre of array element [k, j, i] is at (i, j, k)); ``role`` is ``point`` for a
surface / axis point and ``interior`` for the marker that tells which side is
inside. Each model (``modelId``) is one vesicle, membrane or filament. Written
by the interactive picker as points are made, read by the vectorial picking
protocol (its ``pointsFile``).
"""
import csv
import os
import tempfile

POINT, INTERIOR = "point", "interior"
CSV_COLUMNS = ("tomoId", "modelId", "x", "y", "z", "role")


def read_points_csv(path):
    """Rows of a points CSV.

    Parameters
    ----------
    path : str
        CSV ``tomoId,modelId,x,y,z[,role]``. The header line is optional
        (a first row whose x is numeric is data, in that column order); empty
        lines and lines starting with ``#`` are skipped; a missing or empty
        role means ``point``.

    Returns
    -------
    list of (str, int, float, float, float, str)
        (tomoId, modelId, x, y, z, role) in file order.

    Raises
    ------
    ValueError
        Naming the file and line of a missing column, a non-numeric value or
        an unknown role.

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "points.csv")
    >>> with open(path, "w") as f:
    ...     _ = f.write("TS_1,1,10,20,30\\nTS_1,1,12,20,30,interior\\n")
    >>> read_points_csv(path)
    [('TS_1', 1, 10.0, 20.0, 30.0, 'point'), ('TS_1', 1, 12.0, 20.0, 30.0, 'interior')]
    >>> tmp.cleanup()
    """
    rows, columns = [], None
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            row = [cell.strip() for cell in row]
            if not any(row) or row[0].startswith("#"):
                continue
            if columns is None:
                try:
                    float(row[2])
                    columns = {name: i for i, name in enumerate(CSV_COLUMNS)}
                except (ValueError, IndexError):
                    columns = {name: i for i, name in enumerate(row)}
                    missing = [c for c in CSV_COLUMNS[:5] if c not in columns]
                    if missing:
                        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} "
                                         f"(expected {','.join(CSV_COLUMNS)})")
                    continue
            try:
                cell = {name: row[i] for name, i in columns.items() if i < len(row)}
                role = (cell.get("role") or POINT).lower()
                model = int(float(cell["modelId"]))
                x, y, z = (float(cell[c]) for c in "xyz")
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}, line {line}: {err}") from err
            if role not in (POINT, INTERIOR):
                raise ValueError(f"{path}, line {line}: role must be 'point' or 'interior', "
                                 f"got {cell.get('role')!r}")
            rows.append((cell["tomoId"], model, x, y, z, role))
    return rows


def write_points_csv(path, rows):
    """Write points CSV rows atomically (temporary file, then ``os.replace``).

    A crash while writing leaves the previous file intact, never half a file.

    Parameters
    ----------
    path : str
    rows : iterable of (tomoId, modelId, x, y, z, role)

    Examples
    --------
    >>> import os, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "points.csv")
    >>> write_points_csv(path, [("TS_1", 1, 10, 20, 30, "point"), ("TS_1", 2, 5, 5.25, 5, "interior")])
    >>> print(open(path).read())
    tomoId,modelId,x,y,z,role
    TS_1,1,10.000,20.000,30.000,point
    TS_1,2,5.000,5.250,5.000,interior
    <BLANKLINE>
    >>> read_points_csv(path)[1]
    ('TS_1', 2, 5.0, 5.25, 5.0, 'interior')
    >>> tmp.cleanup()
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".points-", suffix=".csv", dir=directory)
    try:
        with os.fdopen(handle, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(CSV_COLUMNS)
            for ts_id, model, x, y, z, role in rows:
                writer.writerow([ts_id, int(model), f"{x:.3f}", f"{y:.3f}", f"{z:.3f}", role])
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
