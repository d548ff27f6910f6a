"""tomoviz's picking consensus, for benchmarking: the real code or a faithful re-run.

scipion-em-tomoviz 3.2.1 (``tomoviz/protocols/protocol_particle_pick_consensus.py``,
GPL v2+, by C. O. S. Sorzano, T. Majtner, D. Herreros) runs, per tomogram:

``ProtTomoConsensusPicking.calculateConsensusStep``
    For each input set: the positions ``getPosition(SCIPION)`` (voxels from
    the tomogram centre), group ids and 4x4 matrices of its coordinates in
    that tomogram; the positions multiplied by (input sampling / first
    sampling) and *truncated to int*.
``consensusWorker(coords, vesicles, trMats, consensus, radius, posFn, jaccFn, mode)``
    Every matrix to a quaternion (``quaternion_from_matrix``). Under AND, a
    tomogram where some input is empty returns at once. The first input's
    picks become entries with one vote. Then, input after input and, inside
    an input, group id after group id (``np.unique``), each pick is compared
    with *all* entries so far (``np.sum((coord - allCoords[:Ncurrent])**2)``,
    including entries that the same input created): if the nearest is closer
    than ``radius`` (strict), the entry becomes the vote-weighted mean of
    positions, its quaternion becomes ``mean_quaternion`` of (entry, new)
    with equal weights by power iteration from a random start (tol 1e-3), its
    group id becomes the new pick's, and it gains a vote; otherwise the pick
    is a new entry. Entries with votes >= (or ==) the consensus (-1 or out of
    range: all inputs) are written with ``np.savetxt``: positions, group ids
    and matrices ``quaternion_matrix(q)`` with ``fmt='%-7.2f'`` (no shift).
``generateOutput``
    Reads the three text files back (``np.loadtxt``) and makes Coordinate3D's.

`load_tomoviz` imports the real ``consensusWorker`` from an unpacked wheel (a
stub ``pyvista`` module is put on the path: ``tomoviz/utils.py`` imports it at
load time, the consensus never uses it). `reimplemented_worker` is the same
algorithm written out here, statement for statement, on pwem's own quaternion
functions, for when the package is not available. `run_tomoviz` wraps either
with the per-tomogram array preparation and the read-back of its text files,
i.e. everything the protocol does except the Scipion database I/O.
"""
import importlib
import os
import sys
import tempfile
from math import sqrt

import numpy as np
from pwem.convert.transformations import (mean_quaternion, quaternion_from_matrix,
                                          quaternion_matrix, weighted_tensor)

PICK_MODE_LARGER = 0
PICK_MODE_EQUAL = 1


def load_tomoviz(path):
    """The real ``consensusWorker`` of tomoviz unpacked under ``path``.

    Parameters
    ----------
    path : str
        Folder holding the ``tomoviz`` package (e.g. an unpacked
        scipion_em_tomoviz wheel, or a ``pip install --target`` folder).

    Returns
    -------
    callable

    Raises
    ------
    ImportError
        If the package is not there or does not import.
    """
    if not os.path.isdir(os.path.join(path, "tomoviz")):
        raise ImportError(f"no tomoviz package under {path}")
    stub = tempfile.mkdtemp(prefix="pyvista-stub-")
    os.makedirs(os.path.join(stub, "pyvista"))
    with open(os.path.join(stub, "pyvista", "__init__.py"), "w") as handle:
        handle.write('"""Stub: tomoviz.utils imports pyvista; the consensus never uses it."""\n')
    sys.path[:0] = [path, stub]
    module = importlib.import_module("tomoviz.protocols.protocol_particle_pick_consensus")
    return module.consensusWorker


def reimplemented_worker(coords, vesicles, trMats, consensus, consensusRadius, posFn,
                         jaccFn=None, mode=PICK_MODE_LARGER):
    """tomoviz's ``consensusWorker``, re-run statement for statement."""
    if len(coords) == 1:
        N0, firstInput = 0, 0
    else:
        N0, firstInput = coords[0].shape[0], 1
    Ninputs = len(coords)
    Ncoords = sum(x.shape[0] for x in coords)
    allCoords = np.zeros([Ncoords, 3])
    allVesicles = np.zeros([Ncoords])
    allQuaternions = np.zeros([Ncoords, 4])
    votes = np.zeros(Ncoords)
    quaternions = [np.asarray([quaternion_from_matrix(m[i]) for i in range(len(m))])
                   for m in trMats]
    inAllMicrographs = consensus <= 0 or consensus >= Ninputs
    if not all(coords[i].shape[0] for i in range(Ninputs)) and inAllMicrographs:
        return False
    if N0 > 0:
        allCoords[0:N0, :] = coords[0]
        allVesicles[0:N0] = vesicles[0]
        allQuaternions[0:N0] = quaternions[0]
        votes[0:N0] = 1
    Ncurrent = N0
    for n in range(firstInput, Ninputs):
        for idv in np.unique(vesicles[n]):
            coords_vesicle = coords[n][np.where(vesicles[n] == idv)]
            q_vesicle = quaternions[n][np.where(vesicles[n] == idv)]
            for coord, q in zip(coords_vesicle, q_vesicle):
                if Ncurrent > 0:
                    dist = np.sum((coord - allCoords[0:Ncurrent]) ** 2, axis=1)
                    imin = np.argmin(dist)
                    if sqrt(dist[imin]) < consensusRadius:
                        allCoords[imin, ] = (votes[imin] * allCoords[imin, ] + coord) / (
                            votes[imin] + 1)
                        T = weighted_tensor((allQuaternions[imin, ], q))
                        allQuaternions[imin, ], _ = mean_quaternion(T)
                        allVesicles[imin] = idv
                        votes[imin] += 1
                        continue
                allCoords[Ncurrent, :] = coord
                allVesicles[Ncurrent] = idv
                allQuaternions[Ncurrent] = q
                votes[Ncurrent] = 1
                Ncurrent += 1
    if consensus <= 0 or consensus > Ninputs:
        consensus = Ninputs
    keep = votes >= consensus if mode == PICK_MODE_LARGER else votes == consensus
    consensusCoords = allCoords[keep, :]
    qConsensus = allQuaternions[keep]
    vesiclesConsensus = allVesicles[keep]
    trConsensus = np.zeros([len(qConsensus), 4, 4])
    for idq, q in enumerate(qConsensus):
        trConsensus[idq, ] = quaternion_matrix(q)
    if jaccFn:
        jaccardIdx = float(len(consensusCoords)) / (float(len(allCoords)) / Ninputs)
        with open(jaccFn, "a") as handle:
            handle.write("%s \t %f\n" % (posFn, jaccardIdx))
    if consensusCoords.size:
        np.savetxt(posFn, consensusCoords)
        base = os.path.splitext(posFn)[0]
        np.savetxt(base + "_vIds.txt", vesiclesConsensus)
        with open(base + "_trMats.txt", "w") as outfile:
            outfile.write("# Array shape: {0}\n".format(trConsensus.shape))
            for tr_slice in trConsensus:
                np.savetxt(outfile, tr_slice, fmt="%-7.2f")
                outfile.write("# New Transformation Matrix\n")
    return True


def run_tomoviz(worker, per_tomogram, sampling_rates, consensus, radius, mode, workdir):
    """Everything tomoviz's protocol does per tomogram, minus the database I/O.

    Parameters
    ----------
    worker : callable
        `load_tomoviz(...)` or `reimplemented_worker`.
    per_tomogram : dict
        tsId -> list (one per input) of (positions (N, 3) voxels from the
        tomogram centre, group ids (N,), matrices (N, 4, 4)), i.e. what
        ``getPosition(SCIPION)``, ``getGroupId()`` and ``getMatrix()`` give.
    sampling_rates : list of float
        Å/voxel of each input.
    consensus, radius, mode
        The form values (mode 0 '>=', 1 '=').
    workdir : str
        Where the worker writes its text files.

    Returns
    -------
    dict
        tsId -> (positions (K, 3) from the centre, group ids (K,), matrices
        (K, 4, 4)) as the protocol reads them back; tomograms without output
        are absent.
    """
    out = {}
    for name, inputs in per_tomogram.items():
        coords, vesicles, transformations = [], [], []
        for idx, (pos, groups, mats) in enumerate(inputs):
            scaled = np.asarray(pos, dtype=float) * (float(sampling_rates[idx])
                                                     / float(sampling_rates[0]))
            coords.append(np.asarray(scaled, dtype=int))
            vesicles.append(np.asarray(groups, dtype=int))
            transformations.append(np.asarray(mats))
        fn = os.path.join(workdir, "consensusCoords_%s.txt" % name)
        jaccard = os.path.join(workdir, "jaccard.txt")
        if not worker(coords, vesicles, transformations, consensus, radius, fn, jaccard, mode):
            continue
        if not os.path.exists(fn):
            continue
        positions = np.loadtxt(fn, ndmin=2)
        base = os.path.splitext(fn)[0]
        groups = np.loadtxt(base + "_vIds.txt", ndmin=1)
        with open(base + "_trMats.txt") as handle:
            shape = eval("(" + handle.readline().split("(")[1])    # as tomoviz does
        matrices = np.loadtxt(base + "_trMats.txt").reshape(shape)
        out[name] = (positions, groups, matrices)
    return out
