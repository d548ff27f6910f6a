"""Manual picking: particles picked by hand, positives and negatives, in sets.

Two modes share one path: with a points file the protocol runs headless; with
none it opens the interactive picker in its particle mode
(tomopick.viewers.picker.pick_interactively with model type PARTICLES), which writes the same
CSV (``extra/picks.csv``) after every pick, read afterwards exactly as a
given points file. Positives become ``coordinates``; negatives (things that
must not be picked: gold, ice, membrane, aggregates), when any, become
``negatives``: learned picking trains on both.
"""
import os

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow.utils import Message
from tomo.objects import SetOfCoordinates3D
from tomo.protocols import ProtTomoPicking

from tomopick.convert import (append_picks, outside_tomograms, picks_from_coordinates,
                              tomograms_by_tsid)
from tomopick.core.formats import csv_table
from tomopick.core.picks import Picks

OUTPUT_COORDINATES = "coordinates"
OUTPUT_NEGATIVES = "negatives"


def _labelled(picks, label):
    """A copy of a table with every row labelled ``label``."""
    picks = Picks(picks.tomo_ids, picks.positions, picks.group_ids, voxel_size=picks.voxel_size)
    picks.extra["labels"] = np.full(len(picks), label)
    return picks


def _concatenate(parts):
    """Labelled tables into one (Picks.concatenate does not carry ``extra``)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        picks = Picks(np.zeros(0, str), np.zeros((0, 3)))
        picks.extra["labels"] = np.zeros(0, str)
        return picks
    picks = Picks.concatenate(parts)
    picks.extra["labels"] = np.concatenate([p.extra["labels"] for p in parts])
    return picks


class ProtTomoPickManualPicking(ProtTomoPicking):
    """Pick particles by hand: positives, negatives, several sets.

    Give a points file (CSV ``tomoId,x,y,z[,groupId][,label]``, voxels of the
    input tomograms, bottom-left origin; label 'positive' or 'negative') to
    run headless; leave it empty to pick interactively: click adds a
    positive, Ctrl+click a negative, Shift+click removes; every pick is saved
    as it is made and the outputs are registered when the picker closes.
    """
    _label = "manual picking"
    _devStatus = "NEW"
    _possibleOutputs = {OUTPUT_COORDINATES: SetOfCoordinates3D,
                        OUTPUT_NEGATIVES: SetOfCoordinates3D}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.coordinates = None
        self.negatives = None

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      label="Input tomograms", important=True,
                      help="Tomograms to pick particles in. Positions are in voxels of these "
                           "tomograms.")
        form.addParam("boxSize", params.IntParam, default=32, validators=[params.Positive],
                      label="Box size (voxels)",
                      help="Box size stored with the coordinates; the picker draws a circle "
                           "of this diameter at every pick, on every slice the box spans.")
        form.addParam("inputCoordinates", params.PointerParam,
                      pointerClass="SetOfCoordinates3D", allowsNull=True,
                      label="Coordinates to modify (optional)",
                      help="Previous picks to start from (positives, in their groups), "
                           "rescaled to the tomograms' sampling rate. Picks can be removed "
                           "and added; orientations and scores are not kept.")
        form.addParam("pointsFile", params.FileParam, default="", allowsNull=True,
                      label="Points file (headless)",
                      help="CSV coordinate table with a header line: "
                           "tomoId,x,y,z[,groupId][,label]; positions in voxels of the input "
                           "tomograms, bottom-left origin; groupId the particle set (default "
                           "0); label 'positive' (default) or 'negative' (something that "
                           "must not be picked). When given the protocol runs without a "
                           "display; when empty it opens the interactive picker.")

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        if self._isHeadless():
            self._insertFunctionStep(self.collectPicksStep)
            self._insertFunctionStep(self.createOutputStep)
        else:
            self._insertFunctionStep(self.pickInteractivelyStep, interactive=True)

    # --------------------------- STEPS functions -----------------------------
    def collectPicksStep(self):
        """Write extra/picks.csv: the input coordinates, then the points file's picks."""
        parts = [self._previousPicks()]
        if self._isHeadless():
            parts.append(self._filePicks(self.pointsFile.get().strip()))
        picks = _concatenate(parts)
        csv_table.write_csv(self._picksPath(), picks)
        self.info(f"{len(picks)} picks collected in {self._picksPath()}")

    def pickInteractivelyStep(self):
        if not os.path.exists(self._picksPath()):
            self.collectPicksStep()
        from tomopick.viewers.picker import PARTICLES, pick_interactively
        tomograms = [(tsId, os.path.abspath(tomo.getFileName()), tomo.getSamplingRate())
                     for tsId, tomo in tomograms_by_tsid(self.inputTomograms.get()).items()]
        pick_interactively(tomograms, self._picksPath(), PARTICLES, self.boxSize.get())
        self.createOutputStep()

    def createOutputStep(self):
        tomoSet = self.inputTomograms.get()
        tomograms = tomograms_by_tsid(tomoSet)
        picks = self._filePicks(self._picksPath())
        errors = self._pickErrors(picks, tomograms, self._picksPath())
        if errors:
            raise ValueError("\n".join(errors))
        negative = picks.extra["labels"] == csv_table.NEGATIVE
        if not np.any(~negative):
            raise ValueError(f"no positive picks were made (file {self._picksPath()})")
        outputs = {OUTPUT_COORDINATES: picks.subset(~negative)}
        if np.any(negative):
            outputs[OUTPUT_NEGATIVES] = picks.subset(negative)
        for name, part in outputs.items():
            # one file per set (pyworkflow's create names it from the prefix)
            coords = SetOfCoordinates3D.create(self._getPath(), prefix=name)
            coords.setSamplingRate(tomoSet.getSamplingRate())
            coords.setBoxSize(self.boxSize.get())
            coords.setPrecedents(self.inputTomograms)
            append_picks(coords, part, tomograms)
            outputs[name] = coords
        for tsId in tomograms:
            rows = picks.tomo_ids == tsId
            self.info(f"{tsId}: {int(np.sum(rows & ~negative))} positives, "
                      f"{int(np.sum(rows & negative))} negatives in "
                      f"{len(np.unique(picks.group_ids[rows]))} sets")
        self._defineOutputs(**outputs)
        for coords in outputs.values():
            self._defineSourceRelation(self.inputTomograms, coords)

    # --------------------------- UTILS functions -----------------------------
    def _isHeadless(self):
        return bool((self.pointsFile.get() or "").strip())

    def _picksPath(self):
        return self._getExtraPath("picks.csv")

    def _filePicks(self, path):
        """The labelled picks of a CSV, in voxels of the input tomograms."""
        picks = csv_table.read_csv(path, voxel_size=self.inputTomograms.get().getSamplingRate())
        if "labels" not in picks.extra:
            picks.extra["labels"] = np.full(len(picks), csv_table.POSITIVE)
        return picks

    def _previousPicks(self):
        coordinates = self.inputCoordinates.get()
        if coordinates is None:
            return _labelled(Picks(np.zeros(0, str), np.zeros((0, 3))), csv_table.POSITIVE)
        picks = picks_from_coordinates(coordinates)
        rate = self.inputTomograms.get().getSamplingRate()
        if picks.voxel_size and not np.isclose(picks.voxel_size, rate):
            picks = picks.rescaled(rate)
        return _labelled(picks, csv_table.POSITIVE)

    @staticmethod
    def _pickErrors(picks, tomograms, source):
        """Messages naming unknown tsIds and picks outside their tomogram."""
        errors = []
        unknown = sorted(set(picks.tomo_ids) - set(tomograms))
        if unknown:
            errors.append(f"{source}: tsIds with no tomogram in the input: {', '.join(unknown)} "
                          f"(known: {', '.join(tomograms)})")
        known = np.isin(picks.tomo_ids, list(tomograms))
        outside = np.zeros(len(picks), bool)
        if np.any(known):
            outside[known] = outside_tomograms(picks.subset(known), tomograms)
        if np.any(outside):
            shown = "; ".join(f"{picks.tomo_ids[i]} {picks.extra['labels'][i]} "
                              f"({', '.join(f'{v:g}' for v in picks.positions[i])})"
                              for i in np.nonzero(outside)[0][:10])
            errors.append(f"{source}: {int(outside.sum())} picks lie outside their tomogram: "
                          f"{shown}")
        return errors

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        errors = []
        tomos = self.inputTomograms.get()
        if tomos is None:
            return ["Give the input tomograms."]
        try:
            tomograms = tomograms_by_tsid(tomos)
        except ValueError as err:
            return [str(err)]
        if self.inputCoordinates.get() is not None:
            try:
                errors += self._pickErrors(
                    self._previousPicks(), tomograms,
                    f"input coordinates {self.inputCoordinates.get().getNameId()}")
            except (ValueError, KeyError, AttributeError) as err:
                errors.append(f"Cannot read the input coordinates: {err}")
        if self._isHeadless():
            path = self.pointsFile.get().strip()
            if not os.path.isfile(path):
                return errors + [f"The points file {path} does not exist."]
            try:
                picks = self._filePicks(path)
            except (ValueError, OSError) as err:
                return errors + [str(err)]
            if not len(picks) and self.inputCoordinates.get() is None:
                errors.append(f"The points file {path} has no picks.")
            errors += self._pickErrors(picks, tomograms, path)
        return errors

    def _summary(self):
        if self.coordinates is None:
            return ["Output not ready yet."]
        lines = [f"{self.coordinates.getSize()} positives (box {self.coordinates.getBoxSize()} "
                 "voxels)"]
        if self.negatives is not None:
            lines.append(f"{self.negatives.getSize()} negatives")
        lines.append("Source: " + (self.pointsFile.get() if self._isHeadless()
                                   else "interactive picking"))
        return lines
