"""Subtomogram extraction: boxes around 3D coordinates, one MRC file per particle."""
import json
import threading

import numpy as np
import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol
from pyworkflow.object import Integer, Pointer
from pyworkflow.protocol.constants import STEPS_PARALLEL
from pyworkflow.wizard import Wizard
from tomo.objects import SetOfSubTomograms

from tomopick.convert import append_subtomograms, picks_from_coordinates, tomograms_by_tsid
from tomopick.core.extraction import extract_in_chunks, output_box_size
from tomopick.core.formats import read_mrc, write_mrc

TOMO_SOURCES = ["same as picking", "other"]
# the form's choices, in the order saved workflows store (by index); names are core's
NORMALIZATION_CHOICES = ["normalize", "edge mean"]
OUT_OF_BOUNDS_CHOICES = ["skip", "pad"]
SOURCE_SAME, SOURCE_OTHER = 0, 1
OUTPUT_NAME = "subtomograms"


class ProtTomoPickExtraction(EMProtocol):
    """Extract subtomograms (cubic boxes) around 3D coordinates.

    The coordinates may come from any plugin. Boxes are cut out of the
    tomograms the coordinates were picked on, or out of another set of
    tomograms matched by tsId (e.g. unbinned or denoised ones): positions and
    box size are rescaled to that set's sampling rate. Each subtomogram keeps
    its coordinate (tsId, group id, score) and gets the coordinate's
    orientation as its transform; the sub-voxel part of the position goes into
    the transform's shift, so "apply alignment" centres every particle exactly.
    One MRC file is written per particle.
    """
    _label = "subtomogram extraction"
    _possibleOutputs = {OUTPUT_NAME: SetOfSubTomograms}
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.subtomograms = None
        self.nExtracted = Integer(0)
        self.nSkipped = Integer(0)
        self.nPadded = Integer(0)
        self._picksLock = threading.Lock()
        self._picksCache = None

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputCoordinates", params.PointerParam,
                      pointerClass="SetOfCoordinates3D", important=True,
                      label="Coordinates",
                      help="3D coordinates (from any picking protocol) whose particles are "
                           "extracted. Their orientations become the subtomograms' "
                           "transforms.")
        form.addParam("tomoSource", params.EnumParam, choices=TOMO_SOURCES,
                      default=SOURCE_SAME, display=params.EnumParam.DISPLAY_HLIST,
                      label="Extract from",
                      help="same as picking: the tomograms the coordinates were picked "
                           "on.\nother: another set of tomograms with the same tsIds, "
                           "e.g. at a finer sampling rate; coordinates and box size are "
                           "rescaled to it.")
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      condition=f"tomoSource == {SOURCE_OTHER}", allowsNull=True,
                      label="Tomograms",
                      help="Tomograms to extract from, matched to the coordinates by tsId. "
                           "Every tsId of the coordinates needs one.")
        form.addParam("boxSize", params.IntParam, default=0, validators=[params.GE(0)],
                      label="Box size (voxels)",
                      help="Edge of the cubic box in voxels of the tomograms extracted "
                           "from (before downsampling). 0 takes the coordinates' box size "
                           "rescaled to those tomograms (the wizard shows the number).")
        form.addParam("downFactor", params.FloatParam, default=1.0,
                      validators=[params.GE(1.0)],
                      label="Downsampling factor",
                      help="> 1: each box is Fourier-cropped to round(box / factor) voxels "
                           "and the sampling rate grows by box / that size.")
        form.addSection(label="Preprocess")
        form.addParam("doInvert", params.BooleanParam, default=False,
                      label="Invert contrast?",
                      help="Multiply by -1: dark particles (cryo-ET) become bright, as "
                           "most averaging programs expect.")
        form.addParam("doNormalize", params.BooleanParam, default=False,
                      label="Normalize?",
                      help="Give every subtomogram zero mean and unit standard deviation "
                           "(see the method below).")
        form.addParam("normproc", params.EnumParam, choices=NORMALIZATION_CHOICES, default=0,
                      condition="doNormalize", label="Normalization",
                      help="normalize: mean and standard deviation of the whole box.\n"
                           "edge mean: of the voxels on the box faces, so the background "
                           "and not the particle sets the scale.")
        form.addParam("outOfBounds", params.EnumParam, choices=OUT_OF_BOUNDS_CHOICES, default=0,
                      label="Particles near the edge",
                      help="What to do with a particle whose box reaches outside its "
                           "tomogram.\nskip: leave it out (the summary counts them).\n"
                           "pad: keep it, filling the outside with the tomogram mean.")
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        # everything the parallel steps need is read here, in the main thread:
        # the steps themselves never touch the project database
        picks = self._picks()
        tomograms = self._sourceTomograms()
        boxSize = self._boxSize()
        extractSteps = []
        for tsId in sorted(set(picks.tomo_ids)):
            tomogram = tomograms.get(tsId)
            path = tomogram.getFileName() if tomogram is not None else ""
            rate = tomogram.getSamplingRate() if tomogram is not None else 0.0
            extractSteps.append(self._insertFunctionStep(self.extractStep, tsId, path, rate,
                                                         boxSize, prerequisites=[]))
        self._insertFunctionStep(self.createOutputStep, prerequisites=extractSteps)

    # --------------------------- STEPS functions -----------------------------
    def extractStep(self, tsId, tomoFile, samplingRate, boxSize):
        if not tomoFile:
            raise ValueError(f"no tomogram with tsId {tsId!r} in the source tomograms")
        picks = self._picks().for_tomogram(tsId).rescaled(samplingRate)
        volume = read_mrc(tomoFile, mmap=True)
        normalize = NORMALIZATION_CHOICES[self.normproc.get()] if self.doNormalize.get() else None
        outOfBounds = OUT_OF_BOUNDS_CHOICES[self.outOfBounds.get()]
        outputRate, boxOut = None, None
        ids, files, matrices, padded, skipped = [], [], [], [], 0
        # z-ordered chunks: bounded memory, and each chunk reads one z-range of the tomogram
        for chunk, result in extract_in_chunks(volume, picks.positions, boxSize,
                                               matrices=picks.matrices,
                                               down_factor=self.downFactor.get(),
                                               invert=self.doInvert.get(), normalize=normalize,
                                               out_of_bounds=outOfBounds,
                                               workers=self.numberOfThreads.get()):
            outputRate = samplingRate * result.scale
            boxOut = result.boxes.shape[-1]
            chunkIds = picks.extra["ids"][chunk][result.index]
            for box, coordId in zip(result.boxes, chunkIds):
                path = self._subtomogramPath(tsId, coordId)
                write_mrc(path, box, outputRate)
                files.append(path)
            ids.extend(int(i) for i in chunkIds)
            matrices.extend(result.matrices.tolist())
            padded.extend(bool(p) for p in result.padded)
            skipped += int(result.n_skipped)
        record = {"tsId": tsId, "coordIds": ids, "files": files, "matrices": matrices,
                  "padded": padded, "skipped": skipped, "samplingRate": outputRate}
        with open(self._recordPath(tsId), "w") as fh:
            json.dump(record, fh)
        self.info(f"{tsId}: {len(ids)} subtomograms of {boxOut}^3 voxels "
                  f"({outputRate:.3f} Å/voxel); {skipped} skipped and "
                  f"{sum(padded)} padded at the tomogram edge")

    def createOutputStep(self):
        coordinates = self.inputCoordinates.get()
        tomograms = self._sourceTomograms()
        records = [self._readRecord(tsId) for tsId in sorted(set(self._picks().tomo_ids))]
        wanted = {coordId: (record["tsId"], record["files"][i], record["samplingRate"],
                            np.array(record["matrices"][i]))
                  for record in records for i, coordId in enumerate(record["coordIds"])}
        subtomos = SetOfSubTomograms.create(self._getPath(), prefix=OUTPUT_NAME)
        samplingRate = records[0]["samplingRate"] if records else self._outputSamplingRate()
        subtomos.setSamplingRate(samplingRate)
        firstTomo = next(iter(tomograms.values()))
        if firstTomo.hasAcquisition():
            subtomos.setAcquisition(firstTomo.getAcquisition())
        subtomos.setCoordinates3D(Pointer(self.inputCoordinates.getObjValue(),
                                          extended=self.inputCoordinates.getExtended()))
        append_subtomograms(subtomos, coordinates, wanted, tomograms)
        self.nExtracted.set(sum(len(r["coordIds"]) for r in records))
        self.nSkipped.set(sum(r["skipped"] for r in records))
        self.nPadded.set(sum(sum(r["padded"]) for r in records))
        self._store(self.nExtracted, self.nSkipped, self.nPadded)
        if not len(subtomos):
            raise ValueError("no subtomogram could be extracted: every box reaches outside "
                             "its tomogram (use a smaller box or 'pad')")
        self._defineOutputs(**{OUTPUT_NAME: subtomos})
        self._defineSourceRelation(self.inputCoordinates, subtomos)
        if self.tomoSource.get() == SOURCE_OTHER:
            self._defineSourceRelation(self.inputTomograms, subtomos)

    # --------------------------- UTILS functions -----------------------------
    def _picks(self):
        """All input coordinates as a Picks table (read once per process)."""
        with self._picksLock:
            if self._picksCache is None:
                self._picksCache = picks_from_coordinates(self.inputCoordinates.get())
            return self._picksCache

    def _sourceSet(self):
        if self.tomoSource.get() == SOURCE_OTHER:
            return self.inputTomograms.get()
        return self.inputCoordinates.get().getPrecedents()

    def _sourceTomograms(self):
        return tomograms_by_tsid(self._sourceSet())

    def _sourceSamplingRate(self):
        return self._sourceSet().getSamplingRate()

    def _boxSize(self):
        """Box edge in voxels of the source tomograms."""
        if self.boxSize.get():
            return self.boxSize.get()
        return defaultBoxSize(self.inputCoordinates.get(), self._sourceSet())

    def _outputSamplingRate(self):
        box = self._boxSize()
        return self._sourceSamplingRate() * box / output_box_size(box, self.downFactor.get())

    def _subtomogramPath(self, tsId, coordId):
        return self._getExtraPath(f"{tsId}_{int(coordId):06d}.mrc")

    def _recordPath(self, tsId):
        return self._getExtraPath(f"{tsId}_extraction.json")

    def _readRecord(self, tsId):
        with open(self._recordPath(tsId)) as fh:
            return json.load(fh)

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        errors = []
        coordinates = self.inputCoordinates.get()
        if coordinates is None:
            return ["Choose the coordinates to extract."]
        if self.tomoSource.get() == SOURCE_OTHER and self.inputTomograms.get() is None:
            return ["'Extract from' is 'other': choose the tomograms to extract from."]
        source = self._sourceSet()
        if source is None:
            return [f"The coordinates {coordinates.getNameId()} have no tomograms attached; "
                    "choose 'other' and give the tomograms."]
        try:
            tomograms = tomograms_by_tsid(source)
        except ValueError as err:
            return [str(err)]
        coordTsIds = {row["_tomoId"] for row in coordinates.aggregate(["count"], "_tomoId",
                                                                       ["_tomoId"])}
        missing = sorted(coordTsIds - set(tomograms))
        if missing:
            errors.append(f"The tomograms {source.getNameId()} have no tomogram for the "
                          f"tsId(s) {', '.join(missing)} of the coordinates.")
        if not coordTsIds:
            errors.append(f"The coordinates {coordinates.getNameId()} are empty.")
        box = self._boxSize()
        if box < 1:
            errors.append("Box size is 0 and the coordinates carry no box size: give one.")
        elif box / self.downFactor.get() < 1:
            errors.append(f"Downsampling factor {self.downFactor.get()} leaves less than one "
                          f"voxel of the {box}-voxel box.")
        return errors

    def _summary(self):
        if self.subtomograms is None:
            return ["Output not ready yet."]
        lines = [f"{self.nExtracted.get()} subtomograms of "
                 f"{self.subtomograms.getDim()[0]} voxels at "
                 f"{self.subtomograms.getSamplingRate():.3f} Å/voxel "
                 f"(box {self._boxSize()} voxels in the source tomograms"
                 + (f", downsampled by {self.downFactor.get():g}" if self.downFactor.get() > 1
                    else "") + ")"]
        if self.nSkipped.get():
            lines.append(f"{self.nSkipped.get()} particles skipped: their box reached outside "
                         "the tomogram")
        if self.nPadded.get():
            lines.append(f"{self.nPadded.get()} particles padded with the tomogram mean at "
                         "the tomogram edge")
        options = []
        if self.doInvert.get():
            options.append("contrast inverted")
        if self.doNormalize.get():
            options.append(f"normalized ({NORMALIZATION_CHOICES[self.normproc.get()]})")
        if options:
            lines.append("Preprocessing: " + ", ".join(options))
        return lines

    def _methods(self):
        if self.subtomograms is None:
            return []
        return [f"{self.nExtracted.get()} subtomograms were extracted with a box of "
                f"{self._boxSize()} voxels and a final sampling rate of "
                f"{self.subtomograms.getSamplingRate():.2f} Å/voxel."]


def defaultBoxSize(coordinates, tomograms):
    """The coordinates' box size in voxels of ``tomograms`` (0 when they carry none).

    Used by the protocol when boxSize is 0 and by the box-size wizard.
    """
    box = coordinates.getBoxSize() or 0
    if not box:
        return 0
    return max(1, int(round(box * coordinates.getSamplingRate() / tomograms.getSamplingRate())))


class ExtractionBoxSizeWizard(Wizard):
    """Fills boxSize with the coordinates' box size rescaled to the source tomograms.

    pyworkflow finds wizards in the plugin's ``tomopick.wizards`` module, which
    imports this class.
    """
    _targets = [(ProtTomoPickExtraction, ["boxSize"])]

    @classmethod
    def boxSize(cls, protocol):
        coordinates = protocol.inputCoordinates.get()
        if coordinates is None:
            return 0
        source = protocol._sourceSet()
        return defaultBoxSize(coordinates, source) if source is not None else 0

    @classmethod
    def show(cls, form, *params):
        form.setVar("boxSize", cls.boxSize(form.protocol))
