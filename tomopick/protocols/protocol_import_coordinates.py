"""Import coordinates: coordinate files of any supported format onto a set of tomograms."""
import os

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow.protocol.constants import STEPS_PARALLEL
from tomo.objects import SetOfCoordinates3D, SetOfMeshes
from tomo.protocols.protocol_base import ProtTomoImportFiles

from tomopick.convert import append_picks, tomogram_shape_xyz, tomograms_by_tsid, tsid_of_file
from tomopick.core.formats import read_coordinates
from tomopick.core.formats.coordinates import PER_TOMOGRAM_FORMATS, detect_format
from tomopick.core.formats.dynamo import table_map_path
from tomopick.core.picks import Picks

IMPORT_CHOICES = ["auto", "csv", "star", "tbl", "mod", "ndjson", "yaml"]
OUTPUT_TYPES = ["coordinates", "meshes"]
GROUP_BY = ["object", "contour"]


class ProtTomoPickImportCoordinates(ProtTomoImportFiles):
    """Import 3D coordinates from files onto a set of tomograms.

    Formats: tomopick CSV, RELION 5 particle STAR, Dynamo table, IMOD model,
    CryoET Data Portal ndjson and PickET yaml (see tomopick.core.formats for
    each convention). Positions end up in voxels of the tomograms, bottom-left
    origin; orientations, group ids and scores are kept where the format
    carries them. Files holding one tomogram (IMOD, ndjson, PickET) are
    matched to a tomogram by their name (or the {TS} part of the pattern).
    """
    _label = "import coordinates"
    _outputClassName = "SetOfCoordinates3D"
    _possibleOutputs = {"coordinates": SetOfCoordinates3D, "meshes": SetOfMeshes}
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.coordinates = None
        self.meshes = None
        self._shapes = None

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label="Import")
        form.addParam("filesPath", params.PathParam, label="Files directory",
                      help="Directory of the coordinate files (or the full path of one "
                           "file, with an empty pattern).")
        form.addParam("filesPattern", params.StringParam, default="",
                      label="Pattern",
                      help="Pattern of the file names, with wildcards (* ?), e.g. *.star.\n"
                           "{TS} marks the part of the name that is the tsId of the "
                           "tomogram, e.g. {TS}_picks.ndjson; without it, files that hold "
                           "one tomogram (IMOD, ndjson, PickET) are matched by the tsId "
                           "their name contains.")
        ProtTomoImportFiles.addExclusionWordsParam(form)
        form.addParam("importFrom", params.EnumParam, choices=IMPORT_CHOICES, default=0,
                      label="Format",
                      help="auto: from the extension (.csv .star .tbl .mod .ndjson .yaml), "
                           "else from the content.\n"
                           "csv: tomoId,x,y,z[,groupId][,tdrot,tilt,narot][,score], voxels, "
                           "bottom-left origin.\n"
                           "star: RELION 5 particles (centred coordinates in Å).\n"
                           "tbl: Dynamo table (a <name>.doc table map gives the tsIds; "
                           "else the file name, else the tomogram index = position in the "
                           "set).\n"
                           "mod: IMOD model (one tomogram).\n"
                           "ndjson: CryoET Data Portal point annotations (one tomogram).\n"
                           "yaml: PickET predicted centroids (one tomogram).")
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      important=True, label="Tomograms",
                      help="The tomograms the coordinates belong to, matched by tsId.")
        form.addParam("samplingRate", params.FloatParam, default=0,
                      validators=[params.GE(0)],
                      label="Coordinates sampling rate (Å/voxel)",
                      help="Voxel size the coordinates were picked at; they are rescaled "
                           "to the tomograms' sampling rate. 0: the same as the tomograms. "
                           "Not used for RELION STAR files, whose coordinates are in Å.")
        form.addParam("boxSize", params.IntParam, default=32, validators=[params.GT(0)],
                      label="Box size (voxels)",
                      help="Box size of the particles in voxels of the coordinates' "
                           "sampling rate (rescaled with them).")
        form.addParam("outputType", params.EnumParam, choices=OUTPUT_TYPES, default=0,
                      label="Output",
                      help="coordinates: a SetOfCoordinates3D (particles).\n"
                           "meshes: a SetOfMeshes (points of membranes or other models, "
                           "one mesh per group id), e.g. for the model workflow.")
        form.addParam("groupBy", params.EnumParam, choices=GROUP_BY, default=0,
                      expertLevel=params.LEVEL_ADVANCED,
                      condition="importFrom in (0, 4)",
                      label="IMOD group id from",
                      help="object: every IMOD object is one group (model).\n"
                           "contour: every contour is one group, e.g. one membrane "
                           "contoured per object.")
        form.addParallelSection(threads=1, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        tomograms = tomograms_by_tsid(self.inputTomograms.get())
        self._shapes = {tsId: tuple(int(v) for v in tomogram_shape_xyz(tomo))
                        for tsId, tomo in tomograms.items()}
        readSteps = [self._insertFunctionStep(self.readFileStep, index, path, tsId,
                                              prerequisites=[])
                     for index, (path, tsId) in enumerate(self._matchedFiles())]
        self._insertFunctionStep(self.createOutputStep, prerequisites=readSteps)

    # --------------------------- STEPS functions -----------------------------
    def readFileStep(self, index, path, tsId):
        """Read one file, check its tsIds and bounds, keep the picks for the output."""
        fmt = self._formatOf(path)
        picks = self._readPicks(path, fmt, tsId)
        self._checkPicks(path, picks)
        picks.save(self._picksPath(index))
        counts = ", ".join(f"{t}: {int(np.sum(picks.tomo_ids == t))}"
                           for t in np.unique(picks.tomo_ids))
        self.info(f"{os.path.basename(path)} ({fmt}): {len(picks)} coordinates ({counts})")

    def createOutputStep(self):
        tomoSet = self.inputTomograms.get()
        tomograms = tomograms_by_tsid(tomoSet)
        picks = self._mergedPicks(len(self._matchedFiles()), tomoSet.getSamplingRate())
        meshes = self.outputType.get() == 1
        name = OUTPUT_TYPES[self.outputType.get()]
        SetClass = SetOfMeshes if meshes else SetOfCoordinates3D
        output = SetClass.create(self._getPath(), prefix=name)
        output.setPrecedents(self.inputTomograms)
        output.setSamplingRate(tomoSet.getSamplingRate())
        output.setBoxSize(max(1, int(round(self.boxSize.get() * self._scaleFactor()))))
        append_picks(output, picks, tomograms, mesh=meshes)
        if meshes:
            output.setNumberOfMeshes(len({(t, g) for t, g in zip(picks.tomo_ids,
                                                                 picks.group_ids)}))
        self._defineOutputs(**{name: output})
        self._defineSourceRelation(self.inputTomograms, output)

    # --------------------------- UTILS functions -----------------------------
    def _matchedFiles(self):
        """(path, tsId or None) of every file the path/pattern matches, in name order.

        The tsId is the {TS} part of the name when the pattern has one, else
        the tomogram's tsId the name holds (longest match), else None.
        """
        self.initializeParsing()
        if self.regEx:
            files = self.getMatchingFilesFromRegEx()
            return [(files[t], t) for t in sorted(files)]
        tsIds = self._tsIds()
        return [(path, tsid_of_file(path, tsIds)) for path, _ in self.iterFiles()]

    def _tsIds(self):
        if self._shapes is not None:
            return sorted(self._shapes)
        return sorted(t.getTsId() for t in self.inputTomograms.get().iterItems())


    def _formatOf(self, path):
        choice = IMPORT_CHOICES[self.importFrom.get()]
        return detect_format(path) if choice == "auto" else choice

    def _coordinatesRate(self):
        return self.samplingRate.get() or self.inputTomograms.get().getSamplingRate()

    def _scaleFactor(self):
        return self._coordinatesRate() / self.inputTomograms.get().getSamplingRate()

    def _picksPath(self, index):
        return self._getExtraPath(f"picks_{index:04d}.npz")

    def _readPicks(self, path, fmt, tsId):
        """Picks of a file in voxels of the tomograms, tsIds resolved."""
        tomoRate = self.inputTomograms.get().getSamplingRate()
        coordRate = self._coordinatesRate()
        if fmt == "star":
            return read_coordinates(path, fmt, voxel_size=tomoRate, tomo_shapes=self._shapes,
                                    tomo_id=tsId)
        context = {"voxel_size": coordRate, "target_voxel_size": tomoRate}
        if fmt == "mod":
            context["group_by"] = GROUP_BY[self.groupBy.get()]
        if fmt in PER_TOMOGRAM_FORMATS:
            if fmt == "yaml" and tsId is None:  # PickET records its tomogram's path
                picks = read_coordinates(path, fmt, **context)
                tsId = tsid_of_file(picks.tomo_ids[0], self._tsIds()) if len(picks) else None
            if tsId is None:
                raise ValueError(f"{path}: no tomogram's tsId ({', '.join(self._tsIds())}) "
                                 "in the file name; name the file after its tomogram or use "
                                 "{TS} in the pattern")
            return read_coordinates(path, fmt, tomo_id=tsId, **context)
        if fmt == "tbl":
            if tsId is not None and not os.path.isfile(table_map_path(path)):
                return read_coordinates(path, fmt, tomo_id=tsId, **context)
            picks = read_coordinates(path, fmt, **context)
            unknown = set(picks.tomo_ids) - set(self._tsIds())
            if unknown and all(t.lstrip("-").isdigit() for t in unknown):
                # Dynamo's tomogram index: the position of the tomogram in the set
                order = list(self._shapes)
                picks = read_coordinates(path, fmt, tomo_index={t: i + 1 for i, t in
                                                                enumerate(order)}, **context)
            return picks
        return read_coordinates(path, fmt, tomo_id=tsId, **context)

    def _checkPicks(self, path, picks):
        """Fail, naming the tsId, on unknown tomograms or positions outside them."""
        unknown = sorted(set(picks.tomo_ids) - set(self._shapes))
        if unknown:
            count = int(np.isin(picks.tomo_ids, unknown).sum())
            raise ValueError(f"{path}: {count} coordinates refer to tsId "
                             f"{', '.join(map(repr, unknown[:5]))}, not among the input "
                             f"tomograms ({', '.join(sorted(self._shapes))})")
        outside = picks.outside(self._shapes)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            tsId = picks.tomo_ids[first]
            nx, ny, nz = self._shapes[tsId]
            x, y, z = picks.positions[first]
            rows = picks.tomo_ids == tsId
            raise ValueError(
                f"{path}: {int(outside[rows].sum())} of {int(rows.sum())} coordinates lie "
                f"outside tomogram {tsId} ({nx} x {ny} x {nz} voxels), the first at "
                f"({x:.1f}, {y:.1f}, {z:.1f}) voxels; check the coordinates' sampling rate "
                "and format")

    def _mergedPicks(self, nFiles, samplingRate):
        picks = Picks.concatenate(Picks.load(self._picksPath(i)) for i in range(nFiles))
        if len(picks) == 0:
            raise ValueError(f"the files matching {self.getPattern()} hold no coordinates")
        picks.voxel_size = samplingRate
        return picks

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        if not self.filesPath.get("").strip():
            return ["Give the directory (or full path) of the coordinate files."]
        tomoSet = self.inputTomograms.get()
        if tomoSet is None or tomoSet.getSize() == 0:
            return ["Give a set of tomograms that is not empty."]
        try:
            files = self._matchedFiles()
        except Exception as err:
            return [f"Cannot match files with {self.getPattern()}: {err}"]
        if not files:
            return [f"No files match the pattern {self.getPattern()}."]
        errors = []
        for path, tsId in files:
            try:
                fmt = self._formatOf(path)
            except (ValueError, OSError) as err:
                errors.append(str(err))
                continue
            if fmt in ("mod", "ndjson") and tsId is None:
                errors.append(f"{path}: no tomogram's tsId in the file name (tsIds: "
                              f"{', '.join(self._tsIds())}); a {fmt} file holds one "
                              "tomogram, name it after its tsId or use {TS} in the pattern.")
        return errors

    def _summary(self):
        output = self.coordinates or self.meshes
        if output is None:
            return ["Output not ready yet."]
        lines = [f"{output.getSize()} {OUTPUT_TYPES[self.outputType.get()]} imported from "
                 f"{self.getPattern()} ({IMPORT_CHOICES[self.importFrom.get()]})",
                 f"Sampling rate: {output.getSamplingRate():.3f} Å/voxel, box size "
                 f"{output.getBoxSize()} voxels"]
        if self._scaleFactor() != 1:
            lines.append(f"Coordinates rescaled by {self._scaleFactor():.3f} "
                         f"(from {self._coordinatesRate():.3f} Å/voxel)")
        return lines

    def _methods(self):
        output = self.coordinates or self.meshes
        if output is None:
            return []
        return [f"{output.getSize()} 3D coordinates were imported onto "
                f"{self.inputTomograms.get().getSize()} tomograms at "
                f"{output.getSamplingRate():.2f} Å/voxel."]
