"""Learned picking: train a voxel classifier on a few examples and pick every tomogram.

The examples are any SetOfCoordinates3D (manual picks, a curated subset from
the coordinates viewer, another picker's output): ``positives`` and optional
``negatives``, in tomograms of the input set (rescaled when their sampling
rate differs). With ``previousRun`` the earlier run's model is loaded and the
new examples are added to its own before refitting. The algorithms live in
tomopick.core.learned; this module reads the form, trains once, picks per
tomogram and registers the outputs.

Files: ``extra/model.npz`` (the training examples and settings,
`tomopick.core.learned.model`), ``extra/<tsId>_scores.mrc`` (score maps) and
``extra/<tsId>_picks.npz``.
"""
import os
import threading

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow.protocol.constants import STEPS_PARALLEL
from pyworkflow.utils import Message
from pwem.protocols import EMProtocol
from tomo.objects import SetOfCoordinates3D, SetOfTomograms
from tomo.protocols import ProtTomoBase

from tomopick.convert import (append_picks, outside_tomograms, picks_from_coordinates,
                              tomogram_array, tomogram_like, tomograms_by_tsid)
from tomopick.core.formats import create_mrc
from tomopick.core.formats.mrc import update_header_stats_slabs
from tomopick.core.learned import LearnedPicker, ModelFileError, pick
from tomopick.core.picks import Picks

OUTPUT_COORDINATES = "coordinates"
OUTPUT_SCORE_MAPS = "scoreMaps"
MODEL_FILE = "model.npz"


class ProtTomoPickLearnedPicking(EMProtocol, ProtTomoBase):
    """Learn to pick from examples, then pick every tomogram.

    A classifier (a random forest) learns, voxel by voxel, what the
    positives look like against the negatives and the background, from a
    rotation-invariant multi-scale filter stack scaled to the particle
    diameter. Every tomogram gets a dense score map; its peaks, thinned by
    non-maximum suppression and thresholded (automatically unless given),
    are the picks, with sub-voxel positions and the score as particle
    probability. Retrain by giving this run as ``previousRun`` of a new one
    with corrected examples.
    """
    _label = "learned picking"
    _devStatus = "NEW"
    _possibleOutputs = {OUTPUT_COORDINATES: SetOfCoordinates3D,
                        OUTPUT_SCORE_MAPS: SetOfTomograms}
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.coordinates = None
        self.scoreMaps = None
        self._picker = None
        self._pickerLock = threading.Lock()

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      important=True, label="Input tomograms",
                      help="Tomograms to pick. The examples must lie in tomograms of this "
                           "set (same tsIds); coordinates at another sampling rate are "
                           "rescaled.")
        form.addParam("positives", params.PointerParam, pointerClass="SetOfCoordinates3D",
                      important=True, label="Positive examples",
                      help="Particles to learn from (at least 2; 10 or more work well): "
                           "manual picks, a curated subset, another picker's output. Every "
                           "particle of interest near them should be picked: the rest of "
                           "their tomogram is sampled as background.")
        form.addParam("negatives", params.PointerParam, pointerClass="SetOfCoordinates3D",
                      allowsNull=True, label="Negative examples (optional)",
                      help="Things that must not be picked: gold beads, ice, membrane, "
                           "aggregates, other particles (e.g. manual picking's negatives, "
                           "or the false picks of an earlier run).")
        form.addParam("previousRun", params.PointerParam,
                      pointerClass="ProtTomoPickLearnedPicking", allowsNull=True,
                      label="Previous run to retrain (optional)",
                      help="An earlier learned picking: its examples are kept and the new "
                           "positives and negatives are added before training again (its "
                           "particle diameter and seed are used).")
        form.addParam("particleDiameter", params.FloatParam, default=200.0,
                      validators=[params.Positive], label="Particle diameter (Å)",
                      help="Largest extent of the particle. Sets the scales of the filters, "
                           "the size of the labelled regions around examples and the "
                           "non-maximum suppression distance (0.4 diameters).")
        form.addParam("boxSize", params.IntParam, default=32, validators=[params.Positive],
                      label="Box size (voxels)",
                      help="Box size stored with the output coordinates (for extraction).")

        form.addSection(label="Picking")
        form.addParam("threshold", params.FloatParam, default=-1.0,
                      label="Score threshold",
                      help="Particle probability (0..1, smoothed) a peak needs to become a "
                           "pick. -1 = automatic: Otsu's threshold on the scores of the "
                           "tomogram's peaks (at least 0.2); the value chosen is in the log.")
        form.addParam("maxPicks", params.IntParam, default=0, validators=[params.GE(0)],
                      label="Maximum picks per tomogram",
                      help="Keep at most this many picks per tomogram, best first; 0 = no "
                           "limit.")
        form.addParam("seed", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED,
                      label="Random seed",
                      help="Seed of the background sampling and the classifier: equal seeds "
                           "give equal picks.")
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        train = self._insertFunctionStep(self.trainStep, prerequisites=[])
        steps = [self._insertFunctionStep(self.pickStep, tsId, prerequisites=[train])
                 for tsId in tomograms_by_tsid(self.inputTomograms.get())]
        self._insertFunctionStep(self.createOutputStep, prerequisites=steps)

    # --------------------------- STEPS functions -----------------------------
    def trainStep(self):
        tomoSet = self.inputTomograms.get()
        tomograms = tomograms_by_tsid(tomoSet)
        rate = tomoSet.getSamplingRate()
        previous = self.previousRun.get()
        if previous is not None:
            picker = LearnedPicker.load(self._previousModelPath(), fit=False)
            self.info(f"retraining the model of {previous.getRunName()}: "
                      f"{picker.n_examples['positives']} positives and "
                      f"{picker.n_examples['negatives']} negatives so far, particle diameter "
                      f"{picker.diameter:g} Å")
        else:
            picker = LearnedPicker.create(self.particleDiameter.get(), rate,
                                          seed=self.seed.get())
        positives, negatives = self._examples()
        for tsId in tomograms:
            pos = positives.for_tomogram(tsId).positions
            neg = negatives.for_tomogram(tsId).positions
            if not len(pos) and not len(neg):
                continue
            volume = tomogram_array(tomograms[tsId], mmap=True)
            try:
                added = picker.add_examples(volume, rate, pos, neg,
                                            n_threads=self._threads())
            except ValueError as err:
                raise ValueError(f"{tsId}: {err}") from None
            self.info(f"{tsId}: {len(pos)} positives, {len(neg)} negatives -> "
                      f"{len(added)} training voxels")
        picker.fit(self._threads())
        picker.save(self._getExtraPath(MODEL_FILE))
        self.info(f"trained on {len(picker.training)} voxels ({picker.n_examples['positives']} "
                  f"positives, {picker.n_examples['negatives']} negatives) in "
                  f"{picker.fit_seconds:.1f} s; working voxel size "
                  f"{picker.working_voxel_size:.2f} Å, filter scales {picker.scales} voxels")

    def pickStep(self, tsId):
        tomoSet = self.inputTomograms.get()
        tomogram = tomograms_by_tsid(tomoSet)[tsId]
        rate = tomoSet.getSamplingRate()
        picker = self._trainedPicker()
        volume = tomogram_array(tomogram, mmap=True)
        # the map goes straight to a memory-mapped file, published only when complete
        with create_mrc(self._scoreMapPath(tsId), volume.shape, rate) as scoreMrc:
            try:
                detection = pick(picker, volume, rate, threshold=self.threshold.get(),
                                 max_picks=self.maxPicks.get(), n_threads=self._threads(),
                                 score_out=scoreMrc.data)
            except ValueError as err:
                raise ValueError(f"{tsId}: {err}") from None
            update_header_stats_slabs(scoreMrc)
        n = len(detection.positions)
        Picks(np.full(n, tsId), detection.positions, scores=detection.scores,
              voxel_size=rate).save(self._picksPath(tsId))
        how = "automatic (Otsu on peak scores)" if detection.automatic else "given"
        self.info(f"{tsId}: {len(detection.positions)} picks of "
                  f"{len(detection.candidate_scores)} peaks; threshold "
                  f"{detection.threshold:.3f} ({how})")

    def createOutputStep(self):
        tomoSet = self.inputTomograms.get()
        tomograms = tomograms_by_tsid(tomoSet)
        rate = tomoSet.getSamplingRate()
        coords = SetOfCoordinates3D.create(self._getPath(), prefix=OUTPUT_COORDINATES)
        coords.setSamplingRate(rate)
        coords.setBoxSize(self.boxSize.get())
        coords.setPrecedents(self.inputTomograms)
        append_picks(coords, Picks.concatenate(Picks.load(self._picksPath(tsId))
                                          for tsId in tomograms), tomograms)

        maps = SetOfTomograms.create(self._getPath(), prefix=OUTPUT_SCORE_MAPS)
        maps.setSamplingRate(rate)
        for tsId, tomogram in tomograms.items():
            maps.append(tomogram_like(tomogram, self._scoreMapPath(tsId)))
        self._defineOutputs(**{OUTPUT_COORDINATES: coords, OUTPUT_SCORE_MAPS: maps})
        self._defineSourceRelation(self.inputTomograms, coords)
        self._defineSourceRelation(self.positives, coords)
        self._defineSourceRelation(self.inputTomograms, maps)

    # --------------------------- UTILS functions -----------------------------
    def _trainedPicker(self):
        """The model of trainStep, refitted once per process from extra/model.npz.

        Refitting on the stored examples is deterministic and takes seconds; the
        per-tomogram steps (threads of one process) share the result.
        """
        with self._pickerLock:
            if self._picker is None:
                self._picker = LearnedPicker.load(self._getExtraPath(MODEL_FILE),
                                                  n_threads=self._threads())
            return self._picker

    def _scoreMapPath(self, tsId):
        return self._getExtraPath(f"{tsId}_scores.mrc")

    def _picksPath(self, tsId):
        return self._getExtraPath(f"{tsId}_picks.npz")

    def _previousModelPath(self):
        return self.previousRun.get()._getExtraPath(MODEL_FILE)

    def _threads(self):
        return max(1, self.numberOfThreads.get() or 1)

    def _examplePicks(self, pointer):
        """A coordinate set as Picks in voxels of the input tomograms (empty when unset)."""
        coordinates = pointer.get()
        rate = self.inputTomograms.get().getSamplingRate()
        if coordinates is None:
            return Picks(np.zeros(0, str), np.zeros((0, 3)), voxel_size=rate)
        picks = picks_from_coordinates(coordinates)
        if picks.voxel_size and not np.isclose(picks.voxel_size, rate):
            picks = picks.rescaled(rate)
        return picks

    def _examples(self):
        return self._examplePicks(self.positives), self._examplePicks(self.negatives)

    def _exampleErrors(self, tomograms):
        """Messages naming unknown tsIds and examples outside their tomogram."""
        errors = []
        for label, pointer in (("positive", self.positives), ("negative", self.negatives)):
            if pointer.get() is None:
                continue
            name = pointer.get().getNameId()
            try:
                picks = self._examplePicks(pointer)
            except ValueError as err:
                errors.append(f"Cannot read the {label} examples {name}: {err}")
                continue
            unknown = sorted(set(picks.tomo_ids) - set(tomograms))
            if unknown:
                errors.append(f"{label} examples {name}: tsIds with no tomogram in the input "
                              f"tomograms: {', '.join(unknown)}")
                continue
            outside = outside_tomograms(picks, tomograms) if len(picks) else []
            for i in np.nonzero(outside)[0][:5]:
                where = ", ".join(f"{v:.1f}" for v in picks.positions[i])
                errors.append(f"{label} example {picks.extra['ids'][i]} of {name} in "
                              f"{picks.tomo_ids[i]} at ({where}) lies outside its tomogram")
            if label == "positive" and len(picks) < 2 and self.previousRun.get() is None:
                errors.append(f"positive examples {name}: learned picking needs at least 2 "
                              f"positives, got {len(picks)}")
        return errors

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        tomoSet = self.inputTomograms.get()
        if tomoSet is None:
            return ["Give the input tomograms."]
        if self.positives.get() is None:
            return ["Give the positive examples."]
        try:
            tomograms = tomograms_by_tsid(tomoSet)
        except ValueError as err:
            return [str(err)]
        errors = []
        threshold = self.threshold.get()
        if threshold is not None and not (threshold < 0 or threshold <= 1):
            errors.append(f"Score threshold must be -1 (automatic) or in 0..1, got {threshold}.")
        for tsId, tomogram in tomograms.items():
            if not os.path.exists(tomogram.getFileName()):
                errors.append(f"{tsId}: tomogram file {tomogram.getFileName()} does not exist.")
        if errors:
            return errors
        errors += self._exampleErrors(tomograms)
        if self.previousRun.get() is not None:
            try:
                LearnedPicker.load(self._previousModelPath(), fit=False)
            except ModelFileError as err:
                errors.append(f"previous run {self.previousRun.get().getRunName()}: {err}")
        return errors

    def _summary(self):
        if self.coordinates is None:
            return ["Output not ready yet."]
        return [f"{self.coordinates.getSize()} particles picked in "
                f"{self.scoreMaps.getSize()} tomograms",
                "Scores: smoothed particle probability at each peak (0..1)"]

    def _methods(self):
        if self.coordinates is None:
            return []
        return ["Particles were picked by a random-forest voxel classifier trained on "
                "example picks, on a rotation-invariant multi-scale filter stack (Gaussian, "
                "difference of Gaussians, gradient, Laplacian, Hessian and structure-tensor "
                "eigenvalues) scaled to the particle diameter."]
