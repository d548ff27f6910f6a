"""Unsupervised particle picking after PickET (Arvindekar, Golatkar & Viswanath, 2025).

Per tomogram: a two-class segmentation from neighbourhood features (FFT
magnitudes, Gabor responses or raw intensities) clustered by KMeans or a
Gaussian mixture (gold beads cut out of the particle class with a particle
radius around them, lipid membranes found in the density), then the particle
class is split into objects (connected components or watershed) whose
centroids are the picks. The algorithms live in tomopick.core.picket
(features, segment, beads, membranes, localize, workflow); this
module reads the form, runs them per tomogram and registers the outputs.
"""
import os

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow.protocol.constants import STEPS_PARALLEL
from pyworkflow.utils import Message
from pwem.protocols import EMProtocol
from tomo.objects import SetOfCoordinates3D, SetOfTomoMasks, TomoMask
from tomo.protocols import ProtTomoBase

from tomopick.convert import append_picks, threads_per_step, tomogram_array, tomograms_by_tsid
from tomopick.core import picket
from tomopick.core.formats import mrc_header_info, write_mrc_slabs
from tomopick.core.picks import Picks

OUTPUT_COORDINATES = "coordinates"
OUTPUT_SEGMENTATIONS = "segmentations"
# the form's choices, in the order saved workflows store (by index); names are core's
FEATURE_MODES = ["FFT", "Gabor", "intensities"]
CLUSTERERS = ["KMeans", "GMM"]
LOCALIZATIONS = ["connected components", "watershed"]
SHORT_LOCALIZATIONS = {"connected components": "cc", "watershed": "watershed"}


def parse_workflows(text):
    """Workflows from the form's text: 'feature clusterer localisation' entries, ';'-separated.

    Returns a list of canonical (feature mode, clusterer, localisation) triples,
    in order and without repeats.

    Raises
    ------
    ValueError
        Naming the entry that is not a feature mode, a clusterer and a localisation.
    """
    workflows = []
    for entry in (text or "").replace("\n", ";").split(";"):
        words = entry.split()
        if not words:
            continue
        try:
            if len(words) < 3:
                raise ValueError("it needs a feature mode, a clusterer and a localisation")
            triple = (picket.check_feature_mode(words[0]), picket.check_clusterer(words[1]),
                      picket.check_localization(" ".join(words[2:])))
        except ValueError as err:
            raise ValueError(f"workflow {entry.strip()!r}: {err} (e.g. 'FFT GMM watershed; "
                             f"intensities KMeans connected components')") from None
        if triple not in workflows:
            workflows.append(triple)
    return workflows


def workflow_output_name(mode, clusterer, localization):
    """Name of the coordinates output of an extra workflow, e.g. coordinates_FFT_GMM_watershed."""
    return f"{OUTPUT_COORDINATES}_{mode}_{clusterer}_{SHORT_LOCALIZATIONS[localization]}"


class ProtTomoPickPickET(EMProtocol, ProtTomoBase):
    """Unsupervised particle picking (PickET): no template, no training.

    Every voxel is described by its neighbourhood (FFT, Gabor or intensities),
    a two-class clusterer separates particles from background, and the
    particle voxels are split into objects whose centroids are the picks,
    scored by object mass. The label mask of each tomogram is registered too
    (object k = the k-th best pick) for inspection. Particles of 12 voxels or
    more are segmented on every second voxel along each axis (their
    classification there is exact, at an eighth of the work); picks are in
    voxels of the tomogram and the label mask has the tomogram's size.
    """
    _label = "unsupervised picking (PickET)"
    _devStatus = "NEW"
    _possibleOutputs = {OUTPUT_COORDINATES: SetOfCoordinates3D,
                        OUTPUT_SEGMENTATIONS: SetOfTomoMasks}
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.coordinates = None
        self.segmentations = None

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      important=True, label="Input tomograms",
                      help="Tomograms to pick, each on its own (the clusterer is fitted per "
                           "tomogram).")
        form.addParam("particleDiameter", params.FloatParam, default=200.0,
                      validators=[params.GE(0)], label="Particle diameter (Å)",
                      help="Approximate diameter of the particles. Used to drop objects "
                           "much smaller (< 2 %) or larger (> 8x) than a sphere of this "
                           "diameter, to space the watershed markers (when the minimum "
                           "distance is 0), to choose the particle cluster automatically "
                           "and to widen the automatic picking range; from 12 voxels "
                           "on, every second voxel along each axis is classified (8x "
                           "faster, the objects found on that grid). With several "
                           "particle sizes give a typical (median) one. 0 = unknown: no "
                           "size filter (then the watershed needs a minimum distance).")
        form.addParam("boxSize", params.IntParam, default=32, validators=[params.Positive],
                      label="Box size (voxels)",
                      help="Box size stored with the output coordinates (for extraction).")

        form.addSection(label="Segmentation")
        form.addParam("featureExtraction", params.EnumParam, choices=list(FEATURE_MODES),
                      default=1, label="Features",
                      help="Description of each voxel's neighbourhood (after a Gaussian blur "
                           "of 2 voxels and min-max normalisation):\n"
                           "FFT: magnitudes of the DFT of the neighbourhood (the "
                           "non-redundant half);\n"
                           "Gabor: responses to PickET's bank of 1000 3D Gabor filters, "
                           "keeping the 64 that vary most;\n"
                           "intensities: the neighbourhood's voxel values.\n"
                           "Default Gabor with GMM and watershed: the best or within 0.01 "
                           "of the best one-to-one F1 of the 12 workflows on sparse, crowded "
                           "(touching particles, drift, gold) and vesicle-laden simulated "
                           "lamellae at SNR 0.15 (1.00, 0.95, 0.92; FFT or intensities + "
                           "GMM + watershed are close; benchmarks/bench_picket.py "
                           "--lamellae).")
        form.addParam("clustering", params.EnumParam, choices=list(CLUSTERERS), default=1,
                      label="Clustering",
                      help="Two-class clusterer fitted on sampled neighbourhoods and applied "
                           "to every voxel.\nKMeans: nearest of two centres (exactly "
                           "KMeans.predict, computed as one filter).\nGMM: two full-covariance "
                           "Gaussians on the leading principal components of the features "
                           "(FFT: 99.99 % of the variance, at most 24 components; Gabor and "
                           "intensities: 99.9 %, at most 12); more robust at low SNR on "
                           "simulated data.")
        form.addParam("neighborhoodSize", params.IntParam, default=5,
                      label="Neighbourhood size (voxels)",
                      help="Edge of the cubic neighbourhood of each voxel; odd, >= 3.")
        form.addParam("maxNeighborhoodsForFitting", params.IntParam,
                      default=picket.MAX_FIT_NEIGHBORHOODS,
                      validators=[params.GE(100)], label="Neighbourhoods for fitting",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="Neighbourhoods drawn at random from the fitting z range to fit "
                           "the clusterer (at most this many).")
        form.addParam("zFitRange", params.StringParam, default="",
                      label="z range for fitting",
                      help="Slices whose neighbourhoods fit the clusterer, 'lo-hi' (inclusive, "
                           "0-based, e.g. '40-120'). Empty: the central half of the lamella "
                           "found from the slice profile.")
        form.addParam("zPickRange", params.StringParam, default="",
                      label="z range for picking",
                      help="Slices segmented and picked, 'lo-hi' (inclusive, 0-based). "
                           "Empty: the lamella from the slice profile, widened by a particle "
                           "radius (the whole tomogram when no slab stands out).")
        form.addParam("particleClusterId", params.IntParam, default=-1,
                      label="Particle cluster",
                      help="Which of the two clusters is the particles: 0 or 1 (the "
                           "clusterer's ids, reproducible for a given seed), or -1 = "
                           "automatic: the cluster with the more particle-sized objects "
                           "(when the diameter is known), else the one whose mean intensity "
                           "departs more from the solvent level. The choice is in the log.")
        form.addParam("seed", params.IntParam, default=0, expertLevel=params.LEVEL_ADVANCED,
                      label="Random seed",
                      help="Seed of the neighbourhood sampling and the clusterer "
                           "initialisation: equal seeds give equal picks.")

        form.addSection(label="Localisation")
        form.addParam("localization", params.EnumParam, choices=list(LOCALIZATIONS),
                      default=1, label="Localisation",
                      help="connected components: each connected particle region is one "
                           "particle.\nwatershed: regions are split at the valleys of their "
                           "distance transform (touching particles).\nWith either, objects "
                           "flatter than half a ball (slabs along the faces), lying on a "
                           "sheet (the smoothed mask curves strongly only across it) or on a "
                           "lipid membrane found in the density are dropped, a particle "
                           "merged with a membrane is kept, and objects with about twice the "
                           "median mass or more are split into that many picks.")
        form.addParam("minDistance", params.IntParam, default=0, validators=[params.GE(0)],
                      condition="localization == 1", label="Minimum distance (voxels)",
                      help="Minimum distance between watershed markers. 0: automatic, the "
                           "median radius of the particle-sized blobs of the mask "
                           "(0.25-0.5 particle diameters), so touching particles are "
                           "split in crowded regions and lone ones are not.")
        form.addParam("extraWorkflows", params.StringParam, default="",
                      label="Also run these workflows",
                      expertLevel=params.LEVEL_ADVANCED,
                      help="Compare workflows without recomputing: 'features clusterer "
                           "localisation' entries separated by ';', e.g. 'FFT GMM watershed; "
                           "intensities KMeans connected components'. They share the "
                           "preprocessing, z ranges and fitting sample with the workflow "
                           "above, and workflows with the same features and clusterer share "
                           "the whole segmentation. Each gets its own coordinates output, "
                           "coordinates_<features>_<clusterer>_<cc|watershed>, so it can be "
                           "fed to any protocol (consensus, extraction, the viewer) on its "
                           "own; the main 'coordinates' and 'segmentations' stay those of "
                           "the workflow above.")
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        tsIds = list(tomograms_by_tsid(self.inputTomograms.get()))
        steps = [self._insertFunctionStep(self.pickStep, tsId, prerequisites=[])
                 for tsId in tsIds]
        self._insertFunctionStep(self.createOutputStep, prerequisites=steps)

    # --------------------------- STEPS functions -----------------------------
    def pickStep(self, tsId):
        tomogram = tomograms_by_tsid(self.inputTomograms.get())[tsId]
        volume = tomogram_array(tomogram, mmap=True)
        nz = volume.shape[0]
        samplingRate = self.inputTomograms.get().getSamplingRate()
        diameter = self.particleDiameter.get() / samplingRate or None
        main = self._mainWorkflow()
        workflows = [main] + [w for w in self._extraWorkflows() if w != main]
        pairs = list(dict.fromkeys((mode, clusterer) for mode, clusterer, _ in workflows))
        segmentations = picket.segment_workflows(
            volume, pairs, neighborhood_size=self.neighborhoodSize.get(),
            max_fit_neighborhoods=self.maxNeighborhoodsForFitting.get(),
            z_fit_range=picket.parse_z_range(self.zFitRange.get(), nz),
            z_pick_range=picket.parse_z_range(self.zPickRange.get(), nz),
            particle_cluster=self.particleClusterId.get(), particle_diameter=diameter,
            seed=self.seed.get(), n_threads=self._threadsPerStep())
        for pair, segmentation in segmentations:
            for mode, clusterer, localization in workflows:
                if (mode, clusterer) != pair:
                    continue
                found, found_objects = picket.localize_segmentation(
                    segmentation, localization, diameter, self.minDistance.get(), tsId,
                    samplingRate)
                if (mode, clusterer, localization) == main:
                    picks, seg, objects = found, segmentation, found_objects
                else:
                    name = workflow_output_name(mode, clusterer, localization)
                    found.save(self._picksPath(tsId, name))
                    self.info(f"{tsId}: {name}: {len(found)} particles")
        labels = objects["labels"]
        dtype = np.int16 if labels.max() < np.iinfo(np.int16).max else np.float32
        # at the tomogram's size (labels live on the segmentation grid), slab by
        # slab: no whole-volume converted copy (0.6-1.2 GB at 1000 x 1000 x 300)
        write_mrc_slabs(self._maskPath(tsId),
                        picket.GridVolume(labels, volume.shape, objects["grid_step"],
                                          seg.pick_range),
                        samplingRate, dtype=dtype)
        picks.save(self._picksPath(tsId))
        choice = seg.info.get("cluster_choice", {})
        self.info(f"{tsId}: {len(picks)} particles; fit z {seg.fit_range}, pick z "
                  f"{seg.pick_range}; particle cluster {seg.particle_cluster}"
                  + (f" ({choice['rule']})" if choice else " (given)")
                  + f"; {seg.info['particle_fraction']:.1%} of the voxels are particle"
                  + (f" (classified on the step-{seg.grid_step} grid)" if seg.grid_step > 1
                     else "") + "; "
                  + (f"{len(seg.gold_beads)} gold beads cut out; " if seg.gold_beads else "")
                  + (f"membranes on {seg.info['membrane_fraction']:.1%} of the voxels, "
                     f"{objects['n_off_membrane']} particles found merged with them; "
                     if "membrane_fraction" in seg.info else "")
                  + f"objects dropped: {objects['n_too_small']} too small, "
                  f"{objects['n_too_large']} too large, {objects['n_edge_slivers']} edge "
                  f"slivers, {objects['n_sheets']} sheets, {objects['n_membrane']} membrane "
                  f"pieces")

    def createOutputStep(self):
        tomoSet = self.inputTomograms.get()
        tomograms = tomograms_by_tsid(tomoSet)
        samplingRate = tomoSet.getSamplingRate()
        coords = self._coordinateSet(self._loadPicks(tomograms), tomograms)
        extra = {}
        for workflow in self._extraWorkflows():
            if workflow == self._mainWorkflow():
                continue
            name = workflow_output_name(*workflow)
            extra[name] = self._coordinateSet(self._loadPicks(tomograms, name), tomograms, name)

        masks = SetOfTomoMasks.create(self._getPath())
        masks.setSamplingRate(samplingRate)
        for tsId, tomogram in tomograms.items():
            mask = TomoMask()
            mask.setFileName(self._maskPath(tsId))
            mask.setSamplingRate(samplingRate)
            mask.setVolName(tomogram.getFileName())
            mask.setTsId(tsId)
            mask.setOrigin(tomogram.getOrigin())
            masks.append(mask)
        self._defineOutputs(**{OUTPUT_COORDINATES: coords, OUTPUT_SEGMENTATIONS: masks},
                            **extra)
        for output in [coords, masks] + list(extra.values()):
            self._defineSourceRelation(self.inputTomograms, output)

    # --------------------------- UTILS functions -----------------------------
    def _coordinateSet(self, picks, tomograms, suffix=None):
        # create() names the file coordinates3d[_suffix].sqlite (it has no template)
        coords = SetOfCoordinates3D.create(self._getPath(), suffix=suffix)
        coords.setSamplingRate(self.inputTomograms.get().getSamplingRate())
        coords.setBoxSize(self.boxSize.get())
        coords.setPrecedents(self.inputTomograms)
        append_picks(coords, picks, tomograms)
        return coords

    def _loadPicks(self, tomograms, name=OUTPUT_COORDINATES):
        return Picks.concatenate(Picks.load(self._picksPath(tsId, name)) for tsId in tomograms)

    def _mainWorkflow(self):
        return (FEATURE_MODES[self.featureExtraction.get()], CLUSTERERS[self.clustering.get()],
                LOCALIZATIONS[self.localization.get()])

    def _extraWorkflows(self):
        return parse_workflows(self.extraWorkflows.get())

    def _maskPath(self, tsId):
        return self._getExtraPath(f"{tsId}_segmentation.mrc")

    def _picksPath(self, tsId, name=OUTPUT_COORDINATES):
        return self._getExtraPath(f"{tsId}_{name}.npz")

    def _threadsPerStep(self):
        return threads_per_step(self.numberOfThreads.get(), self.inputTomograms.get().getSize())

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        errors = []
        tomoSet = self.inputTomograms.get()
        if tomoSet is None:
            return ["Give the input tomograms."]
        n = self.neighborhoodSize.get()
        if n is None or n < 3 or n % 2 == 0:
            errors.append(f"Neighbourhood size must be an odd integer >= 3 (got {n}).")
        if self.particleClusterId.get() not in (-1, 0, 1):
            errors.append(f"Particle cluster must be -1 (automatic), 0 or 1 "
                          f"(got {self.particleClusterId.get()}).")
        try:
            extra = self._extraWorkflows()
        except ValueError as err:
            errors.append(f"Also run these workflows: {err}")
            extra = []
        if (any(loc == "watershed" for _, _, loc in [self._mainWorkflow()] + extra)
                and not self.minDistance.get() and not self.particleDiameter.get()):
            errors.append("The watershed needs a minimum distance or a particle diameter.")
        try:
            tomograms = tomograms_by_tsid(tomoSet)
        except ValueError as err:
            return errors + [str(err)]
        for label, text in (("z range for fitting", self.zFitRange.get()),
                            ("z range for picking", self.zPickRange.get())):
            try:
                picket.parse_z_range(text)
            except ValueError as err:
                errors.append(f"{label}: {err}")
                continue
            for tsId, tomogram in tomograms.items():
                path = tomogram.getFileName()
                if not os.path.exists(path):
                    errors.append(f"{tsId}: tomogram file {path} does not exist.")
                    break
                nz = mrc_header_info(path)["shape"][0]
                try:
                    picket.parse_z_range(text, nz)
                except ValueError as err:
                    errors.append(f"{label} for {tsId} ({nz} slices): {err}")
        return errors

    def _summary(self):
        if self.coordinates is None:
            return ["Output not ready yet."]
        mode = FEATURE_MODES[self.featureExtraction.get()]
        lines = [f"{self.coordinates.getSize()} particles picked in "
                 f"{self.segmentations.getSize()} tomograms",
                 f"Workflow: {mode} features, {CLUSTERERS[self.clustering.get()]}, "
                 f"{LOCALIZATIONS[self.localization.get()]}; neighbourhood "
                 f"{self.neighborhoodSize.get()} voxels",
                 "Scores: object mass (summed particle margin); labels in segmentations "
                 "number the picks best first"]
        for workflow in self._extraWorkflows():
            if workflow != self._mainWorkflow():
                name = workflow_output_name(*workflow)
                output = getattr(self, name, None)
                if output is not None:
                    lines.append(f"{name}: {output.getSize()} particles")
        return lines

    def _methods(self):
        if self.coordinates is None:
            return []
        return [f"Particles were picked without supervision following PickET "
                f"(Arvindekar et al. 2025) with {FEATURE_MODES[self.featureExtraction.get()]} "
                f"features, {CLUSTERERS[self.clustering.get()]} clustering and "
                f"{LOCALIZATIONS[self.localization.get()]} localisation."]
