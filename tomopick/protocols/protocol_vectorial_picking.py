"""Vectorial picking: the user's points on vesicles, membranes and filaments.

Each model (a vesicle, a membrane, a filament) is a group of points picked in
one tomogram; it becomes a group (``groupId`` = model id) of MeshPoints in the
output SetOfMeshes. The model workflow (ProtTomoPickModelWorkflow) fits the
geometry and crops oriented particles from it.

Two modes share one path: with a points file the protocol runs headless; with
none it opens the interactive picker (tomopick.viewers.picker), which writes
the same CSV, read afterwards exactly as a given points file.

Stored with every MeshPoint (extended attributes, written and read by
`tomopick.convert.append_mesh_points` / `mesh_models`): the model type name
(see MODEL_TYPES) and the model's interior marker.
"""
import os

import pyworkflow.protocol.params as params
from pyworkflow.utils import Message
from tomo.objects import SetOfMeshes
from tomo.protocols import ProtTomoPicking

from tomopick.convert import (append_mesh_points, mesh_models, tomogram_shape_xyz,
                              tomograms_by_tsid)
from tomopick.core.formats.points import INTERIOR, POINT, read_points_csv, write_points_csv
from tomopick.core.geometry import MODEL_TYPES
from tomopick.core.picks import Picks

OUTPUT_NAME = "meshes"
# the form's modelType choices, in the order saved workflows store (by index); the
# names are those of tomopick.core.geometry.MODEL_TYPES
MODEL_TYPE_CHOICES = ["General", "Vesicle", "Ellipsoidal vesicle", "Surface", "Filament"]


class ProtTomoPickVectorialPicking(ProtTomoPicking):
    """Pick vesicles, membranes and filaments as models (vectorial picking).

    Give a points file (CSV ``tomoId,modelId,x,y,z[,role]``, voxels of the
    input tomograms, bottom-left origin) to run headless; leave it empty to
    pick interactively. Every model becomes one group of the output set of
    meshes, with its model type and interior marker; run the model workflow
    on it to obtain oriented particles.
    """
    _label = "vectorial picking"
    _devStatus = "NEW"
    _possibleOutputs = {OUTPUT_NAME: SetOfMeshes}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.meshes = None

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      label="Input tomograms", important=True,
                      help="Tomograms to pick models in. Positions are in voxels of these "
                           "tomograms.")
        form.addParam("boxSize", params.IntParam, default=32, validators=[params.Positive],
                      label="Box size (voxels)",
                      help="Box size stored with the meshes; the model workflow uses it as "
                           "the default box of the cropped particles.")
        form.addParam("modelType", params.EnumParam, choices=MODEL_TYPE_CHOICES, default=0,
                      label="Model type",
                      help="Geometry the model workflow fits to each model:\n"
                           "General: the points as they are, oriented by the local surface "
                           "they span;\n"
                           "Vesicle: a sphere;\n"
                           "Ellipsoidal vesicle: a general ellipsoid (pick all around it);\n"
                           "Surface: a membrane picked on several z-slices;\n"
                           "Filament: points along the filament axis, in order.\n"
                           "Models taken over from input meshes keep the type stored with "
                           "them.")
        form.addParam("inputMeshes", params.PointerParam, pointerClass="SetOfMeshes",
                      allowsNull=True, label="Meshes to modify (optional)",
                      help="Previous meshes to refine: their points (and interior markers) "
                           "are the starting points; new points are added to them (a model "
                           "id already present extends that model).")
        form.addParam("pointsFile", params.FileParam, default="", allowsNull=True,
                      label="Points file (headless)",
                      help="CSV with the columns tomoId,modelId,x,y,z[,role] (a header line "
                           "is optional): positions in voxels of the input tomograms, "
                           "bottom-left origin; role 'point' (default) for a point of the "
                           "model or 'interior' for a marker on its inner side, which decides "
                           "which way the normals point. When given the protocol runs "
                           "without a display; when empty it opens the interactive picker.")

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        if self._isHeadless():
            self._insertFunctionStep(self.collectPointsStep)
            self._insertFunctionStep(self.createOutputStep)
        else:
            self._insertFunctionStep(self.pickInteractivelyStep, interactive=True)

    # --------------------------- STEPS functions -----------------------------
    def collectPointsStep(self):
        """Write extra/points.csv: the input meshes' points, then the points file's."""
        rows, _ = self._previousRows()
        if self._isHeadless():
            rows += read_points_csv(self.pointsFile.get())
        write_points_csv(self._pointsPath(), rows)
        self.info(f"{len(rows)} rows collected in {self._pointsPath()}")

    def pickInteractivelyStep(self):
        if not os.path.exists(self._pointsPath()):
            self.collectPointsStep()
        from tomopick.viewers.picker import pick_interactively
        tomograms = [(tsId, os.path.abspath(tomo.getFileName()), tomo.getSamplingRate())
                     for tsId, tomo in tomograms_by_tsid(self.inputTomograms.get()).items()]
        pick_interactively(tomograms, self._pointsPath(), self._modelTypeName(),
                           self.boxSize.get())
        self.createOutputStep()

    def createOutputStep(self):
        rows = read_points_csv(self._pointsPath())
        tomograms = tomograms_by_tsid(self.inputTomograms.get())
        errors = self._pointErrors(rows, tomograms, self._pointsPath())
        if errors:
            raise ValueError("\n".join(errors))
        _, previousTypes = self._previousRows()
        formType = self._modelTypeName()
        interiors = {}
        for tsId, modelId, x, y, z, role in rows:
            if role == INTERIOR:
                interiors[(tsId, modelId)] = (x, y, z)
        meshes = SetOfMeshes.create(self._getPath(), prefix=OUTPUT_NAME)
        meshes.setSamplingRate(self.inputTomograms.get().getSamplingRate())
        meshes.setBoxSize(self.boxSize.get())
        meshes.setPrecedents(self.inputTomograms)
        points = {}
        for tsId, modelId, x, y, z, role in rows:
            if role == POINT:
                points.setdefault((tsId, modelId), []).append((x, y, z))
        models = {}
        for key, modelPoints in points.items():
            modelType = previousTypes.get(key, formType)
            append_mesh_points(meshes, tomograms, key[0], key[1], modelPoints, modelType,
                               interiors.get(key))
            models[key] = [modelType, len(modelPoints)]
        for tsId, modelId in sorted(set(interiors) - set(models)):
            self.info(f"{tsId} model {modelId}: an interior marker but no points; skipped")
        if not models:
            raise ValueError(f"no points were picked (file {self._pointsPath()})")
        for (tsId, modelId), (modelType, n) in sorted(models.items()):
            marker = " with interior marker" if (tsId, modelId) in interiors else ""
            self.info(f"{tsId} model {modelId}: {modelType}, {n} points{marker}")
        meshes.setNumberOfMeshes(len(models))
        self._defineOutputs(**{OUTPUT_NAME: meshes})
        self._defineSourceRelation(self.inputTomograms, meshes)

    # --------------------------- UTILS functions -----------------------------
    def _isHeadless(self):
        return bool((self.pointsFile.get() or "").strip())

    def _pointsPath(self):
        return self._getExtraPath("points.csv")

    def _modelTypeName(self):
        return MODEL_TYPE_CHOICES[self.modelType.get()]

    def _previousRows(self):
        """Points and interior markers of the input meshes as CSV rows, and their model types."""
        meshes = self.inputMeshes.get()
        if meshes is None:
            return [], {}
        rows, markers, types = [], [], {}
        for model in mesh_models(meshes, self.inputTomograms.get().getSamplingRate()):
            key = (model["tsId"], model["modelId"])
            rows += [(*key, *(float(v) for v in p), POINT) for p in model["points"]]
            if model["type"] in MODEL_TYPES:
                types[key] = model["type"]
            if model["interior"] is not None:
                markers.append((*key, *model["interior"], INTERIOR))
        return rows + markers, types

    @staticmethod
    def _pointErrors(rows, tomograms, source):
        """Messages naming unknown tsIds and points outside their tomogram."""
        errors = []
        unknown = sorted({r[0] for r in rows} - set(tomograms))
        if unknown:
            errors.append(f"{source}: tsIds with no tomogram in the input: {', '.join(unknown)} "
                          f"(known: {', '.join(tomograms)})")
        known = [r for r in rows if r[0] in tomograms]
        shapes = {tsId: tomogram_shape_xyz(t) for tsId, t in tomograms.items()}
        mask = Picks([r[0] for r in known], [r[2:5] for r in known]).outside(shapes) \
            if known else []
        outside = [f"{tsId} model {modelId} {role} ({x:g}, {y:g}, {z:g}) outside "
                   f"{shapes[tsId][0]}x{shapes[tsId][1]}x{shapes[tsId][2]}"
                   for (tsId, modelId, x, y, z, role), out in zip(known, mask) if out]
        if outside:
            shown = "; ".join(outside[:10])
            if len(outside) > 10:
                shown += f"; ... {len(outside) - 10} more"
            errors.append(f"{source}: {len(outside)} points lie outside their tomogram: {shown}")
        return errors

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        errors = []
        tomos = self.inputTomograms.get()
        if tomos is None:
            return ["Give the input tomograms."]
        if self.inputMeshes.get() is not None:
            try:
                rows, _ = self._previousRows()
                errors += self._pointErrors(rows, tomograms_by_tsid(tomos),
                                            f"input meshes {self.inputMeshes.get().getNameId()}")
            except (ValueError, KeyError, AttributeError) as err:
                errors.append(f"Cannot read the input meshes: {err}")
        if self._isHeadless():
            path = self.pointsFile.get().strip()
            if not os.path.isfile(path):
                return [f"The points file {path} does not exist."]
            try:
                rows = read_points_csv(path)
                tomograms = tomograms_by_tsid(tomos)
            except (ValueError, OSError) as err:
                return [str(err)]
            if not rows and self.inputMeshes.get() is None:
                errors.append(f"The points file {path} has no points.")
            errors += self._pointErrors(rows, tomograms, path)
        return errors

    def _summary(self):
        if self.meshes is None:
            return ["Output not ready yet."]
        return [f"{self.meshes.getNumberOfMeshes()} models, {self.meshes.getSize()} points "
                f"(box {self.meshes.getBoxSize()} voxels)",
                "Source: " + (self.pointsFile.get() if self._isHeadless()
                              else "interactive picking")]
