"""Picking consensus: the particles on which several sets of 3D coordinates agree."""
import json
import os

import numpy as np
import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol
from pyworkflow.protocol.constants import STEPS_SERIAL
from tomo.objects import SetOfCoordinates3D
from tomo.protocols import ProtTomoBase

from tomopick.convert import append_picks, picks_from_coordinates, tomograms_by_tsid
from tomopick.core.consensus import consensus_picks
from tomopick.core.picks import Picks

OUTPUT_NAME = "consensusCoordinates"
# the form's choices, in the order saved workflows store (by index); names are core's
MODE_CHOICES = [">=", "="]
MODE_AT_LEAST, MODE_EXACTLY = 0, 1       # indices of MODE_CHOICES


class ProtTomoPickConsensus(EMProtocol, ProtTomoBase):
    """Consensus of several pickings of the same tomograms.

    Coordinates of different input sets that lie within the radius of each
    other (and of their mean) are one particle; each input votes at most once
    per particle. A particle is kept when enough inputs voted for it: all of
    them (consensus -1, AND), any (1, OR), or at least / exactly k.

    The output coordinate is the members' mean position, its score the number
    of votes, its group id the one the members agree on (0 otherwise), and its
    orientation the mean of the members' rotations (chordal L2 mean) with the
    mean of their shifts. The result does not depend on the order of the
    inputs. Inputs at another sampling rate than the first are rescaled to it.
    """
    _label = "picking consensus"
    _possibleOutputs = {OUTPUT_NAME: SetOfCoordinates3D}
    stepsExecutionMode = STEPS_SERIAL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.consensusCoordinates = None

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputCoordinates", params.MultiPointerParam,
                      pointerClass="SetOfCoordinates3D", important=True,
                      label="Input 3D coordinates",
                      help="Two or more sets of 3D coordinates picked on the same tomograms "
                           "(by different pickers or parameters). Sets at another sampling "
                           "rate than the first are rescaled to it; the output has the first "
                           "set's sampling rate, box size and tomograms.")
        form.addParam("consensusRadius", params.FloatParam, default=10,
                      validators=[params.Positive],
                      label="Radius (voxels)",
                      help="Coordinates of different sets at most this far apart (voxels at "
                           "the sampling rate of the first set) are linked; the coordinates "
                           "of one particle are linked and all lie within this radius of "
                           "their mean. Typically half the particle diameter.")
        form.addParam("consensus", params.IntParam, default=-1,
                      label="Consensus",
                      help="How many input sets must have picked a particle.\n"
                           "*-1*: all of them (AND).\n"
                           "*1*: any of them (OR).\n"
                           "*k* (1..number of sets): k of them, at least or exactly "
                           "(see the mode).\n"
                           "With -1, a tomogram where some set has no coordinates gives no "
                           "consensus coordinates (as in tomoviz); the summary lists it.")
        form.addParam("mode", params.EnumParam, choices=MODE_CHOICES, default=MODE_AT_LEAST,
                      display=params.EnumParam.DISPLAY_HLIST,
                      label="Consensus mode",
                      help="'>=': keep particles picked by at least 'Consensus' sets.\n"
                           "'=': keep particles picked by exactly that many sets (e.g. 1 "
                           "with '=' gives what only one picker found).")

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        steps = [self._insertFunctionStep(self.consensusStep, tsId, prerequisites=[])
                 for tsId in self._tsIds()]
        self._insertFunctionStep(self.createOutputStep, prerequisites=steps)

    # --------------------------- STEPS functions -----------------------------
    def consensusStep(self, tsId):
        inputs = [picks.for_tomogram(tsId) for picks in self._inputPicks()]
        picks, info = consensus_picks(inputs, self.consensusRadius.get(), self.consensus.get(),
                                      MODE_CHOICES[self.mode.get()])
        stats = info.per_tomogram.get(tsId, {"input_counts": np.zeros(len(inputs), int),
                                             "particles": 0, "consensus": 0,
                                             "jaccard": float("nan")})
        picks.extra.setdefault("mean_score", np.full(len(picks), np.nan))
        picks.save(self._resultPath(tsId))
        with open(self._statsPath(tsId), "w") as handle:
            json.dump({"input_counts": [int(c) for c in stats["input_counts"]],
                       "particles": int(stats["particles"]),
                       "jaccard": None if np.isnan(stats["jaccard"]) else
                       float(stats["jaccard"])}, handle)
        counts = ", ".join(str(int(c)) for c in stats["input_counts"])
        self.info(f"{tsId}: inputs {counts} -> {stats['particles']} particles, "
                  f"{len(picks)} in the consensus (Jaccard {stats['jaccard']:.3f})")

    def createOutputStep(self):
        first = self._inputSets()[0]
        tomograms = tomograms_by_tsid(first.getPrecedents())
        output = SetOfCoordinates3D.create(self._getPath(), prefix=OUTPUT_NAME)
        output.setSamplingRate(first.getSamplingRate())
        output.setBoxSize(first.getBoxSize())
        output.setPrecedents(first.getPrecedents())
        summary = {"inputs": [s.getSize() for s in self._inputSets()], "tomograms": {}}
        for tsId in self._tsIds():
            picks = Picks.load(self._resultPath(tsId))
            self._appendConsensus(output, tomograms[tsId], picks)
            with open(self._statsPath(tsId)) as handle:
                summary["tomograms"][tsId] = dict(json.load(handle), consensus=len(picks))
        with open(self._summaryPath(), "w") as handle:
            json.dump(summary, handle, indent=1)
        self._defineOutputs(**{OUTPUT_NAME: output})
        for pointer in self.inputCoordinates:
            self._defineSourceRelation(pointer, output)

    # --------------------------- UTILS functions -----------------------------
    def _inputSets(self):
        return [pointer.get() for pointer in self.inputCoordinates]

    def _tsIds(self):
        """The tomograms of the first input, which the output refers to."""
        return list(tomograms_by_tsid(self._inputSets()[0].getPrecedents()))

    def _inputPicks(self):
        """Every input set as `Picks` (read once per run)."""
        if getattr(self, "_picksCache", None) is None:
            self._picksCache = [picks_from_coordinates(s) for s in self._inputSets()]
            known = set(self._tsIds())
            for i, picks in enumerate(self._picksCache, start=1):
                other = sorted(set(picks.tomo_ids) - known)
                if other:
                    n = int(np.isin(picks.tomo_ids, other).sum())
                    self.info(f"input #{i}: {n} coordinates in tomograms that the first "
                              f"input does not have ({', '.join(other[:5])}) are ignored")
        return self._picksCache

    def _resultPath(self, tsId):
        return self._getExtraPath(f"consensus_{tsId}.npz")

    def _statsPath(self, tsId):
        return self._getExtraPath(f"consensus_{tsId}.json")

    def _summaryPath(self):
        return self._getExtraPath("consensus_summary.json")

    @staticmethod
    def _appendConsensus(output, tomogram, picks):
        """Coordinates of one tomogram, with votes (score) and the mean input score
        (``_consensusVotes``, ``_meanInputScore``: NaN where no input had scores)."""
        append_picks(output, picks, {tomogram.getTsId(): tomogram},
                     attributes={"_consensusVotes": picks.extra["votes"].astype(int),
                                 "_meanInputScore": picks.extra["mean_score"].astype(float)})

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        errors = []
        sets = []
        for i, pointer in enumerate(self.inputCoordinates, start=1):
            obj = pointer.get()
            if obj is None:
                errors.append(f"Input coordinates #{i} is empty (the pointer leads nowhere).")
            else:
                sets.append(obj)
        if len(self.inputCoordinates) < 2:
            errors.append("Give at least two sets of coordinates (inputCoordinates): a "
                          "consensus compares pickings.")
        n = len(self.inputCoordinates)
        k = self.consensus.get()
        if k is None or not (k == -1 or 1 <= k <= max(n, 1)):
            errors.append(f"Consensus must be -1 (all inputs) or between 1 and the number of "
                          f"input sets ({n}); it is {k}.")
        radius = self.consensusRadius.get()
        if radius is None or radius <= 0:
            errors.append(f"The radius (consensusRadius) must be positive; it is {radius}.")
        if errors or not sets:
            return errors
        for i, coords in enumerate(sets, start=1):
            if not coords.getSamplingRate():
                errors.append(f"Input coordinates #{i} ({coords.getNameId()}) have no sampling "
                              "rate, so they cannot be rescaled to the first set.")
            if coords.getPrecedents() is None:
                errors.append(f"Input coordinates #{i} ({coords.getNameId()}) are not linked "
                              "to any tomograms.")
        if errors:
            return errors
        reference = {t.getTsId() for t in sets[0].getPrecedents()}
        for i, coords in enumerate(sets[1:], start=2):
            tsIds = {t.getTsId() for t in coords.getPrecedents()}
            if not tsIds & reference:
                errors.append(f"Input coordinates #{i} ({coords.getNameId()}) were picked on "
                              f"other tomograms ({', '.join(sorted(tsIds)[:5])}) than the "
                              f"first set ({', '.join(sorted(reference)[:5])}).")
        return errors

    def _summary(self):
        lines = []
        for i, pointer in enumerate(self.inputCoordinates, start=1):
            obj = pointer.get()
            if obj is not None:
                lines.append(f"Input #{i}: {obj.getSize()} coordinates at "
                             f"{obj.getSamplingRate():.2f} Å/voxel")
        k = self.consensus.get()
        rule = "all inputs (AND)" if k == -1 else f"{MODE_CHOICES[self.mode.get()]} {k}"
        lines.append(f"Radius {self.consensusRadius.get():g} voxels, consensus: {rule}")
        if self.consensusCoordinates is None or not os.path.exists(self._summaryPath()):
            lines.append("Output not ready yet.")
            return lines
        with open(self._summaryPath()) as handle:
            summary = json.load(handle)
        total = 0
        for tsId, row in summary["tomograms"].items():
            jaccard = "n/a" if row["jaccard"] is None else f"{row['jaccard']:.3f}"
            counts = " / ".join(str(c) for c in row["input_counts"])
            note = ""
            if k == -1 and 0 in row["input_counts"]:
                note = " (an input has no coordinates here: nothing passes AND)"
            lines.append(f"{tsId}: inputs {counts}; consensus {row['consensus']} of "
                         f"{row['particles']} particles; Jaccard {jaccard}{note}")
            total += row["consensus"]
        lines.append(f"{total} consensus coordinates in {self.consensusCoordinates.getNameId()}")
        return lines

    def _methods(self):
        if self.consensusCoordinates is None:
            return []
        k = self.consensus.get()
        rule = "all" if k == -1 else f"{MODE_CHOICES[self.mode.get()]} {k}"
        return [f"A consensus of {len(self.inputCoordinates)} sets of coordinates (radius "
                f"{self.consensusRadius.get():g} voxels, {rule} of the inputs) kept "
                f"{self.consensusCoordinates.getSize()} particles."]
