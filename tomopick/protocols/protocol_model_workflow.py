"""Model workflow: fit each picked model and crop oriented particles from it.

Per model (one groupId of the input meshes in one tomogram) the geometry of
its type is fitted (tomopick.core.geometry): Vesicle = least-squares sphere,
Ellipsoidal vesicle = algebraic ellipsoid, Surface = membrane by levels,
General = the points themselves, Filament = smoothing spline. Cropping points
are spread over it and oriented: for surfaces the particle's z-axis is the
outward normal (away from the interior marker, or from the fitted centre);
for filaments the z-axis runs along the filament and the x-axis points away
from it, turning by ``dphi`` per point. The in-plane angle of surface
particles is not defined by the surface: narot = 0 (minimal-twist rotation,
`tomopick.core.rotations.rotation_from_z_axis`).

A model that cannot be fitted (too few points, degenerate) goes to
``failedMeshes`` with the reason in the log; the others are cropped anyway.
"""
import json
import os

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow.protocol.constants import STEPS_PARALLEL
from pyworkflow.utils import Message
from pyworkflow.wizard import Wizard
from pwem.protocols import EMProtocol
from tomo.objects import SetOfCoordinates3D, SetOfMeshes
from tomo.protocols import ProtTomoBase

from tomopick.convert import (append_mesh_points, append_picks, mesh_models,
                              outside_tomograms, tomograms_by_tsid)
from tomopick.core import geometry
from tomopick.core.picks import Picks
from tomopick.core.rotations import homogeneous
from tomopick.protocols.protocol_vectorial_picking import MODEL_TYPE_CHOICES

OUTPUT_COORDINATES = "coordinates"
OUTPUT_FAILED = "failedMeshes"


class ProtTomoPickModelWorkflow(EMProtocol, ProtTomoBase):
    """Fit the picked models (vesicles, membranes, filaments) and crop oriented particles.

    Input: the meshes of vectorial picking (or any SetOfMeshes). Output: one
    oriented coordinate per cropping point, groupId = model id; models that
    cannot be fitted are listed in failedMeshes with the reason in the log.
    """
    _label = "model workflow"
    _devStatus = "NEW"
    _possibleOutputs = {OUTPUT_COORDINATES: SetOfCoordinates3D, OUTPUT_FAILED: SetOfMeshes}
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.coordinates = None
        self.failedMeshes = None

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam("inputMeshes", params.PointerParam, pointerClass="SetOfMeshes",
                      important=True, label="Input meshes",
                      help="Picked models (vectorial picking): one model per groupId and "
                           "tomogram.")
        form.addParam("boxSize", params.IntParam, default=32, validators=[params.Positive],
                      label="Box size (voxels)",
                      help="Box size of the cropped particles (the wizard takes it from the "
                           "input meshes).")
        form.addParam("useModelTypeAsPicked", params.BooleanParam, default=True,
                      label="Model type as picked?",
                      help="Yes: each model is fitted with the type stored with it by the "
                           "vectorial picking; models without one (meshes from other "
                           "sources) are fitted as General.\n"
                           "No: every model is fitted with the model type chosen below.")
        form.addParam("modelType", params.EnumParam, choices=MODEL_TYPE_CHOICES,
                      default=0, label="Model type", condition="not useModelTypeAsPicked",
                      help="General: the points as they are, z-axis = normal of the local "
                           "surface they span (none when they span none);\n"
                           "Vesicle: least-squares sphere;\n"
                           "Ellipsoidal vesicle: general ellipsoid (algebraic quadric fit);\n"
                           "Surface: open membrane picked on several z-slices (ordered per "
                           "slice, interpolated between slices, triangulated);\n"
                           "Filament: smooth spline through the points in picking order.")

        form.addSection(label="Mesh and cropping")
        form.addParam("meshParameter", params.FloatParam, default=5.0,
                      validators=[params.Positive], label="Mesh edge (voxels)",
                      help="Target triangle edge of the surface mesh of Ellipsoidal vesicle "
                           "and Surface models (voxels). Vesicles are sampled on their exact "
                           "fitted sphere and do not need a mesh.")
        form.addParam("maxTr", params.IntParam, default=100000, validators=[params.GE(20)],
                      label="Maximum triangles",
                      help="Cap on the number of triangles of a mesh: the edge grows (or the "
                           "refinement stops) to stay below it.")
        form.addParam("doRefineMesh", params.BooleanParam, default=True, label="Refine mesh?",
                      help="Subdivide the mesh (each triangle into four) before cropping. "
                           "Ellipsoids: new vertices are put on the fitted ellipsoid; surfaces: "
                           "each subdivision is followed by Taubin smoothing, which removes "
                           "click noise without shrinking the membrane.")
        form.addParam("subDivision", params.IntParam, default=2, condition="doRefineMesh",
                      validators=[params.GE(0)], label="Subdivision iterations",
                      help="Number of subdivision (and smoothing) iterations.")
        form.addParam("cropping", params.FloatParam, default=10.0, validators=[params.Positive],
                      label="Cropping distance (voxels)",
                      help="Target distance between neighbouring cropping points on vesicles "
                           "and surfaces (voxels): the median nearest-neighbour distance is "
                           "within a few % of it; doubling it gives a quarter of the points.")

        form.addSection(label="Filament")
        form.addParam("dz", params.FloatParam, default=10.0, validators=[params.Positive],
                      label="Step along the axis (voxels)",
                      help="Arc length between consecutive particles along a filament.")
        form.addParam("dphi", params.FloatParam, default=0.0, label="Rotation per step (deg)",
                      help="Rotation about the filament axis from one particle to the next "
                           "(helical twist).")
        form.addParam("radius", params.FloatParam, default=0.0, validators=[params.GE(0)],
                      label="Radius (voxels)",
                      help="Distance of the particles from the filament axis; 0 puts them on "
                           "the axis. Particle z-axis: along the filament (picking "
                           "direction); x-axis: radial, away from the axis.")
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        read = self._insertFunctionStep(self.readModelsStep, prerequisites=[])
        tsIds = sorted({c.getTomoId() for c in self.inputMeshes.get().iterItems()})
        fits = [self._insertFunctionStep(self.fitModelsStep, tsId, prerequisites=[read])
                for tsId in tsIds]
        self._insertFunctionStep(self.createOutputStep, prerequisites=fits)

    # --------------------------- STEPS functions -----------------------------
    def readModelsStep(self):
        """Input meshes -> extra/models.json (plain data the parallel steps share)."""
        models = self._readModels()
        with open(self._modelsPath(), "w") as handle:
            json.dump(models, handle)
        self.info(f"{len(models)} models in {len({m['tsId'] for m in models})} tomograms")

    def fitModelsStep(self, tsId):
        with open(self._modelsPath()) as handle:
            models = [m for m in json.load(handle) if m["tsId"] == tsId]
        parts, failed = [], []
        for model in models:
            label = f"{tsId} model {model['modelId']} ({model['type']})"
            try:
                crop = geometry.crop_model(model["type"], np.array(model["points"]),
                                           interior=model["interior"], **self._cropArgs())
                if len(crop) == 0:
                    raise ValueError("no cropping point (model smaller than the cropping distance)")
            except ValueError as err:  # one bad model never sinks the others
                failed.append({"modelId": model["modelId"], "reason": str(err)})
                self.info(f"{label}: FAILED, {err}")
                continue
            parts.append(Picks(np.full(len(crop), tsId), crop.positions,
                               np.full(len(crop), model["modelId"]), homogeneous(crop.rotations),
                               voxel_size=self.inputMeshes.get().getSamplingRate()))
            self.info(f"{label}: {len(crop)} particles" + self._describe(crop))
        if parts:
            Picks.concatenate(parts).save(self._fitPath(tsId))
        with open(self._failedPath(tsId), "w") as handle:
            json.dump(failed, handle)

    def createOutputStep(self):
        meshes = self.inputMeshes.get()
        tomograms = tomograms_by_tsid(meshes.getPrecedents())
        with open(self._modelsPath()) as handle:
            models = {(m["tsId"], m["modelId"]): m for m in json.load(handle)}
        parts, failed = [], []
        for tsId in sorted({k[0] for k in models}):
            with open(self._failedPath(tsId)) as handle:
                failed += [(tsId, f["modelId"], f["reason"]) for f in json.load(handle)]
            if os.path.exists(self._fitPath(tsId)):
                parts.append(Picks.load(self._fitPath(tsId)))
        picks = Picks.concatenate(parts) if parts else None
        if picks is not None:
            outside = outside_tomograms(picks, tomograms)
            if outside.any():
                self.info(f"{int(outside.sum())} cropping points outside their tomogram dropped")
                picks = picks.subset(~outside)
        if picks is None or len(picks) == 0:
            reasons = "; ".join(f"{t} model {m}: {r}" for t, m, r in failed) or "no points"
            raise ValueError(f"no model gave particles ({reasons})")
        outputs = {}
        coords = SetOfCoordinates3D.create(self._getPath(), prefix=OUTPUT_COORDINATES)
        coords.setSamplingRate(meshes.getSamplingRate())
        coords.setBoxSize(self.boxSize.get())
        coords.setPrecedents(meshes.getPrecedents())
        append_picks(coords, picks, tomograms)
        outputs[OUTPUT_COORDINATES] = coords
        if failed:
            failedSet = SetOfMeshes.create(self._getPath(), prefix=OUTPUT_FAILED)
            failedSet.setSamplingRate(meshes.getSamplingRate())
            failedSet.setBoxSize(meshes.getBoxSize() or self.boxSize.get())
            failedSet.setPrecedents(meshes.getPrecedents())
            for tsId, modelId, _ in failed:
                model = models[(tsId, modelId)]
                append_mesh_points(failedSet, tomograms, tsId, modelId, model["points"],
                                   model["type"], model["interior"])
            failedSet.setNumberOfMeshes(len(failed))
            outputs[OUTPUT_FAILED] = failedSet
        self._defineOutputs(**outputs)
        for output in outputs.values():
            self._defineSourceRelation(self.inputMeshes, output)

    # --------------------------- UTILS functions -----------------------------
    def _modelsPath(self):
        return self._getExtraPath("models.json")

    def _fitPath(self, tsId):
        return self._getExtraPath(f"{tsId}_fit.npz")

    def _failedPath(self, tsId):
        return self._getExtraPath(f"{tsId}_failed.json")

    def _cropArgs(self):
        return dict(spacing=self.cropping.get(), edge=self.meshParameter.get(),
                    max_triangles=self.maxTr.get(),
                    subdivisions=self.subDivision.get() if self.doRefineMesh.get() else 0,
                    dz=self.dz.get(), dphi=self.dphi.get(), radius=self.radius.get())

    @staticmethod
    def _describe(crop):
        d = crop.description
        if "radius" in d:
            return f", sphere centre {np.round(d['center'], 1).tolist()} radius {d['radius']:.1f}"
        if "semi_axes" in d:
            return (f", ellipsoid centre {np.round(d['center'], 1).tolist()} semi-axes "
                    f"{np.round(d['semi_axes'], 1).tolist()}")
        if "length" in d:
            return f", filament length {d['length']:.1f}"
        if "area" in d:
            return f", surface of {d['levels']} levels, area {d['area']:.0f} voxels^2"
        if not crop.oriented.all():
            return ", unoriented (the points span no surface)"
        return ""

    def _readModels(self):
        """The models of the input meshes: list of dicts (tsId, modelId, type, points, interior)."""
        formType = MODEL_TYPE_CHOICES[self.modelType.get()]
        asPicked = self.useModelTypeAsPicked.get()
        models = []
        for model in mesh_models(self.inputMeshes.get()):
            stored = model["type"]
            models.append({
                "tsId": model["tsId"], "modelId": model["modelId"],
                "type": (stored if stored in geometry.MODEL_TYPES else "General")
                        if asPicked else formType,
                "interior": None if model["interior"] is None else list(model["interior"]),
                "points": model["points"].tolist()})
        return models

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        meshes = self.inputMeshes.get()
        if meshes is None:
            return ["Give the input meshes."]
        errors = []
        if meshes.getSize() == 0:
            errors.append(f"The input meshes {meshes.getNameId()} are empty.")
        tomograms = meshes.getPrecedents()
        if tomograms is None:
            errors.append(f"The input meshes {meshes.getNameId()} do not say which tomograms "
                          "they were picked on (no precedents).")
        elif abs(tomograms.getSamplingRate() - meshes.getSamplingRate()) > \
                1e-3 * tomograms.getSamplingRate():
            errors.append(f"The input meshes {meshes.getNameId()} are at "
                          f"{meshes.getSamplingRate():g} Å/voxel but their tomograms "
                          f"{tomograms.getNameId()} at {tomograms.getSamplingRate():g} Å/voxel: "
                          "pick (or import) the meshes on tomograms of the same sampling rate.")
        return errors

    def _summary(self):
        if self.coordinates is None:
            return ["Output not ready yet."]
        summary = [f"{self.coordinates.getSize()} oriented particles from the models of "
                   f"{self.inputMeshes.get().getNameId()} "
                   f"(box {self.coordinates.getBoxSize()} voxels, "
                   f"cropping distance {self.cropping.get():g} voxels)"]
        if self.failedMeshes is not None:
            summary.append(f"{self.failedMeshes.getNumberOfMeshes()} models could not be fitted "
                           "(failedMeshes; reasons in the log)")
        return summary

    def _methods(self):
        if self.coordinates is None:
            return []
        return [f"{self.coordinates.getSize()} particles were cropped from fitted membrane, "
                "vesicle and filament models with their z-axis along the outward normal "
                "(tomopick model workflow)."]


class ProtTomoPickModelWorkflowBoxSizeWizard(Wizard):
    """Box size of the model workflow taken from its input meshes."""
    _targets = [(ProtTomoPickModelWorkflow, ["boxSize"])]

    @classmethod
    def boxSize(cls, protocol):
        meshes = protocol.inputMeshes.get()
        return (meshes.getBoxSize() if meshes is not None else None) or protocol.boxSize.get()

    def show(self, form, *params):
        form.setVar("boxSize", self.boxSize(form.protocol))
