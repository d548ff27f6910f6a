"""Array checks shared by the geometry modules."""
import numpy as np


def as_points(points, minimum, what):
    """``points`` as an (N, 3) float array, N >= ``minimum``, all finite.

    ``what`` names the model in the error (e.g. "a sphere").

    Examples
    --------
    >>> as_points([(1, 2, 3), (4, 5, 6)], 2, "a filament").shape
    (2, 3)
    >>> as_points([(1, 2, 3)], 4, "a sphere")
    Traceback (most recent call last):
    ...
    ValueError: a sphere needs at least 4 points, got 1
    """
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{what}: points must be an (N, 3) array of (x, y, z), "
                         f"got shape {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{what}: points contain NaN or infinite values")
    if len(points) < minimum:
        raise ValueError(f"{what} needs at least {minimum} points, got {len(points)}")
    return points


def unit(v):
    """Vectors along the last axis scaled to length 1 (zero vectors stay zero).

    Examples
    --------
    >>> unit([[3.0, 0, 4], [0, 0, 0]]).tolist()
    [[0.6, 0.0, 0.8], [0.0, 0.0, 0.0]]
    """
    v = np.asarray(v, dtype=float)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norm == 0, 1.0, norm)
