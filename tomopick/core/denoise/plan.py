"""How one iteration walks a volume: z-slabs, (y, x) tiles with halos, threads, buffers.

Both filters are explicit nonlinear diffusion schemes evolved in float32.
Every iteration is one pass over the volume in z-slabs, each cut into (y, x)
tiles; a tile is computed from the previous iterate with a halo covering the
stencil reach of one iteration (EED: Gaussian radius + 2; BFlow: 2), and a
finished slab overwrites the working volume in place (the old values of its
top planes are kept aside for the next slab's halo).  Memory is thus one
float32 working volume, one slab of output and a few ~4 MiB tile buffers,
and the result is bit-for-bit that of the whole volume processed as one
block, whatever the slab, tile and thread counts (the automatic contrast
parameter uses global statistics over a fixed voxel grid).  The tiles of a
slab are shared among threads (numpy releases the GIL).  The arithmetic
runs on flat, contiguous shifted slices of each padded tile, which is why no
scipy filter appears in `kernels`.
"""
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: elements of one padded tile array: ~10 such temporaries stay near the L3
#: cache (flat passes run ~1.7x faster than on 12 MB arrays)
_TILE_ELEMENTS = 2**20
_DEFAULT_SLAB = 64


class _Pool:
    """Reusable float32 tile buffers of one capacity (the largest padded tile).

    A tile step needs ~100 array passes over ~10 live temporaries; allocating
    them afresh costs a page fault per 4 KiB (as much again as the
    arithmetic), so flat buffers are recycled and smaller tiles use their
    leading part.  The pool holds as many buffers as were ever live at once.
    Thread-safe.
    """

    def __init__(self, capacity):
        self.capacity = int(capacity)
        self._free = []
        self._lock = threading.Lock()

    def take(self, shape):
        n = math.prod(shape)
        if n > self.capacity:
            raise ValueError(f"tile of {shape} exceeds the pool's {self.capacity} elements")
        with self._lock:
            buf = self._free.pop() if self._free else None
        if buf is None:
            buf = np.empty(self.capacity, dtype=np.float32)
        return buf[:n].reshape(shape)

    def give(self, *arrays):
        with self._lock:
            for a in arrays:
                self._free.append(a.base if a.base is not None else a.reshape(-1))

    def clear(self):
        with self._lock:
            self._free.clear()


def _reflect(index, n):
    """Half-sample symmetric reflection of (possibly out-of-range) indices into [0, n)."""
    index = np.mod(index, 2 * n)
    return np.where(index >= n, 2 * n - 1 - index, index)


def _as_slice(index):
    """A slice equal to an increasing run of indices, else the index array."""
    if len(index) and np.all(np.diff(index) == 1):
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


def _crop(a, m):
    if m == 0:
        return a
    return a[m:-m, m:-m, m:-m]


class Plan:
    """How one iteration walks the volume: z-slabs, (y, x) tiles inside them, threads.

    Examples
    --------
    >>> with Plan((6, 10, 10), halo=1, n_threads=2, slab_size=4, tile=(5, 5)) as plan:
    ...     print(plan.slab, plan.tiles)
    ...     u = np.arange(600, dtype=np.float32).reshape(6, 10, 10)
    ...     def step(pool, window):                   # mean of the two z-neighbours
    ...         out = pool.take(window.shape)
    ...         out[1:-1] = (window[:-2] + window[2:]) / 2
    ...         return out
    ...     plan.update(u, step)
    4 [(0, 5, 0, 5), (0, 5, 5, 10), (5, 10, 0, 5), (5, 10, 5, 10)]
    >>> a = np.pad(np.arange(600, dtype=np.float32).reshape(6, 10, 10), 1, mode="symmetric")
    >>> np.array_equal(u, (a[:-2, 1:-1, 1:-1] + a[2:, 1:-1, 1:-1]) / 2)   # as in one block
    True
    """

    def __init__(self, shape, halo, n_threads, slab_size=None, tile=None):
        nz, ny, nx = shape
        self.shape, self.halo = shape, halo
        self.slab = max(1, min(int(slab_size or _DEFAULT_SLAB), nz))
        if tile is None:
            area = _TILE_ELEMENTS / (self.slab + 2 * halo)
            side = max(2 * halo, int(math.sqrt(area)) - 2 * halo)
            tx = min(nx, side)
            ty = max(2 * halo, int(area / (tx + 2 * halo)) - 2 * halo)
            tile = (ty, tx)
        ty, tx = (max(1, min(int(t), n)) for t, n in zip(tile, (ny, nx)))
        self.tiles = [(y0, min(y0 + ty, ny), x0, min(x0 + tx, nx))
                      for y0 in range(0, ny, ty) for x0 in range(0, nx, tx)]
        self.n_threads = max(1, min(int(n_threads), len(self.tiles)))
        self.executor = ThreadPoolExecutor(self.n_threads) if self.n_threads > 1 else None
        self.pool = _Pool((self.slab + 2 * halo) * (ty + 2 * halo) * (tx + 2 * halo))

    def map(self, fn, items):
        if self.executor is None:
            return [fn(*item) for item in items]
        return list(self.executor.map(lambda item: fn(*item), items))

    def close(self):
        if self.executor is not None:
            self.executor.shutdown()
        self.pool.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def window(self, below, u, z0, z1, y0, y1, x0, x1):
        """Padded block (pooled) around slab [z0, z1) x tile [y0, y1) x [x0, x1).

        Holds the old values of the iterate: ``below`` has those of the planes
        just under z0 (already overwritten in ``u``), everything from z0 up is
        still old in ``u``.  Outside the volume the iterate is reflected
        (half-sample symmetric, i.e. Neumann boundaries).
        """
        h, (nz, ny, nx) = self.halo, self.shape
        zs = _reflect(np.arange(z0 - h, z1 + h), nz)
        ys = _as_slice(_reflect(np.arange(y0 - h, y1 + h), ny))
        xs = _as_slice(_reflect(np.arange(x0 - h, x1 + h), nx))
        win = self.pool.take((len(zs), y1 - y0 + 2 * h, x1 - x0 + 2 * h))
        fancy = not (isinstance(ys, slice) and isinstance(xs, slice))
        for j, z in enumerate(zs):
            plane = below[len(below) - (z0 - z)] if z < z0 else u[z]
            win[j] = plane[ys][:, xs] if fancy else plane[ys, xs]
        return win

    def update(self, u, step):
        """Replace `u` in place by one step of ``step(pool, window)``, slab by slab."""
        h = self.halo
        below = u[:0].copy()
        for z0 in range(0, self.shape[0], self.slab):
            z1 = min(z0 + self.slab, self.shape[0])
            out = np.empty((z1 - z0,) + u.shape[1:], dtype=np.float32)

            def tile(y0, y1, x0, x1):
                win = self.window(below, u, z0, z1, y0, y1, x0, x1)
                new = step(self.pool, win)
                out[:, y0:y1, x0:x1] = _crop(new, h)
                self.pool.give(win, new)

            self.map(tile, self.tiles)
            if z1 - z0 >= h:
                below = u[z1 - h:z1].copy()
            else:
                below = np.concatenate([below, u[z0:z1]], axis=0)[
                    max(0, len(below) + z1 - z0 - h):]
            u[z0:z1] = out
            del out

    def samples(self, u, sampler):
        """Gather ``sampler(pool, window, halo, (z0, y0, x0))`` over all tiles (read-only)."""
        result = []
        for z0 in range(0, self.shape[0], self.slab):
            z1 = min(z0 + self.slab, self.shape[0])
            below = u[max(z0 - self.halo, 0):z0]

            def tile(y0, y1, x0, x1):
                win = self.window(below, u, z0, z1, y0, y1, x0, x1)
                values = sampler(self.pool, win, self.halo, (z0, y0, x0))
                self.pool.give(win)
                return values

            result += self.map(tile, self.tiles)
        return result
