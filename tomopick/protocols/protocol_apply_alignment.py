"""Apply alignment: resample every subtomogram by its transform, and average the result."""
import json

import numpy as np
import pyworkflow.protocol.params as params
from pwem.constants import ALIGN_NONE
from pwem.protocols import EMProtocol
from pyworkflow.protocol.constants import STEPS_PARALLEL
from tomo.objects import AverageSubTomogram, SetOfSubTomograms

from tomopick.convert import (mark_convention, set_subtomogram_matrix, subtomogram_array,
                              subtomogram_groups)
from tomopick.core.alignment import align_in_batches
from tomopick.core.atomic import save_npy
from tomopick.core.formats import read_mrc, write_mrc

# the form's choices, in the order saved workflows store (by index); names are core's
INTERPOLATION_CHOICES = ["linear", "cubic"]


class ProtTomoPickApplyAlignment(EMProtocol):
    """Apply each subtomogram's alignment and average the aligned set.

    Every subtomogram is resampled as aligned(r) = subtomogram(R r + t), with
    r about the box centre and [[R, t], [0, 1]] the inverse of its transform M
    (Scipion's f'(r) = f(M r), as xmipptomo applies it): afterwards each
    particle is centred with its z-axis along +z (membrane proteins: the
    outward normal points up). Outside the box is zero,
    so nothing wraps around the edges. The aligned subtomograms have identity
    transforms; the average is their voxel-wise mean.
    """
    _label = "apply alignment subtomo"
    _possibleOutputs = {"outputSubtomograms": SetOfSubTomograms,
                        "outputAverage": AverageSubTomogram}
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.outputSubtomograms = None
        self.outputAverage = None

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputSubtomograms", params.PointerParam,
                      pointerClass="SetOfSubTomograms", important=True,
                      label="Subtomograms",
                      help="Subtomograms with transforms (e.g. from subtomogram extraction of "
                           "oriented coordinates, or from an alignment/refinement).")
        form.addParam("interpolation", params.EnumParam, choices=INTERPOLATION_CHOICES,
                      default=0, display=params.EnumParam.DISPLAY_HLIST,
                      label="Interpolation",
                      help="linear: trilinear (fast, slightly smoothing).\n"
                           "cubic: cubic B-spline (sharper, slower).")
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        # the input is read here, in the main thread: parallel steps never touch the database
        # groups are numbered: a tsId (or what another plugin put there) never makes a path
        groups = list(range(len(self._groups())))
        samplingRate = self.inputSubtomograms.get().getSamplingRate()
        alignSteps = [self._insertFunctionStep(self.alignStep, group, samplingRate,
                                               prerequisites=[])
                      for group in groups]
        self._insertFunctionStep(self.createOutputStep, groups, prerequisites=alignSteps)

    # --------------------------- STEPS functions -----------------------------
    def alignStep(self, group, samplingRate):
        tsId, items = list(self._groups().items())[group]
        interpolation = INTERPOLATION_CHOICES[self.interpolation.get()]
        total, files = None, []
        matrices = np.array([matrix for _, _, _, matrix in items])
        for start, aligned in align_in_batches(_SubtomogramFiles(items, subtomogram_array),
                                               matrices, interpolation,
                                               workers=self.numberOfThreads.get()):
            for (objId, _, _, _), volume in zip(items[start:start + len(aligned)], aligned):
                path = self._getExtraPath(f"aligned_{objId:06d}.mrc")
                write_mrc(path, volume, samplingRate)
                files.append((objId, path))
            part = aligned.sum(axis=0, dtype=np.float64)
            total = part if total is None else total + part
        save_npy(self._sumPath(group), total)
        with open(self._filesPath(group), "w") as fh:
            json.dump(files, fh)
        self.info(f"{tsId}: {len(items)} subtomograms aligned ({interpolation})")

    def createOutputStep(self, groups):
        inputSet = self.inputSubtomograms.get()
        files = {}
        total, count = None, 0
        for group in groups:
            with open(self._filesPath(group)) as fh:
                files.update({objId: path for objId, path in json.load(fh)})
            part = np.load(self._sumPath(group))
            total = part if total is None else total + part
        count = len(files)
        outputSet = SetOfSubTomograms.create(self._getPath(), prefix="outputSubtomograms")
        outputSet.copyInfo(inputSet)
        outputSet.setAlignment(ALIGN_NONE)
        mark_convention(outputSet)
        for subtomo in inputSet.iterItems(orderBy="id"):
            aligned = subtomo.clone()
            aligned.setLocation(files[subtomo.getObjId()])
            set_subtomogram_matrix(aligned, np.eye(4))
            outputSet.append(aligned)
        # append() flags a set with a non-identity first transform as aligned: it has none
        outputSet.setAlignment(ALIGN_NONE)

        average = (total / count).astype(np.float32)
        averagePath = self._getExtraPath("average.mrc")
        samplingRate = inputSet.getSamplingRate()
        write_mrc(averagePath, average, samplingRate)
        averageObj = AverageSubTomogram()
        averageObj.setFileName(averagePath)
        averageObj.setSamplingRate(samplingRate)
        self._defineOutputs(outputSubtomograms=outputSet, outputAverage=averageObj)
        self._defineSourceRelation(self.inputSubtomograms, outputSet)
        self._defineSourceRelation(self.inputSubtomograms, averageObj)

    # --------------------------- UTILS functions -----------------------------
    def _groups(self):
        """Subtomograms grouped by tomogram: tsId -> [(objId, index, path, core matrix)]."""
        if getattr(self, "_groupCache", None) is None:
            self._groupCache = subtomogram_groups(self.inputSubtomograms.get())
        return self._groupCache

    def _sumPath(self, group):
        return self._getExtraPath(f"sum_{group:04d}.npy")

    def _filesPath(self, group):
        return self._getExtraPath(f"aligned_{group:04d}.json")

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        subtomos = self.inputSubtomograms.get()
        if subtomos is None:
            return ["Choose the subtomograms to align."]
        if not subtomos.getSize():
            return [f"The subtomograms {subtomos.getNameId()} are empty."]
        first = subtomos.getFirstItem()
        try:
            subtomogram_array(int(first.getLocation()[0] or 0), first.getFileName())
        except ValueError as err:
            return [f"Cannot read the first subtomogram of {subtomos.getNameId()}: {err}"]
        return []

    def _warnings(self):
        subtomos = self.inputSubtomograms.get()
        if subtomos is not None and not subtomos.hasAlignment():
            return [f"The subtomograms {subtomos.getNameId()} carry no alignment: the "
                    "output will equal the input."]
        return []

    def _summary(self):
        if self.outputAverage is None:
            return ["Output not ready yet."]
        return [f"{self.outputSubtomograms.getSize()} subtomograms aligned "
                f"({INTERPOLATION_CHOICES[self.interpolation.get()]} interpolation) and averaged",
                f"Average: {self.outputAverage.getFileName()} at "
                f"{self.outputAverage.getSamplingRate():.3f} Å/voxel"]

    def _methods(self):
        if self.outputAverage is None:
            return []
        return [f"The alignment of {self.outputSubtomograms.getSize()} subtomograms was "
                f"applied with {INTERPOLATION_CHOICES[self.interpolation.get()]} interpolation and "
                "the aligned subtomograms were averaged."]


class _SubtomogramFiles:
    """The subtomograms of one group, read from their files when sliced (a batch at a time).

    Every one must have the shape of the first: the error names the file.
    """

    def __init__(self, items, read):
        self._items, self._read, self._shape = items, read, None

    def __len__(self):
        return len(self._items)

    def __getitem__(self, rows):
        volumes = []
        for _, index, path, _ in self._items[rows]:
            volume = self._read(index, path)
            if self._shape is None:
                self._shape = volume.shape
            if volume.shape != self._shape:
                raise ValueError(f"{path} has shape (z, y, x) {volume.shape}, the other "
                                 f"subtomograms {self._shape}: they cannot be averaged")
            volumes.append(volume)
        return volumes
