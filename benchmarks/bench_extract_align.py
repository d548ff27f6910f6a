"""Speed of subtomogram extraction and apply-alignment, next to peers timed in the same run.

Extraction: 10,000 boxes of 32^3 cut out of a memory-mapped 1000x1000x300
float32 MRC (1.2 GB), against reading the whole file once (``np.fromfile`` of
the data block). Both are timed with the file in the page cache ("warm": the
usual case right after a tomogram was written or read) and, where the kernel
lets us evict it (``posix_fadvise(DONTNEED)``, no root needed), with the file
out of the cache ("cold").

Alignment: 2,000 boxes of 64^3 (extracted from the same file) aligned with
random rotations and sub-voxel shifts by `tomopick.core.alignment.apply_alignment`
(trilinear), against ``scipy.ndimage.affine_transform(order=1)`` applied to each
box one by one (its default mode 'constant'). Outputs are compared inside the
inscribed sphere (the two modes differ only in the outermost voxel shell: see
`tomopick.core.alignment`).

Usage::

    python benchmarks/bench_extract_align.py            # full size
    python benchmarks/bench_extract_align.py --quick    # 400x400x150, 1000 and 200 boxes

The temporary MRC is deleted at the end.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tomopick.core import alignment, extraction  # noqa: E402
from tomopick.core.formats.mrc import create_mrc, read_mrc  # noqa: E402
from tomopick.core.simulate import random_rotations  # noqa: E402
from tomopick.core.rotations import homogeneous  # noqa: E402


def write_tomogram(path, shape, seed=0):
    """Random-ish float32 MRC written slab by slab through a memory map."""
    rng = np.random.default_rng(seed)
    mrc = create_mrc(path, shape, voxel_size=10.0)
    nz, ny, nx = shape
    for z0 in range(0, nz, 16):
        k = min(16, nz - z0)
        mrc.data[z0:z0 + k] = rng.standard_normal((k, ny, nx), dtype=np.float32)
    mrc.flush()
    mrc.close()
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def drop_cache(path):
    """Evict a (clean, fsynced) file from the page cache; False if the kernel refuses."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return True
    except (AttributeError, OSError):
        return False


def full_read(path, shape):
    """Read the whole data block of the MRC once (the peer of extraction)."""
    header = 1024 + int(np.frombuffer(open(path, "rb").read(96)[92:96], np.int32)[0])
    with open(path, "rb") as fh:
        fh.seek(header)
        data = np.fromfile(fh, dtype=np.float32, count=int(np.prod(shape)))
    return data.reshape(shape)


def timed(function, *args, **kwargs):
    """(wall seconds, result); the process CPU seconds go to ``timed.cpu``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    timed.cpu = time.process_time() - start_cpu
    return time.perf_counter() - start, result


def bench_extraction(path, shape, n_boxes, box, rng, cache_states, repeats=3):
    """Full read and extraction, alternated ``repeats`` times per cache state; min and median."""
    half = box // 2 + 1
    positions = np.column_stack([rng.uniform(half, shape[2 - a] - half, n_boxes)
                                 for a in range(3)])  # x, y, z
    rows = []
    for state in cache_states:
        reads, extracts, reads_cpu, extracts_cpu = [], [], [], []
        for _ in range(repeats):
            if state == "cold" and not drop_cache(path):
                print("  (cannot evict the file from the page cache: cold runs skipped)")
                break
            if state == "warm":
                full_read(path, shape)  # both measurements see the whole file cached
            t_read, data = timed(full_read, path, shape)
            reads_cpu.append(timed.cpu)
            del data
            if state == "cold":
                drop_cache(path)
            volume = read_mrc(path, mmap=True)
            t_extract, result = timed(extraction.extract_subtomograms, volume, positions, box)
            extracts_cpu.append(timed.cpu)
            assert len(result.index) == n_boxes and result.boxes.shape[1:] == (box,) * 3
            # spot check: boxes are exact copies of the tomogram
            i = int(result.index[-1])
            x, y, z = np.floor(positions[i] + 0.5).astype(int) - box // 2
            assert np.array_equal(result.boxes[-1], volume[z:z + box, y:y + box, x:x + box])
            del result, volume
            reads.append(t_read)
            extracts.append(t_extract)
        if not reads:
            continue
        rows.append((state, min(reads), min(extracts)))
        print(f"  {state:4s} cache, {len(reads)} alternated runs: full read "
              f"min {min(reads):5.2f} s (median {np.median(reads):5.2f}), extraction "
              f"min {min(extracts):5.2f} s (median {np.median(extracts):5.2f}); "
              f"ratio of minima {min(extracts) / min(reads):4.2f}, of medians "
              f"{np.median(extracts) / np.median(reads):4.2f}")
        print(f"       CPU time (user + system, all threads): full read min "
              f"{min(reads_cpu):5.2f} s, extraction min {min(extracts_cpu):5.2f} s; "
              f"ratio {min(extracts_cpu) / min(reads_cpu):4.2f}")
    return positions, rows


def bench_alignment(path, shape, n_boxes, box, rng, workers_list):
    half = box // 2 + 1
    positions = np.column_stack([rng.uniform(half, shape[2 - a] - half, n_boxes)
                                 for a in range(3)])
    volume = read_mrc(path, mmap=True)
    boxes = extraction.extract_subtomograms(volume, positions, box).boxes
    del volume
    boxes = ndimage.gaussian_filter1d(boxes, 1.0, axis=-1)  # a little smoothness, realistic
    matrices = homogeneous(random_rotations(n_boxes, rng), rng.uniform(-3, 3, (n_boxes, 3)))

    # ours, in batches (as the protocol does: align, write, accumulate the average)
    keep = np.arange(0, n_boxes, max(1, n_boxes // 50))
    ours_kept = {}
    times, cpu = {}, {}
    batch = 100
    for workers in workers_list:
        out = np.empty((batch,) + boxes.shape[1:], np.float32)
        start, start_cpu = time.perf_counter(), time.process_time()
        for b0 in range(0, n_boxes, batch):
            chunk = slice(b0, min(n_boxes, b0 + batch))
            k = chunk.stop - chunk.start
            alignment.apply_alignment(boxes[chunk], matrices[chunk], out=out[:k], workers=workers)
            for i in keep[(keep >= chunk.start) & (keep < chunk.stop)]:
                ours_kept[int(i)] = out[i - b0].copy()
        times[workers] = time.perf_counter() - start
        cpu[workers] = time.process_time() - start_cpu

    # scipy, box by box
    scipy_kept = {}
    start, start_cpu = time.perf_counter(), time.process_time()
    for i in range(n_boxes):
        A, offset = alignment._index_transform(matrices[i], boxes.shape[1:])
        result = ndimage.affine_transform(boxes[i], A, offset, order=1)
        if i in ours_kept:
            scipy_kept[i] = result
    t_scipy = time.perf_counter() - start
    cpu_scipy = time.process_time() - start_cpu

    z, y, x = np.indices(boxes.shape[1:]) - box // 2
    # where the source point R r + t stays >= 1 voxel inside the box the two
    # edge modes cannot differ
    reach = box // 2 - 2 - np.linalg.norm(matrices[:, :3, 3], axis=1).max()
    sphere = x ** 2 + y ** 2 + z ** 2 <= reach ** 2
    scale = float(boxes.std())
    inner = max(float(np.abs(ours_kept[i] - scipy_kept[i])[sphere].max()) for i in ours_kept)
    outer = np.mean([np.mean(np.abs(ours_kept[i] - scipy_kept[i])[~sphere] > 1e-4 * scale)
                     for i in ours_kept])
    print(f"  scipy affine_transform(order=1), box by box: wall {t_scipy:6.2f} s "
          f"({1e3 * t_scipy / n_boxes:.2f} ms/box), cpu {cpu_scipy:6.2f} s")
    for workers, t in times.items():
        print(f"  tomopick apply_alignment, {workers} thread(s):     wall {t:6.2f} s "
              f"({1e3 * t / n_boxes:.2f} ms/box), cpu {cpu[workers]:6.2f} s   "
              f"speed-up x{t_scipy / t:4.2f} (wall)"
              + (f", x{cpu_scipy / cpu[workers]:4.2f} (cpu)" if workers == 1 else ""))
    print(f"  agreement on {len(ours_kept)} boxes: max |ours - scipy| within radius {reach:.1f} "
          f"= {inner:.2e} (data std {scale:.2f}); voxels differing by > 1e-4 std beyond it "
          f"(scipy 'constant' vs zero padding at the box edge): {100 * outer:.2f} %")
    return t_scipy, times, inner


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes for iterating")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("NZ", "NY", "NX"))
    parser.add_argument("--n-extract", type=int, default=None)
    parser.add_argument("--n-align", type=int, default=None)
    parser.add_argument("--tmpdir", default=None, help="where the temporary MRC goes")
    parser.add_argument("--repeats", type=int, default=5,
                        help="alternated read/extraction runs per cache state (min and "
                             "median are reported: the machine may be shared)")
    args = parser.parse_args(argv)
    shape = tuple(args.shape or ((150, 400, 400) if args.quick else (300, 1000, 1000)))
    n_extract = args.n_extract or (1000 if args.quick else 10000)
    n_align = args.n_align or (200 if args.quick else 2000)
    rng = np.random.default_rng(0)
    print(f"machine: {os.cpu_count()} cores; numpy {np.__version__}")
    workdir = tempfile.mkdtemp(prefix="tomopick-bench-", dir=args.tmpdir)
    try:
        path = os.path.join(workdir, "tomogram.mrc")
        t_write, _ = timed(write_tomogram, path, shape)
        size = os.path.getsize(path) / 1e9
        print(f"tomogram {shape[2]}x{shape[1]}x{shape[0]} float32, {size:.2f} GB, "
              f"written in {t_write:.1f} s")
        print(f"extraction: {n_extract} boxes of 32^3")
        bench_extraction(path, shape, n_extract, 32, rng, ("warm", "cold"), args.repeats)
        print(f"alignment: {n_align} boxes of 64^3")
        bench_alignment(path, shape, n_align, 64, rng, (1, os.cpu_count() or 1))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
