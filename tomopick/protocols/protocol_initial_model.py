"""Subtomogram initial model: a first reference from picked particles, with its resolution."""
import json

import numpy as np
import pyworkflow.protocol.params as params
from pwem.constants import ALIGN_3D
from pwem.protocols import EMProtocol
from tomo.objects import AverageSubTomogram, SetOfSubTomograms

from tomopick.convert import (mark_convention, set_subtomogram_matrix, subtomogram_array,
                              subtomogram_groups, tilt_range)
from tomopick.core.atomic import save_npz
from tomopick.core.averaging import initial_model
from tomopick.core.formats import read_mrc, write_mrc
from tomopick.core.fourier import resample_volume
from tomopick.core.rotations import symmetry_matrices


class ProtTomoPickInitialModel(EMProtocol):
    """Build a first 3D model from subtomograms, without a starting reference.

    In the manner of EMAN2's "tomo initial model" (e2spt_sgd): random batches of
    particles are aligned to the current model (global search over a uniform
    rotation set on shrunk boxes, shifts by FFT, local refinement; a
    cross-correlation restricted to the Fourier voxels that both the particle's
    and the model's missing wedges measure) and averaged in Fourier space with
    their wedges; the model moves towards each batch average (stochastic
    gradient). Beyond EMAN: several random restarts compared for consistency,
    the symmetry axes searched when there is no reference, two independent
    half sets whose FSC gives the resolution (0.143), and the poses of every
    particle in the output. Particles must have density bright (invert the
    contrast at extraction if needed).
    """
    _label = "subtomogram initial model"
    _possibleOutputs = {"average": AverageSubTomogram, "outputSubtomograms": SetOfSubTomograms}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.average = None
        self.outputSubtomograms = None

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputSubtomograms", params.PointerParam,
                      pointerClass="SetOfSubTomograms", important=True,
                      label="Subtomograms",
                      help="About 20-200 extracted particles of one box size and sampling "
                           "rate, density bright (extraction with contrast inverted), "
                           "roughly centred. Their acquisition's tilt range gives the "
                           "missing wedge (none when unknown).")
        form.addParam("particleDiameter", params.FloatParam, default=300.0,
                      label="Particle diameter (Å)",
                      help="The model is masked by a soft sphere of this diameter.")
        form.addParam("symmetry", params.StringParam, default="c1",
                      label="Symmetry",
                      help="Point group: c1, cN, dN (N >= 1), t, o or i. Without a reference "
                           "the axes are searched in the model and then imposed; the output "
                           "has the n-fold axis along z (and a two-fold along x for dN).")
        form.addParam("reference", params.PointerParam, pointerClass="Volume",
                      allowsNull=True, label="Starting reference (optional)",
                      help="Start from this map instead of from scratch (resampled to the "
                           "subtomograms; its phases beyond the low-pass are randomised "
                           "so it cannot imprint its own detail). Symmetric references "
                           "must have their axes as described under Symmetry.")
        form.addSection(label="Search")
        form.addParam("angularSampling", params.FloatParam, default=30.0,
                      label="Angular sampling (deg)",
                      help="Step of the global rotation search; the best poses are then "
                           "refined locally to about a quarter of it.")
        form.addParam("numberOfIterations", params.IntParam, default=5,
                      label="Iterations",
                      help="Passes over all particles (in random batches) of each restart.")
        form.addParam("batchSize", params.IntParam, default=12,
                      label="Batch size",
                      help="Particles per stochastic-gradient update (at most the number of "
                           "particles).")
        form.addParam("lowpass", params.FloatParam, default=40.0,
                      label="Low-pass (Å)",
                      help="Target resolution: the alignments use frequencies up to it and "
                           "the output is filtered to it.")
        form.addParam("shrink", params.FloatParam, default=2.0,
                      label="Shrink",
                      help="Box downsampling (Fourier cropping) for the searches; the final "
                           "poses are refined and the maps built at full size.")
        form.addParam("seed", params.IntParam, default=0, label="Random seed",
                      help="Same seed, same input: same result.")
        form.addParam("restarts", params.IntParam, default=3, expertLevel=params.LEVEL_ADVANCED,
                      label="Random restarts",
                      help="Independent reference-free runs; the most consistent one is "
                           "kept and their agreement is reported.")
        form.addParam("halfIterations", params.IntParam, default=3,
                      expertLevel=params.LEVEL_ADVANCED, label="Half-set iterations",
                      help="Refinement iterations of each independent half set.")
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.convertInputStep)
        self._insertFunctionStep(self.initialModelStep)
        self._insertFunctionStep(self.createOutputStep)

    # --------------------------- STEPS functions -----------------------------
    def convertInputStep(self):
        subtomos = self.inputSubtomograms.get()
        items = [item for group in subtomogram_groups(subtomos).values() for item in group]
        items.sort(key=lambda item: item[0])
        ranges = self._tiltRanges(subtomos)
        boxes = None
        for row, (objId, index, path, _) in enumerate(items):
            box = subtomogram_array(index, path)
            if boxes is None:
                boxes = np.lib.format.open_memmap(self._boxesPath(), mode="w+",
                                                  dtype=np.float32,
                                                  shape=(len(items),) + box.shape)
            if box.shape != boxes.shape[1:]:
                raise ValueError(f"subtomogram {objId} ({path}) has shape (z, y, x) "
                                 f"{box.shape}, the first {boxes.shape[1:]}: one box size only")
            boxes[row] = box
        boxes.flush()
        distinct = sorted(set(ranges.values()), key=str)
        with open(self._inputPath(), "w") as fh:
            json.dump({"objIds": [item[0] for item in items],
                       "tiltRanges": distinct,
                       "wedgeIds": [distinct.index(ranges[item[0]]) for item in items]}, fh)
        described = ", ".join("none (full sampling)" if r is None else f"{r[0]:g}..{r[1]:g} deg"
                              for r in distinct)
        self.info(f"{len(items)} subtomograms of {boxes.shape[1]}^3 voxels read; "
                  f"tilt ranges: {described}")

    def initialModelStep(self):
        with open(self._inputPath()) as fh:
            info = json.load(fh)
        boxes = np.load(self._boxesPath(), mmap_mode="r")
        samplingRate = self.inputSubtomograms.get().getSamplingRate()
        reference = self._referenceArray(boxes.shape[1], samplingRate)
        result = initial_model(
            np.asarray(boxes), samplingRate, self.particleDiameter.get(),
            tilt_ranges=[None if r is None else tuple(r) for r in info["tiltRanges"]],
            wedge_ids=np.array(info["wedgeIds"]), symmetry=self.symmetry.get(),
            reference=reference, angular_step=self.angularSampling.get(),
            iterations=self.numberOfIterations.get(), batch_size=self.batchSize.get(),
            lowpass=self.lowpass.get(), shrink=self.shrink.get(), seed=self.seed.get(),
            restarts=self.restarts.get(), half_iterations=self.halfIterations.get(),
            workers=max(1, self.numberOfThreads.get()), callback=lambda p: self.info(str(p)))
        write_mrc(self._averagePath(), result.average, samplingRate)
        for h in (0, 1):
            write_mrc(self._getExtraPath(f"half_{h + 1}.mrc"), result.half_maps[h], samplingRate)
        write_mrc(self._getExtraPath("unfiltered.mrc"), result.unfiltered, samplingRate)
        save_npz(self._resultPath(), matrices=result.matrices, scores=result.scores,
                 half=result.half, frequency=result.frequency, fsc=result.fsc,
                 resolution=result.resolution, consistency=result.consistency,
                 chosen=result.chosen_restart, frame=result.symmetry_frame)
        self._plotFsc(result.frequency, result.fsc, result.resolution)
        self.info(f"FSC 0.143 resolution {result.resolution:.1f} Å; plot {self._fscPlotPath()}")

    def createOutputStep(self):
        inputSet = self.inputSubtomograms.get()
        with open(self._inputPath()) as fh:
            objIds = json.load(fh)["objIds"]
        found = np.load(self._resultPath())
        rows = {objId: row for row, objId in enumerate(objIds)}
        outputSet = SetOfSubTomograms.create(self._getPath(), prefix="outputSubtomograms")
        outputSet.copyInfo(inputSet)
        mark_convention(outputSet)
        for subtomo in inputSet.iterItems(orderBy="id"):
            aligned = subtomo.clone()
            set_subtomogram_matrix(aligned, found["matrices"][rows[subtomo.getObjId()]])
            outputSet.append(aligned)
        outputSet.setAlignment(ALIGN_3D)

        average = AverageSubTomogram()
        average.setFileName(self._averagePath())
        average.setSamplingRate(inputSet.getSamplingRate())
        self._defineOutputs(average=average, outputSubtomograms=outputSet)
        self._defineSourceRelation(self.inputSubtomograms, average)
        self._defineSourceRelation(self.inputSubtomograms, outputSet)

    # --------------------------- UTILS functions -----------------------------
    def _tiltRanges(self, subtomos):
        """objId -> (min, max) tilt of each subtomogram (its own, else the set's; None)."""
        default = tilt_range(subtomos)
        ranges = {}
        for subtomo in subtomos.iterItems(orderBy="id"):
            own = tilt_range(subtomo)
            ranges[subtomo.getObjId()] = own if own is not None else default
        return ranges

    def _referenceArray(self, size, samplingRate):
        """The starting reference on the subtomograms' grid, or None."""
        volume = self.reference.get()
        if volume is None:
            return None
        data = read_mrc(volume.getFileName())
        if abs(volume.getSamplingRate() - samplingRate) > 1e-3 * samplingRate:
            data, reached = resample_volume(data, volume.getSamplingRate(), samplingRate)
            self.info(f"reference resampled from {volume.getSamplingRate():.3f} to "
                      f"{reached:.3f} Å/voxel")
        return _fit_box(np.asarray(data, np.float32), size)

    def _plotFsc(self, frequency, curve, resolution):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(frequency[1:], curve[1:], label="half-set FSC")
        ax.axhline(0.143, color="grey", linestyle="--", label="0.143")
        if np.isfinite(resolution) and resolution > 0:
            ax.axvline(1 / resolution, color="red", linestyle=":",
                       label=f"{resolution:.1f} Å")
        ax.set_xlabel("spatial frequency (1/Å)")
        ax.set_ylabel("FSC")
        ax.set_ylim(-0.1, 1.05)
        ax.legend()
        ax.set_title("Initial model: half-set Fourier shell correlation")
        fig.tight_layout()
        fig.savefig(self._fscPlotPath(), dpi=100)
        plt.close(fig)

    def _boxesPath(self):
        return self._getExtraPath("boxes.npy")

    def _inputPath(self):
        return self._getExtraPath("input.json")

    def _resultPath(self):
        return self._getExtraPath("result.npz")

    def _averagePath(self):
        return self._getExtraPath("average.mrc")

    def _fscPlotPath(self):
        return self._getExtraPath("fsc.png")

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        errors = []
        subtomos = self.inputSubtomograms.get()
        if subtomos is None:
            return ["Choose the subtomograms."]
        size = subtomos.getSize()
        if size < 4:
            errors.append(f"The subtomograms {subtomos.getNameId()} are {size}: an initial "
                          "model needs at least 4.")
        if self.batchSize.get() is None or not 1 <= self.batchSize.get() <= max(size, 1):
            errors.append(f"batchSize {self.batchSize.get()} must be between 1 and the number "
                          f"of subtomograms ({size} in {subtomos.getNameId()}).")
        try:
            symmetry_matrices(self.symmetry.get())
        except ValueError as err:
            errors.append(f"symmetry: {err}")
        for name in ("particleDiameter", "angularSampling", "lowpass"):
            if not (getattr(self, name).get() or 0) > 0:
                errors.append(f"{name} must be positive, got {getattr(self, name).get()}.")
        if not (self.shrink.get() or 0) >= 1:
            errors.append(f"shrink must be >= 1, got {self.shrink.get()}.")
        for name in ("numberOfIterations", "restarts", "halfIterations"):
            if not (getattr(self, name).get() or 0) >= 1:
                errors.append(f"{name} must be at least 1, got {getattr(self, name).get()}.")
        errors += self._mixedInput(subtomos)
        return errors

    def _mixedInput(self, subtomos):
        """Errors naming the first subtomogram whose box size or sampling rate differs."""
        rate = subtomos.getSamplingRate()
        shape = None
        for subtomo in subtomos.iterItems(orderBy="id"):
            own = subtomo.getSamplingRate()
            if own and rate and abs(own - rate) > 1e-3 * rate:
                return [f"Subtomogram {subtomo.getObjId()} ({subtomo.getFileName()}) has "
                        f"{own:g} Å/voxel, the set {rate:g}: mixed sampling rates cannot be "
                        "averaged (rescale them first)."]
            dims = subtomo.getDimensions()
            if shape is None:
                shape = dims
            elif dims != shape:
                return [f"Subtomogram {subtomo.getObjId()} ({subtomo.getFileName()}) is "
                        f"{dims} voxels, the first {shape}: mixed box sizes cannot be "
                        "averaged."]
        if shape is not None and len(set(shape)) != 1:
            return [f"The subtomograms of {subtomos.getNameId()} are {shape} voxels: cubic "
                    "boxes only."]
        return []

    def _summary(self):
        if self.average is None:
            return ["Output not ready yet."]
        found = np.load(self._resultPath())
        consistency = found["consistency"]
        lines = [f"{self.outputSubtomograms.getSize()} subtomograms aligned; model "
                 f"{self.average.getFileName()} at {self.average.getSamplingRate():.3f} "
                 "Å/voxel",
                 f"Resolution (half-set FSC 0.143): {float(found['resolution']):.1f} Å "
                 f"(plot: {self._fscPlotPath()})",
                 f"Mean alignment score: {float(found['scores'].mean()):.3f}"]
        if np.isfinite(consistency).any():
            lines.append(f"Restart consistency: "
                         f"{', '.join(f'{c:.3f}' for c in consistency)} "
                         f"(kept restart {int(found['chosen']) + 1}; 1 = identical models)")
        if self.symmetry.get().strip().lower() != "c1":
            lines.append(f"Symmetry {self.symmetry.get()} imposed (n-fold axis along z)")
        return lines

    def _methods(self):
        if self.average is None:
            return []
        found = np.load(self._resultPath())
        return [f"An initial model was computed from {self.outputSubtomograms.getSize()} "
                f"subtomograms by stochastic-gradient averaging with wedge-constrained "
                f"alignment (angular step {self.angularSampling.get():g} deg, "
                f"{self.restarts.get()} restarts, symmetry {self.symmetry.get()}); two "
                f"independent half sets gave a resolution of "
                f"{float(found['resolution']):.1f} Å at FSC 0.143."]


def _fit_box(volume, size):
    """Centre-crop or zero-pad a cubic volume to ``size`` voxels per axis."""
    out = np.zeros((size,) * 3, np.float32)
    src, dst = [], []
    for n in volume.shape:
        if n >= size:
            start = n // 2 - size // 2
            src.append(slice(start, start + size))
            dst.append(slice(0, size))
        else:
            start = size // 2 - n // 2
            src.append(slice(0, n))
            dst.append(slice(start, start + n))
    out[tuple(dst)] = volume[tuple(src)]
    return out
