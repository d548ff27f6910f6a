"""End to end: tomopick's picking consensus protocol next to tomoviz's, in one throwaway project.

The same three SetOfCoordinates3D (default 3 x 20,000 coordinates over 10
tomograms of 928 x 928 x 300 voxels, the ``separated`` scenario of
``bench_consensus.py``) go into ``ProtTomoPickConsensus`` and, when the
package is given, into tomoviz's real ``ProtTomoConsensusPicking``; both are
launched with ``project.launchProtocol(wait=True)`` as a user's run would be,
so the times include the Scipion database reads and writes and the ~1.3 s
subprocess start. The tomograms are sparse int8 MRC files (no disk space).

tomoviz is not installed: its unpacked wheel (``--tomoviz-path``, with its
``dist-info`` so that pyworkflow finds the plugin entry point) and a stub
``pyvista`` module are put on PYTHONPATH for this process and the protocol
subprocesses. Without it only tomopick's protocol runs. Nothing is downloaded.

Usage::

    python benchmarks/bench_consensus_protocol.py [--tomoviz-path DIR] [--quick]
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _prepare_tomoviz(path):
    """Make tomoviz importable here and in protocol subprocesses (before pyworkflow loads)."""
    stub = tempfile.mkdtemp(prefix="pyvista-stub-")
    os.makedirs(os.path.join(stub, "pyvista"))
    with open(os.path.join(stub, "pyvista", "__init__.py"), "w") as handle:
        handle.write('"""Stub: tomoviz.utils imports pyvista; the consensus never uses it."""\n')
    entries = [os.path.abspath(path), stub]
    os.environ["PYTHONPATH"] = os.pathsep.join(entries + [os.environ.get("PYTHONPATH", "")])
    sys.path[:0] = entries


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tomoviz-path", default=None)
    parser.add_argument("--n-per-input", type=int, default=20000)
    parser.add_argument("--tomograms", type=int, default=10)
    parser.add_argument("--radius", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="3 x 2,000 over 2 tomograms")
    parser.add_argument("--keep", action="store_true", help="keep the project folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_per_input, args.tomograms = 2000, 2
    if args.tomoviz_path:
        if os.path.isdir(os.path.join(args.tomoviz_path, "tomoviz")):
            _prepare_tomoviz(args.tomoviz_path)
        else:
            print(f"! no tomoviz package under {args.tomoviz_path}: tomopick only")
            args.tomoviz_path = None
    work = tempfile.mkdtemp(prefix="bench-consensus-protocol-")
    os.environ["SCIPION_USER_DATA"] = os.path.join(work, "userdata")
    sys.path[:0] = [os.path.join(HERE, ".."), HERE]

    import tomopick  # noqa: F401  (fills in the Scipion environment before pyworkflow loads)
    import numpy as np
    from pyworkflow.object import Pointer
    from pyworkflow.plugin import Domain
    from pyworkflow.project import Manager

    import bench_consensus as data
    from tomopick.core.formats import write_coordinates
    from tomopick.core.formats.mrc import create_mrc
    from tomopick.protocols import (ProtTomoPickConsensus, ProtTomoPickImportCoordinates,
                                    ProtTomoPickImportTomograms)

    inputs, _ = data.make_pickings(3, args.n_per_input, args.tomograms, args.radius,
                                   "separated", seed=0)
    for picks in inputs:
        # the CSV format folds shifts into positions: drop them so that the
        # positions are those of the separated scenario
        picks.matrices[:, :3, 3] = 0.0
    tomo_dir = os.path.join(work, "tomograms")
    os.makedirs(tomo_dir)
    for name in np.unique(inputs[0].tomo_ids):
        create_mrc(os.path.join(tomo_dir, f"{name}.mrc"), data.SHAPE, data.VOXEL_SIZE,
                   dtype=np.int8).close()

    project = Manager().createProject("bench_consensus")
    os.chdir(project.getPath())

    def launch(prot):
        t0 = time.perf_counter()
        project.launchProtocol(prot, wait=True)
        elapsed = time.perf_counter() - t0
        if not prot.isFinished():
            raise RuntimeError(f"{prot.getRunName()}: {prot.getStatus()} {prot.getErrorMessage()}")
        return elapsed

    tomos = project.newProtocol(ProtTomoPickImportTomograms, filesPath=tomo_dir,
                                filesPattern="{TS}.mrc")
    launch(tomos)
    imports = []
    for k, picks in enumerate(inputs):
        folder = os.path.join(work, f"picking_{k}")
        os.makedirs(folder)
        write_coordinates(os.path.join(folder, "picks.csv"), picks, "csv")
        prot = project.newProtocol(ProtTomoPickImportCoordinates, filesPath=folder,
                                   filesPattern="picks.csv", boxSize=24)
        prot.inputTomograms.set(tomos)
        prot.inputTomograms.setExtended("Tomograms")
        seconds = launch(prot)
        print(f"import coordinates #{k + 1}: {prot.coordinates.getSize()} in {seconds:.1f} s")
        imports.append(prot)

    def consensus(cls, **params):
        prot = project.newProtocol(cls, consensusRadius=args.radius, consensus=-1, **params)
        for imp in imports:
            prot.inputCoordinates.append(Pointer(imp, extended="coordinates"))
        seconds = launch(prot)
        return seconds, prot.consensusCoordinates.getSize()

    print(f"\n3 inputs x {args.n_per_input} coordinates, {args.tomograms} tomograms, "
          f"radius {args.radius}, AND")
    ours, n_ours = consensus(ProtTomoPickConsensus)
    print(f"  tomopick ProtTomoPickConsensus    : {ours:7.1f} s wall, {n_ours} coordinates")
    if args.tomoviz_path:
        theirs, n_theirs = consensus(Domain.findClass("ProtTomoConsensusPicking"))
        print(f"  tomoviz ProtTomoConsensusPicking  : {theirs:7.1f} s wall, {n_theirs} coordinates")
        print(f"  speed-up (protocol, wall)         : {theirs / ours:7.1f} x")
    if args.keep:
        print(f"project kept in {project.getPath()}")
    else:
        os.chdir(HERE)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
