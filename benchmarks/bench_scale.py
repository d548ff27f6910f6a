"""Every protocol on a full-size tomogram: wall time and peak memory per protocol.

A 1000 x 1000 x 300 float32 phantom (x, y, z; 1.2 GB) - Gaussian noise with
dark Gaussian blobs (particles) - is written slab by slab into an MRC file (no
simulator: it would need several whole-volume arrays). Then, in one
throwaway project, as a user's runs (``project.launchProtocol(wait=True)``,
one protocol subprocess each):

- import tomograms (a link) and import with Fourier binning 2
- denoise: EED and Beltrami flow (few iterations: memory does not depend on
  them, time is linear in them)
- PickET, one workflow (FFT features + GMM + watershed)
- template matching (a Gaussian blob template, 30 degree global search) and
  learned picking (trained on a few hundred of the blob centres)
- import of 10,000 coordinates, extraction of 10,000 subtomograms (box 32),
  apply alignment on them
- three imports of 100,000 coordinates and their consensus

For each: wall seconds and peak RSS of the protocol process (its kernel
high-water mark ``VmHWM``, polled every 0.1 s, and the exact
``getrusage(RUSAGE_CHILDREN)`` maximum whenever the protocol raised it). The
goal is < 4 GB for every protocol. Everything large lives under one temporary
folder, deleted at the end (``--keep`` to keep it).

Usage::

    nice python benchmarks/bench_scale.py [--shape NZ NY NX] [--keep] [--only NAME ...]

Times on a loaded machine are inflated; the memory figures are not.
"""
import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
GOAL_GB = 4.0


def write_phantom(path, shape, voxel_size, n_blobs, seed=0):
    """Noise + dark Gaussian blobs, written slab by slab; returns the blob centres (x, y, z).

    Plain file writes, no memory map: this process's own peak RSS stays small,
    which matters because a forked protocol process starts with its parent's
    high-water mark (it would pollute the children's ``ru_maxrss``).
    """
    import numpy as np
    from tomopick.core.formats import create_mrc

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    margin, h = 12, 8
    centres = np.column_stack([rng.uniform(margin, nx - margin, n_blobs),
                               rng.uniform(margin, ny - margin, n_blobs),
                               rng.uniform(margin, nz - margin, n_blobs)])
    r = np.arange(-h, h + 1, dtype=np.float32)
    blob = -3.0 * np.exp(-(r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2)
                         / (2 * 3.0 ** 2)).astype(np.float32)
    voxels = np.rint(centres).astype(int)
    create_mrc(path, shape, voxel_size).close()  # header and size; data written below
    slab = 20
    with open(path, "r+b") as handle:
        handle.seek(1024)  # no extended header
        for z0 in range(0, nz, slab):
            z1 = min(nz, z0 + slab)
            block = rng.standard_normal((z1 - z0, ny, nx), dtype=np.float32)
            for i, j, k in voxels[(voxels[:, 2] + h >= z0) & (voxels[:, 2] - h < z1)]:
                lo, hi = max(k - h, z0), min(k + h + 1, z1)
                block[lo - z0:hi - z0, j - h:j + h + 1, i - h:i + h + 1] += \
                    blob[lo - (k - h):hi - (k - h)]
            handle.write(block.tobytes())
    return centres


class PeakRSS:
    """Peak RSS of this process's descendants while a block runs (GB)."""

    def __init__(self):
        import psutil
        self.psutil = psutil
        self.peak = 0
        self._stop = threading.Event()

    def _poll(self):
        me = self.psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    with open(f"/proc/{child.pid}/status") as handle:
                        for line in handle:
                            if line.startswith("VmHWM:"):
                                self.peak = max(self.peak, int(line.split()[1]) * 1024)
                except OSError:
                    pass
            self._stop.wait(0.1)

    def __enter__(self):
        self.before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB on Linux
        if after > self.before:  # this protocol set the new maximum: exact
            self.peak = max(self.peak, after * 1024)
        self.gb = self.peak / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 1000, 1000),
                        metavar=("NZ", "NY", "NX"))
    parser.add_argument("--voxel-size", type=float, default=10.0)
    parser.add_argument("--extract", type=int, default=10000)
    parser.add_argument("--consensus", type=int, default=100000)
    parser.add_argument("--positives", type=int, default=300,
                        help="blob centres given to learned picking as positives")
    parser.add_argument("--eed-iterations", type=int, default=5)
    parser.add_argument("--bflow-iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only these steps (import, bin2, eed, bflow, picket, tm, "
                             "learned, extract, align, consensus)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--workdir", default=None, help="parent of the temporary folder")
    args = parser.parse_args(argv)

    work = tempfile.mkdtemp(prefix="bench-scale-", dir=args.workdir)
    os.environ["SCIPION_USER_DATA"] = os.path.join(work, "userdata")
    sys.path[:0] = [os.path.join(HERE, "..")]
    # the protocol processes import tomopick too: this checkout's, not an installed one
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [os.path.abspath(os.path.join(HERE, ".."))]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    from tomopick import environment
    environment.set_defaults()  # the Scipion environment, before pyworkflow loads
    import numpy as np
    from pyworkflow.object import Pointer
    from pyworkflow.project import Manager

    from tomopick.core.formats import write_coordinates
    from tomopick.core.picks import Picks
    import tomopick.protocols as protocols

    rows = []
    want = (lambda name: True) if args.only is None else (lambda name: name in args.only)
    try:
        shape = tuple(args.shape)
        print(f"work folder {work}; {shutil.disk_usage(work).free / 1e9:.0f} GB free")
        data = os.path.join(work, "data")
        os.makedirs(data)
        t0 = time.perf_counter()
        n_blobs = max(100, int(np.prod(shape) / 150000))
        centres = write_phantom(os.path.join(data, "phantom.mrc"), shape, args.voxel_size,
                                n_blobs)
        print(f"phantom {shape[::-1]} (x, y, z) float32, {n_blobs} blobs, "
              f"{os.path.getsize(os.path.join(data, 'phantom.mrc')) / 1e9:.2f} GB written in "
              f"{time.perf_counter() - t0:.0f} s")

        project = Manager().createProject("bench_scale")
        os.chdir(project.getPath())

        def run(label, cls, inputs=(), **params):
            prot = project.newProtocol(cls, **params)
            for name, (source, output) in dict(inputs).items():
                attr = getattr(prot, name)
                if hasattr(attr, "append") and not hasattr(attr, "setExtended"):
                    for src, out in zip(source, output):
                        attr.append(Pointer(src, extended=out))
                else:
                    attr.set(source)
                    attr.setExtended(output)
            with PeakRSS() as rss:
                start = time.perf_counter()
                project.launchProtocol(prot, wait=True)
                seconds = time.perf_counter() - start
            prot = project.getProtocol(prot.getObjId())
            status = "ok" if prot.isFinished() else f"FAILED: {prot.getErrorMessage()[:200]}"
            rows.append((label, seconds, rss.gb, status))
            print(f"{label:<38s} {seconds:8.1f} s  {rss.gb:6.2f} GB  {status}", flush=True)
            return prot

        def report_recall(prot):
            """Print the fraction of the phantom's blobs with a pick within 3 voxels."""
            from scipy.spatial import cKDTree
            picks = Picks.load(prot._getExtraPath("phantom_picks.npz")).positions
            found = 0.0
            if len(picks):
                found = float(np.mean(cKDTree(picks).query(centres)[0] <= 3))
            print(f"  {len(picks)} picks; recall {found:.2f} of the {len(centres)} blobs")

        def coordinates_csv(name, positions):
            folder = os.path.join(data, name)
            os.makedirs(folder)
            write_coordinates(os.path.join(folder, "picks.csv"),
                              Picks(tomo_ids="phantom", positions=positions,
                                    voxel_size=args.voxel_size), "csv")
            return folder

        tomos = run("import tomograms", protocols.ProtTomoPickImportTomograms,
                    filesPath=data, filesPattern="{TS}.mrc")
        T = (tomos, "Tomograms")
        if want("bin2"):
            run("import tomograms, binning 2", protocols.ProtTomoPickImportTomograms,
                filesPath=data, filesPattern="{TS}.mrc", binning=2)
        # the phantom's particle: a Gaussian blob of sigma 3 voxels (~16 voxels across)
        diameter = 16 * args.voxel_size
        reference = os.path.join(data, "template.mrc")
        r = np.arange(-16, 16, dtype=np.float32)
        from tomopick.core.formats import write_mrc
        write_mrc(reference, np.exp(-(r[:, None, None] ** 2 + r[None, :, None] ** 2
                                      + r[None, None, :] ** 2) / 18.0).astype(np.float32),
                  args.voxel_size)
        if want("tm"):
            # the blob is round: octahedral symmetry and a 30 degree global search (11
            # rotations) refined to 10 degrees take minutes, not hours; memory does not
            # depend on the number of rotations. The phantom's blobs are 3 sigma deep: after
            # the bead detector's smoothing they would pass for gold beads
            prot = run("template matching (O, 30 deg, tiles)",
                       protocols.ProtTomoPickTemplateMatching, {"inputTomograms": T},
                       referenceFile=reference, invertContrast=True, particleDiameter=diameter,
                       symmetry="o", coarseStep=30.0, angularSampling=20.0, maskBeads=False,
                       numberOfThreads=args.threads)
            if prot.isFinished():
                report_recall(prot)
        rng = np.random.default_rng(1)
        nz, ny, nx = shape
        if want("learned"):
            positives = run(f"import {args.positives} positives",
                            protocols.ProtTomoPickImportCoordinates, {"inputTomograms": T},
                            filesPath=coordinates_csv("positives", centres[:args.positives]),
                            filesPattern="picks.csv", boxSize=32)
            prot = run(f"learned picking ({args.positives} positives)",
                       protocols.ProtTomoPickLearnedPicking,
                       {"inputTomograms": T, "positives": (positives, "coordinates")},
                       particleDiameter=diameter, boxSize=32, numberOfThreads=args.threads)
            if prot.isFinished():
                report_recall(prot)
        if want("extract") or want("align"):
            positions = np.column_stack([rng.uniform(16, nx - 16, args.extract),
                                         rng.uniform(16, ny - 16, args.extract),
                                         rng.uniform(16, nz - 16, args.extract)])
            coords = run(f"import {args.extract} coordinates",
                         protocols.ProtTomoPickImportCoordinates, {"inputTomograms": T},
                         filesPath=coordinates_csv("extract", positions),
                         filesPattern="picks.csv", boxSize=32)
            subtomos = run(f"extraction of {args.extract} (box 32)",
                           protocols.ProtTomoPickExtraction,
                           {"inputCoordinates": (coords, "coordinates")}, boxSize=32,
                           numberOfThreads=args.threads)
            if want("align"):
                run(f"apply alignment ({args.extract})", protocols.ProtTomoPickApplyAlignment,
                    {"inputSubtomograms": (subtomos, "subtomograms")},
                    numberOfThreads=args.threads)
        if want("consensus"):
            base = np.column_stack([rng.uniform(0, nx, args.consensus),
                                    rng.uniform(0, ny, args.consensus),
                                    rng.uniform(0, nz, args.consensus)])
            imports = []
            for k in range(3):
                jittered = np.clip(base + rng.normal(0, 1.0, base.shape), 0,
                                   np.array([nx, ny, nz]) - 1)
                imports.append(run(f"import {args.consensus} coordinates #{k + 1}",
                                   protocols.ProtTomoPickImportCoordinates,
                                   {"inputTomograms": T},
                                   filesPath=coordinates_csv(f"consensus_{k}", jittered),
                                   filesPattern="picks.csv", boxSize=32))
            run(f"consensus 3 x {args.consensus}", protocols.ProtTomoPickConsensus,
                {"inputCoordinates": (imports, ["coordinates"] * 3)}, consensusRadius=4)
        # the long ones last, so that a run stopped early still reports the others
        if want("eed"):
            run(f"denoise EED ({args.eed_iterations} it.)", protocols.ProtTomoPickDenoise,
                {"inputSetTomograms": T}, method=0, nIter=args.eed_iterations,
                numberOfThreads=args.threads)
        if want("bflow"):
            run(f"denoise BFlow ({args.bflow_iterations} it.)", protocols.ProtTomoPickDenoise,
                {"inputSetTomograms": T}, method=1, nIterBflow=args.bflow_iterations,
                numberOfThreads=args.threads)
        if want("picket"):
            run("PickET (FFT, GMM, watershed)", protocols.ProtTomoPickPickET,
                {"inputTomograms": T}, featureExtraction=0, clustering=1, localization=1,
                particleDiameter=8 * args.voxel_size, boxSize=32,
                numberOfThreads=args.threads)
    finally:
        os.chdir(HERE)
        print(f"\n{'protocol':<38s} {'wall s':>8s} {'peak GB':>8s}  status "
              f"(goal < {GOAL_GB:g} GB; {os.cpu_count()} cores, shared)")
        for label, seconds, gb, status in rows:
            flag = "" if gb < GOAL_GB else "  OVER"
            print(f"{label:<38s} {seconds:8.1f} {gb:8.2f}  {status}{flag}")
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
