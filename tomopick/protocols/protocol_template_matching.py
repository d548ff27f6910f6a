"""Template matching: find and orient particles with a reference, statistically thresholded.

Per tomogram: fast local normalised cross-correlation (FLCF) with the
reference weighted by the tomogram's missing wedge, a coarse global search
over a uniform rotation set, local refinement of the candidates, a threshold
from the expected number of false positives, non-maximum suppression. The
algorithms live in tomopick.core.template_matching; this module reads the
form, prepares the reference once, runs the search per tomogram (parallel
steps) and registers the outputs.
"""
import json
import os

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow.protocol.constants import STEPS_PARALLEL
from pyworkflow.utils import Message
from pwem.protocols import EMProtocol
from tomo.objects import SetOfCoordinates3D, SetOfTomograms
from tomo.protocols import ProtTomoBase

from tomopick.convert import (append_picks, threads_per_step, tomogram_array, tomogram_like,
                              tomograms_by_tsid)
from tomopick.core.atomic import save_npy, save_npz
from tomopick.core.formats import create_mrc, mrc_header_info, read_mrc
from tomopick.core.formats.mrc import MrcError, update_header_stats_slabs
from tomopick.core.picks import Picks
from tomopick.core.rotations import homogeneous, symmetry_matrices
from tomopick.core.template_matching import match_template, prepare_template

OUTPUT_COORDINATES = "coordinates"
OUTPUT_SCORE_MAPS = "scoreMaps"


def parse_tilt_range(text):
    """'min,max' degrees -> (min, max), or None for an empty text (named errors)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        lo, hi = (float(v) for v in text.replace(";", ",").split(","))
    except ValueError:
        raise ValueError(f"tilt range {text!r} is not 'min,max' in degrees") from None
    if not -90 <= lo < hi <= 90:
        raise ValueError(f"tilt range {text!r} must satisfy -90 <= min < max <= 90")
    return lo, hi


class ProtTomoPickTemplateMatching(EMProtocol, ProtTomoBase):
    """Template matching: particles found and oriented by a reference.

    The reference (a volume, e.g. a subtomogram average, or an MRC file) is
    resampled to the tomograms' sampling rate, masked, weighted by each
    tomogram's missing wedge and correlated with the tomogram by fast local
    normalised cross-correlation over a uniform rotation set: a coarse global
    search on a binned copy, then local refinement of the candidates to the
    fine angular step and sub-voxel positions. Picks pass a threshold set
    from the expected number of false positives per tomogram (scores are in
    standard deviations of the background, comparable between runs) and are
    at least half a particle diameter apart. Gold beads are masked
    automatically. Outputs: oriented coordinates with their score and the
    per-voxel best score of the global search (the best-rotation map beside
    it in the run's extra folder).
    """
    _label = "template matching"
    _devStatus = "NEW"
    _possibleOutputs = {OUTPUT_COORDINATES: SetOfCoordinates3D,
                        OUTPUT_SCORE_MAPS: SetOfTomograms}
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.coordinates = None
        self.scoreMaps = None

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam("inputTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      important=True, label="Input tomograms",
                      help="Tomograms to search, each on its own.")
        form.addParam("reference", params.PointerParam, pointerClass="Volume",
                      allowsNull=True, label="Reference",
                      help="The template: a Volume or AverageSubTomogram (e.g. the output of "
                           "the subtomogram initial model). Resampled to the tomograms' "
                           "sampling rate in Fourier space (logged). Leave empty to give an "
                           "MRC file instead.")
        form.addParam("referenceFile", params.PathParam, default="",
                      condition="not reference", label="Reference MRC file",
                      help="An MRC file used when no reference volume is given; its header "
                           "gives the voxel size.")
        form.addParam("mask", params.PointerParam, pointerClass="VolumeMask, Volume",
                      allowsNull=True, label="Mask (optional)",
                      help="Mask of the reference, same box and sampling; default a soft "
                           "sphere of the particle diameter. It must be spherical: the local "
                           "statistics are computed once for every rotation.")
        form.addParam("invertContrast", params.BooleanParam, default=True,
                      label="Invert reference contrast",
                      help="Yes when the reference has bright density and the tomograms "
                           "dark particles (the usual cryo-ET case).")
        form.addParam("particleDiameter", params.FloatParam, default=300.0,
                      validators=[params.Positive], label="Particle diameter (Å)",
                      help="Sets the default mask, the binning of the global search, the "
                           "automatic angular step and the minimum distance between picks "
                           "(half of it).")
        form.addParam("symmetry", params.StringParam, default="c1", label="Symmetry",
                      help="Point group of the reference: c1, cN, dN, t, o or i (Cn about z, "
                           "Dn with a two-fold about x). Rotations are searched over its "
                           "asymmetric unit.")
        form.addParam("boxSize", params.IntParam, default=32, validators=[params.Positive],
                      label="Box size (voxels)",
                      help="Box size stored with the output coordinates (for extraction).")

        form.addSection(label="Search")
        form.addParam("angularSampling", params.FloatParam, default=0.0,
                      validators=[params.GE(0)], label="Angular sampling (degrees)",
                      help="Final angular precision. 0 = automatic: lowpass / diameter "
                           "radians (Crowther). The global search runs at a coarser step "
                           "and the candidates are refined locally to half of this.")
        form.addParam("lowpass", params.FloatParam, default=30.0, validators=[params.GE(0)],
                      label="Low-pass (Å)",
                      help="Resolution limit of the matching (soft edge). 0 = near Nyquist.")
        form.addParam("highpass", params.FloatParam, default=0.0, validators=[params.GE(0)],
                      label="High-pass (Å)",
                      help="Features larger than this are removed (e.g. 400 for ice "
                           "gradients). 0 = none.")
        form.addParam("tiltRange", params.StringParam, default="",
                      label="Tilt range (degrees)",
                      help="'min,max' of the tilt series, for the missing-wedge weighting of "
                           "the template. Empty = from each tomogram's acquisition.")
        form.addParam("whitening", params.BooleanParam, default=False,
                      label="Spectral whitening",
                      help="Flatten the tomogram's radial power spectrum (same filter on the "
                           "template) so that low frequencies do not dominate the score.")
        form.addParam("randomPhaseCorrection", params.BooleanParam, default=False,
                      label="Random-phase correction",
                      help="Also match a phase-randomised copy of the template with the same "
                           "rotations and subtract its best score per voxel in the global "
                           "search (flattens the background; doubles the search time).")
        form.addParam("tomogramMask", params.PointerParam, pointerClass="SetOfTomoMasks",
                      allowsNull=True, label="Tomogram masks (optional)",
                      help="Search only inside these masks (matched by tsId, same size as "
                           "the tomograms).")
        form.addParam("maskBeads", params.BooleanParam, default=True,
                      label="Mask gold beads",
                      help="Exclude very high-contrast objects: regions whose robust z-score "
                           "after smoothing over 25 Å exceeds the bead threshold are "
                           "replaced by the median and no pick may lie within a quarter "
                           "diameter of them.")
        form.addParam("beadSigma", params.FloatParam, default=14.0, condition="maskBeads",
                      expertLevel=params.LEVEL_ADVANCED, label="Bead threshold (sigma)",
                      help="Robust standard deviations that mark a bead.")
        form.addParam("coarseStep", params.FloatParam, default=0.0, validators=[params.GE(0)],
                      expertLevel=params.LEVEL_ADVANCED, label="Global search step (degrees)",
                      help="Angular step of the global search; 0 = automatic.")

        form.addSection(label="Picks")
        form.addParam("falsePositives", params.FloatParam, default=1.0,
                      validators=[params.Positive], label="Expected false positives",
                      help="Per tomogram. The score threshold is the one that many "
                           "background (voxel, rotation) tests exceed under a Gaussian "
                           "false-alarm model; the threshold and every score are given in "
                           "standard deviations.")
        form.addParam("maxPicks", params.IntParam, default=0, validators=[params.GE(0)],
                      label="Maximum picks per tomogram", help="Best-scoring kept; 0 = no limit.")
        form.addParam("maxTileVoxels", params.IntParam, default=32_000_000,
                      expertLevel=params.LEVEL_ADVANCED, label="Largest tile (voxels)",
                      help="Tomograms larger than this are searched in overlapping tiles "
                           "(about 50 bytes of memory per tile voxel: 1.6 GB by default).")
        form.addParallelSection(threads=2, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        prepare = self._insertFunctionStep(self.prepareReferenceStep, prerequisites=[])
        tsIds = list(tomograms_by_tsid(self.inputTomograms.get()))
        steps = [self._insertFunctionStep(self.matchStep, tsId, prerequisites=[prepare])
                 for tsId in tsIds]
        self._insertFunctionStep(self.createOutputStep, prerequisites=steps)

    # --------------------------- STEPS functions -----------------------------
    def prepareReferenceStep(self):
        volume, voxel, mask, name = self._readReference()
        samplingRate = self.inputTomograms.get().getSamplingRate()
        try:
            template, mask, achieved = prepare_template(
                volume, voxel, samplingRate, self.particleDiameter.get(), mask=mask,
                invert=self.invertContrast.get(), log=lambda line: self.info(f"{name}: {line}"))
        except ValueError as err:
            raise ValueError(f"Reference {name}: {err}") from err
        save_npz(self._templatePath(), template=template, mask=mask, voxel=achieved)
        self.info(f"reference {name}: box {template.shape[0]} at {achieved:.3f} Å/voxel, "
                  f"symmetry {self.symmetry.get()}")

    def matchStep(self, tsId):
        tomogram = tomograms_by_tsid(self.inputTomograms.get())[tsId]
        samplingRate = tomogram.getSamplingRate()
        data = np.load(self._templatePath())
        volume = tomogram_array(tomogram, mmap=True)
        tilt = self._tiltRange(tomogram)
        searchMask = self._searchMask(tsId, volume.shape)
        self.info(f"{tsId}: {volume.shape[::-1]} voxels, tilt range "
                  f"{'none' if tilt is None else tilt}")
        # the maps go straight to memory-mapped files (a big tomogram's never sit in
        # memory), published only when the search succeeded
        with create_mrc(self._scorePath(tsId), volume.shape, samplingRate) as scoreMrc, \
                create_mrc(self._anglePath(tsId), volume.shape, samplingRate) as angleMrc:
            try:
                result = match_template(
                    volume, samplingRate, data["template"], data["mask"],
                    self.particleDiameter.get(), tilt_range=tilt,
                    lowpass=self.lowpass.get() or None, highpass=self.highpass.get() or None,
                    whiten=self.whitening.get(),
                    symmetry=self.symmetry.get(), angular_sampling=self.angularSampling.get(),
                    coarse_step=self.coarseStep.get() or None,
                    random_phase=self.randomPhaseCorrection.get(),
                    false_positives=self.falsePositives.get(),
                    max_picks=self.maxPicks.get() or None,
                    search_mask=searchMask, mask_beads=self.maskBeads.get(),
                    bead_sigma=self.beadSigma.get(), max_tile_voxels=self.maxTileVoxels.get(),
                    progress=lambda line: self.info(f"{tsId}: {line}"),
                    n_threads=self._threadsPerStep(), score_out=scoreMrc.data,
                    angle_out=angleMrc.data)
            except (ValueError, MrcError) as err:
                raise ValueError(f"Tomogram {tsId}: {err}") from err
            for mrc in (scoreMrc, angleMrc):
                update_header_stats_slabs(mrc)
        st = result.stats
        save_npy(self._rotationsPath(tsId), result.coarse_rotations)
        n = len(result.positions)
        Picks(np.full(n, tsId), result.positions, np.zeros(n, int),
              homogeneous(np.reshape(result.rotations, (n, 3, 3))), result.scores, samplingRate,
              {"cc": np.asarray(result.cc)}).save(self._picksPath(tsId))
        with open(self._statsPath(tsId), "w") as fh:
            json.dump({k: v for k, v in st.items()}, fh, default=float, indent=1)
        self.info(f"{tsId}: {len(result.positions)} picks above {result.threshold:.2f} sigma "
                  f"({self.falsePositives.get():g} expected false positives); "
                  f"{st['n_coarse_rotations']} rotations at {st['coarse_step']:.1f} deg "
                  f"(binning {st['binning']}), {st['n_candidates']} candidates refined to "
                  f"{st['fine_step'] / 2:.1f} deg; {st['total_seconds']:.0f} s "
                  f"({st['rotations_per_second']:.1f} rotations/s); "
                  f"{st['n_beads_voxels']} voxels masked as beads")

    def createOutputStep(self):
        tomoSet = self.inputTomograms.get()
        tomograms = tomograms_by_tsid(tomoSet)
        samplingRate = tomoSet.getSamplingRate()
        picks = Picks.concatenate(Picks.load(self._picksPath(tsId)) for tsId in tomograms)
        coords = SetOfCoordinates3D.create(self._getPath(), prefix=OUTPUT_COORDINATES)
        coords.setSamplingRate(samplingRate)
        coords.setBoxSize(self.boxSize.get())
        coords.setPrecedents(self.inputTomograms)
        # core matrices (R @ z = the template's z-axis); convert stores Scipion's
        append_picks(coords, picks, tomograms)

        maps = SetOfTomograms.create(self._getPath(), prefix=OUTPUT_SCORE_MAPS)
        maps.copyInfo(tomoSet)
        for tsId, tomogram in tomograms.items():
            maps.append(tomogram_like(tomogram, self._scorePath(tsId)))
        self._defineOutputs(**{OUTPUT_COORDINATES: coords, OUTPUT_SCORE_MAPS: maps})
        self._defineSourceRelation(self.inputTomograms, coords)
        self._defineSourceRelation(self.inputTomograms, maps)

    # --------------------------- UTILS functions -----------------------------
    def _readReference(self):
        """(volume, voxel size, mask or None, name) of the reference given in the form."""
        ref = self.reference.get()
        if ref is not None:
            path = ref.getFileName().split(":")[0]
            name, voxel = path, ref.getSamplingRate()
        else:
            path = name = self.referenceFile.get()
            voxel = mrc_header_info(path)["voxel_size"]
        try:
            volume = read_mrc(path)
        except MrcError as err:
            raise ValueError(f"Reference {name}: {err}") from err
        mask = None
        if self.mask.get() is not None:
            mask = read_mrc(self.mask.get().getFileName().split(":")[0])
        return volume, voxel, mask, os.path.basename(name)

    def _tiltRange(self, tomogram):
        tilt = parse_tilt_range(self.tiltRange.get())
        if tilt is not None:
            return tilt
        acq = tomogram.getAcquisition()
        lo = None if acq is None else acq.getAngleMin()
        hi = None if acq is None else acq.getAngleMax()
        if lo is None or hi is None or not lo < hi:
            return None
        return float(lo), float(hi)

    def _searchMask(self, tsId, shape):
        if self.tomogramMask.get() is None:
            return None
        for tomoMask in self.tomogramMask.get():
            if tomoMask.getTsId() == tsId:
                mask = read_mrc(tomoMask.getFileName(), mmap=True)
                if mask.shape != shape:
                    raise ValueError(f"Tomogram {tsId}: its mask {tomoMask.getFileName()} has "
                                     f"shape {mask.shape[::-1]}, the tomogram {shape[::-1]}")
                return np.asarray(mask) > 0
        raise ValueError(f"Tomogram {tsId}: no mask with this tsId in the tomogram masks")

    def _templatePath(self):
        return self._getExtraPath("template.npz")

    def _scorePath(self, tsId):
        return self._getExtraPath(f"{tsId}_scores.mrc")

    def _anglePath(self, tsId):
        return self._getExtraPath(f"{tsId}_best_rotation_index.mrc")

    def _rotationsPath(self, tsId):
        return self._getExtraPath(f"{tsId}_rotations.npy")

    def _picksPath(self, tsId):
        return self._getExtraPath(f"{tsId}_picks.npz")

    def _statsPath(self, tsId):
        return self._getExtraPath(f"{tsId}_stats.json")

    def _threadsPerStep(self):
        return threads_per_step(self.numberOfThreads.get(), self.inputTomograms.get().getSize())

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        errors = []
        tomoSet = self.inputTomograms.get()
        if tomoSet is None:
            return ["Give the input tomograms."]
        try:
            tomograms = tomograms_by_tsid(tomoSet)
        except ValueError as err:
            return [str(err)]
        try:
            symmetry_matrices(self.symmetry.get())
        except ValueError as err:
            errors.append(f"Symmetry: {err}")
        try:
            tilt = parse_tilt_range(self.tiltRange.get())
        except ValueError as err:
            errors.append(f"Tilt range: {err}")
            tilt = ()
        lowpass, highpass = self.lowpass.get(), self.highpass.get()
        if lowpass and highpass and highpass <= lowpass:
            errors.append(f"High-pass ({highpass} Å) must be larger than the low-pass "
                          f"({lowpass} Å).")
        ref = self.reference.get()
        refShape = None
        if ref is None:
            path = self.referenceFile.get()
            if not path:
                errors.append("Give a reference volume or a reference MRC file.")
            elif not os.path.exists(path):
                errors.append(f"Reference file {path} does not exist.")
            else:
                try:
                    refShape = mrc_header_info(path)["shape"]
                except MrcError as err:
                    errors.append(f"Reference file {path}: {err}")
        else:
            path = ref.getFileName().split(":")[0]
            refShape = mrc_header_info(path)["shape"] if os.path.exists(path) else None
            if refShape is None:
                errors.append(f"Reference file {path} does not exist.")
        if self.mask.get() is not None:
            maskPath = self.mask.get().getFileName().split(":")[0]
            if not os.path.exists(maskPath):
                errors.append(f"Mask file {maskPath} does not exist.")
            elif refShape is not None and mrc_header_info(maskPath)["shape"] != refShape:
                errors.append(f"Mask {os.path.basename(maskPath)} has shape "
                              f"{mrc_header_info(maskPath)['shape'][::-1]}, the reference "
                              f"{tuple(refShape)[::-1]}: they must match.")
        for tsId, tomogram in tomograms.items():
            if not os.path.exists(tomogram.getFileName()):
                errors.append(f"{tsId}: tomogram file {tomogram.getFileName()} does not exist.")
            if tilt is None:
                acq = tomogram.getAcquisition()
                lo = None if acq is None else acq.getAngleMin()
                hi = None if acq is None else acq.getAngleMax()
                if lo is not None and hi is not None and lo < hi and not -90 <= lo < hi <= 90:
                    errors.append(f"{tsId}: the acquisition's tilt range ({lo}, {hi}) is "
                                  f"outside [-90, 90]; give the tilt range in the form.")
        return errors

    def _summary(self):
        if self.coordinates is None:
            return ["Output not ready yet."]
        lines = [f"{self.coordinates.getSize()} particles picked in "
                 f"{self.scoreMaps.getSize()} tomograms"]
        for tomogram in self.scoreMaps:
            tsId = tomogram.getTsId()
            path = self._statsPath(tsId)
            if os.path.exists(path):
                with open(path) as fh:
                    st = json.load(fh)
                lines.append(f"{tsId}: {st['n_picks']} picks, threshold "
                             f"{st['threshold_sigma']:.2f} sigma, {st['n_coarse_rotations']} "
                             f"rotations at {st['coarse_step']:.1f} deg refined to "
                             f"{st['fine_step'] / 2:.1f} deg, {st['total_seconds']:.0f} s")
        lines.append("Scores: refined FLCF in standard deviations of the background")
        return lines

    def _methods(self):
        if self.coordinates is None:
            return []
        return [f"Particles were picked by template matching (fast local normalised "
                f"cross-correlation with a missing-wedge-weighted template, symmetry "
                f"{self.symmetry.get()}, low-pass {self.lowpass.get():g} Å, coarse global "
                f"search and local refinement) with a threshold for "
                f"{self.falsePositives.get():g} expected false positives per tomogram."]
