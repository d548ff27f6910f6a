"""Import tomograms: MRC files into a SetOfTomograms, with optional Fourier binning."""
import os

from pwem.objects import Transform
import pyworkflow.protocol.params as params
from pyworkflow.protocol.constants import STEPS_PARALLEL
from pyworkflow.utils.path import createAbsLink
from tomo.objects import SetOfTomograms, Tomogram
from tomo.protocols.protocol_base import ProtTomoImportAcquisition, ProtTomoImportFiles

from tomopick.convert import tsid_of_file
from tomopick.core.formats import MrcError, mrc_header_info, read_mrc
from tomopick.core.formats.mrc import write_mrc_slabs
from tomopick.core.resample import fourier_bin

OUTPUT_NAME = "Tomograms"


class ProtTomoPickImportTomograms(ProtTomoImportFiles, ProtTomoImportAcquisition):
    """Import tomograms (MRC) into the project.

    The sampling rate is read from the MRC header when left at 0. With a
    binning factor above 1 each tomogram is Fourier-cropped on import (no
    aliasing) and written into the project; otherwise the files are linked.
    """
    _label = "import tomograms"
    _outputClassName = "SetOfTomograms"
    _possibleOutputs = {OUTPUT_NAME: SetOfTomograms}
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.Tomograms = None

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        ProtTomoImportFiles._defineImportParams(self, form)
        ProtTomoImportFiles.addExclusionWordsParam(form)
        form.addParam("samplingRate", params.FloatParam, default=0,
                      label="Sampling rate (Å/voxel)",
                      help="Voxel size of the tomograms as they are on disk. 0 reads it "
                           "from the MRC header of each file (they must agree).")
        form.addParam("binning", params.IntParam, default=1,
                      validators=[params.GE(1)],
                      label="Binning factor",
                      help="Fourier binning applied on import: 2 halves every dimension "
                           "and doubles the sampling rate (an axis whose size is not a "
                           "multiple of twice the binning is first padded with the mean at "
                           "its far end, so x, y and z keep one sampling rate). 1 keeps the "
                           "files as they are (linked, not copied).")
        ProtTomoImportAcquisition._defineParams(self, form)

        form.addSection("Origin")
        form.addParam("setOrigCoord", params.BooleanParam, default=False,
                      label="Set a custom origin?",
                      help="No: the origin of coordinates is the centre of each tomogram "
                           "(Scipion's default, -dim/2 * sampling rate).\n"
                           "Yes: give the position of the origin (x, y, z, Å) below.")
        for axis in "xyz":
            form.addParam(axis, params.FloatParam, default=0, condition="setOrigCoord",
                          label=f"Origin {axis} (Å)",
                          help=f"Position of the origin of coordinates along {axis}, in Å "
                               "from the first voxel (on the binned tomogram).")
        form.addParallelSection(threads=1, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._files = self._matchedFiles()
        importSteps = [self._insertFunctionStep(self.importTomogramStep, tsId, path,
                                                prerequisites=[])
                       for tsId, path in self._files.items()]
        self._insertFunctionStep(self.createOutputStep, prerequisites=importSteps)

    # --------------------------- STEPS functions -----------------------------
    def importTomogramStep(self, tsId, path):
        binning = self.binning.get()
        if binning > 1:
            # streamed: the input is read slab by slab through its memory map
            volume = fourier_bin(read_mrc(path, mmap=True), binning)
            write_mrc_slabs(self._tomogramPath(tsId), volume, self._outputSamplingRate())
            self.info(f"{tsId}: Fourier-binned by {binning} to {volume.shape[::-1]} (x, y, z)")
        else:
            createAbsLink(os.path.abspath(path), os.path.abspath(self._tomogramPath(tsId)))
            self.info(f"{tsId}: linked {path}")

    def createOutputStep(self):
        samplingRate = self._outputSamplingRate()
        tomoSet = SetOfTomograms.create(self._getPath(), prefix=OUTPUT_NAME)
        tomoSet.setSamplingRate(samplingRate)
        self._parseAcquisitionData()
        for tsId, path in self._matchedFiles().items():
            tomo = Tomogram()
            tomo.setTsId(tsId)
            tomo.setFileName(self._tomogramPath(tsId))
            tomo.setSamplingRate(samplingRate)
            tomo.setAcquisition(self._extractAcquisitionParameters(path))
            tomo.setOrigin(self._origin(self._tomogramPath(tsId), samplingRate))
            tomoSet.append(tomo)
        tomoSet.setAcquisition(tomoSet.getFirstItem().getAcquisition())
        self._defineOutputs(**{OUTPUT_NAME: tomoSet})

    # --------------------------- UTILS functions -----------------------------
    def _matchedFiles(self):
        """tsId -> path of every file the path/pattern matches, in name order."""
        self.initializeParsing()
        if self.regEx:
            files = self.getMatchingFilesFromRegEx()
            return {tsId: files[tsId] for tsId in sorted(files)}
        files = {}
        for path, _ in self.iterFiles():
            files.setdefault(tsid_of_file(path), path)
        return files

    def _tomogramPath(self, tsId):
        return self._getExtraPath(f"{tsId}.mrc")

    def _inputSamplingRate(self):
        if self.samplingRate.get():
            return self.samplingRate.get()
        return mrc_header_info(next(iter(self._matchedFiles().values())))["voxel_size"]

    def _outputSamplingRate(self):
        binning = self.binning.get()
        rate = self._inputSamplingRate()
        # fourier_bin pads every axis to a multiple of the binning: exactly b times larger
        return rate * max(1, binning)

    def _origin(self, path, samplingRate):
        origin = Transform()
        if self.setOrigCoord.get():
            origin.setShifts(-self.x.get(), -self.y.get(), -self.z.get())
        else:
            nz, ny, nx = mrc_header_info(path)["shape"]
            origin.setShifts(-nx / 2 * samplingRate, -ny / 2 * samplingRate, -nz / 2 * samplingRate)
        return origin

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        errors = []
        if not self.filesPath.get("").strip():
            return ["Give the directory (or full path) of the tomograms to import."]
        try:
            files = self._matchedFiles()
        except Exception as err:
            return [f"Cannot match files with {self.getPattern()}: {err}"]
        if not files:
            return [f"No files match the pattern {self.getPattern()}."]
        rates = {}
        for tsId, path in files.items():
            try:
                info = mrc_header_info(path)
            except MrcError as err:
                errors.append(f"{tsId}: {err}")
                continue
            if min(info["shape"]) < 1 or info["shape"][0] < 2:
                errors.append(f"{tsId}: {path} is not a 3D volume (shape {info['shape']})")
            rates[tsId] = info["voxel_size"]
        if not self.samplingRate.get() and rates:
            if min(rates.values()) <= 0:
                bad = [t for t, r in rates.items() if r <= 0]
                errors.append("The sampling rate is 0 (read from the header) but these files "
                              f"have no voxel size in their header: {', '.join(bad)}. "
                              "Give the sampling rate.")
            elif max(rates.values()) - min(rates.values()) > 1e-3:
                listing = ", ".join(f"{t} {r:g} Å" for t, r in rates.items())
                errors.append("The tomograms have different voxel sizes in their headers "
                              f"({listing}); import them separately.")
        return errors

    def _summary(self):
        if self.Tomograms is None:
            return ["Output not ready yet."]
        tomos = self.Tomograms
        first = tomos.getFirstItem()
        x, y, z = first.getShiftsFromOrigin()
        return [f"{tomos.getSize()} tomograms imported from {self.getPattern()}",
                f"Sampling rate: {tomos.getSamplingRate():.3f} Å/voxel"
                + (f" (Fourier-binned by {self.binning.get()})" if self.binning.get() > 1 else ""),
                f"Dimensions (x, y, z): {first.getDim()}",
                f"Origin of the first (Å): {x:.1f}, {y:.1f}, {z:.1f}"]

    def _methods(self):
        if self.Tomograms is None:
            return []
        return [f"{self.Tomograms.getSize()} tomograms were imported with a sampling rate of "
                f"{self.Tomograms.getSamplingRate():.2f} Å/voxel."]
