"""Denoise tomograms with edge-enhancing diffusion (EED) or Beltrami flow (BFlow)."""
import pyworkflow.protocol.params as params
from pwem.protocols import EMProtocol
from pyworkflow.protocol.constants import STEPS_PARALLEL
from tomo.objects import SetOfTomograms
from tomo.protocols import ProtTomoBase

from tomopick.convert import threads_per_step, tomogram_like, tomograms_by_tsid
from tomopick.core import denoise
from tomopick.core.formats import MrcError, mrc_header_info

OUTPUT_NAME = "tomograms"
# the form's choices, in the order saved workflows store (by index); names are core's
METHOD_CHOICES = ["EED", "BFlow"]
EED, BFLOW = 0, 1          # indices of the `method` choices


class ProtTomoPickDenoise(EMProtocol, ProtTomoBase):
    """Edge-preserving denoising of tomograms.

    *EED* (Weickert's edge-enhancing anisotropic diffusion) smooths along
    membranes and filaments but hardly across them. *BFlow* (Beltrami flow)
    slows the smoothing down where the density changes fast. Both are
    explicit diffusion schemes computed slab by slab, so tomograms of any
    size run in about one volume of memory; the output tomograms keep the
    sampling rate, origin and tsIds of the input.
    """
    _label = "denoise tomogram"
    _possibleOutputs = {OUTPUT_NAME: SetOfTomograms}
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.tomograms = None

    # --------------------------- DEFINE param functions ----------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputSetTomograms", params.PointerParam, pointerClass="SetOfTomograms",
                      important=True, label="Tomograms",
                      help="The tomograms to denoise. Each one is filtered independently.")
        form.addParam("method", params.EnumParam, choices=METHOD_CHOICES, default=EED,
                      display=params.EnumParam.DISPLAY_HLIST, label="Method",
                      help="*EED*: edge-enhancing diffusion. The diffusion follows the "
                           "structures: full smoothing along edges (membranes, filaments), "
                           "little across them where the gradient is above the contrast "
                           "parameter K.\n"
                           "*BFlow*: Beltrami flow. Smoothing whose speed drops with the "
                           "local gradient; it has no contrast parameter (the grey-value "
                           "scale is set from the tomogram's own gradients).")

        group = form.addGroup("Edge-enhancing diffusion", condition=f"method == {EED}")
        group.addParam("SigmaGaussian", params.FloatParam, default=0.5,
                       condition=f"method == {EED}", validators=[params.GE(0)],
                       label="Gaussian sigma (voxels)",
                       help="Standard deviation of the Gaussian that pre-smooths the "
                            "tomogram before the gradient that steers the diffusion is "
                            "measured (0 = none). Larger values make the edge directions "
                            "robust to noise but ignore fine structures.")
        group.addParam("nIter", params.IntParam, default=10, condition=f"method == {EED}",
                       validators=[params.GE(0)], label="Iterations",
                       help="Number of diffusion steps. The total diffusion time is "
                            "iterations x time step; in flat regions it smooths like a "
                            "Gaussian of sigma = sqrt(2 x time).")
        group.addParam("Lambda", params.FloatParam, default=-1,
                       condition=f"method == {EED}", label="Lambda (K)",
                       help="Contrast parameter K, in grey values per voxel: gradients "
                            "clearly above K are edges (kept), gradients below are noise "
                            "(smoothed).\n-1 (any negative value): automatic, K is "
                            "recomputed at every iteration as the 90% quantile of the "
                            "gradient magnitude of the current tomogram.\n0 is not allowed.")
        group.addParam("TimeStep", params.FloatParam, default=0.1,
                       condition=f"method == {EED}", validators=[params.GT(0)],
                       label="Time step",
                       help="Step of the explicit scheme. Above the stability bound 1/6 "
                            "it is clamped to 1/6 (and the log says so).")

        group = form.addGroup("Beltrami flow", condition=f"method == {BFLOW}")
        group.addParam("nIterBflow", params.IntParam, default=70,
                       condition=f"method == {BFLOW}", validators=[params.GE(0)],
                       label="Iterations",
                       help="Number of Beltrami flow steps.")
        group.addParam("TimeStepBflow", params.FloatParam, default=0.15,
                       condition=f"method == {BFLOW}", validators=[params.GT(0)],
                       label="Time step",
                       help="Step of the explicit scheme (used as given, unlike "
                            "tomo3d's). Above the stability bound 1/6 it is clamped to "
                            "1/6 (and the log says so).")
        form.addParallelSection(threads=4, mpi=0)

    # --------------------------- INSERT steps functions ----------------------
    def _insertAllSteps(self):
        # file names and thread counts go in as step arguments: parallel steps must
        # not share the input set's database connection
        tomograms = tomograms_by_tsid(self.inputSetTomograms.get())
        threads = threads_per_step(self.numberOfThreads.get(), len(tomograms))
        steps = [self._insertFunctionStep(self.denoiseStep, tsId, tomogram.getFileName(),
                                          tomogram.getSamplingRate(), threads,
                                          prerequisites=[])
                 for tsId, tomogram in tomograms.items()]
        self._insertFunctionStep(self.createOutputStep, prerequisites=steps)

    # --------------------------- STEPS functions -----------------------------
    def denoiseStep(self, tsId, inputPath, samplingRate, threads):
        methodName = METHOD_CHOICES[self.method.get()]

        def progress(iteration, total, info):
            extra = ", ".join(f"{k} = {v:.4g}" for k, v in info.items())
            self.info(f"{tsId}: {methodName} iteration {iteration}/{total} ({extra})")

        self.info(f"{tsId}: {methodName} of {inputPath} with {threads} thread(s)")
        coreParams = self._coreParams()
        for message in self._warnings():
            # clamped here rather than in the core: warnings.catch_warnings is not
            # thread-safe and steps run in parallel threads
            self.warning(f"{tsId}: {message}")
        try:
            result = denoise.denoise_file(inputPath, self._outputPath(tsId),
                                          method=methodName, n_threads=threads,
                                          progress=progress, voxel_size=samplingRate,
                                          **coreParams)
        except (ValueError, MrcError) as err:
            raise ValueError(f"Tomogram {tsId}: {err}") from err
        if result["passed_through"]:
            self.info(f"{tsId}: constant tomogram, copied unchanged")
        self.info(f"{tsId}: done, written to {self._outputPath(tsId)}")

    def createOutputStep(self):
        inputSet = self.inputSetTomograms.get()
        outputSet = SetOfTomograms.create(self._getPath(), prefix=OUTPUT_NAME)
        outputSet.copyInfo(inputSet)
        for tsId, tomogram in tomograms_by_tsid(inputSet).items():
            outputSet.append(tomogram_like(tomogram, self._outputPath(tsId)))
        self._defineOutputs(**{OUTPUT_NAME: outputSet})
        self._defineSourceRelation(self.inputSetTomograms, outputSet)

    # --------------------------- UTILS functions -----------------------------
    def _outputPath(self, tsId):
        return self._getExtraPath(f"{tsId}.mrc")

    def _coreParams(self):
        """Form values under the names of `tomopick.core.denoise.denoise`, steps clamped."""
        return dict(sigma=self.SigmaGaussian.get(), n_iter=self.nIter.get(),
                    lam=self.Lambda.get(),
                    time_step=denoise.clamp_time_step(self.TimeStep.get(), "EED", warn=False),
                    n_iter_bflow=self.nIterBflow.get(),
                    time_step_bflow=denoise.clamp_time_step(self.TimeStepBflow.get(), "BFlow",
                                                            warn=False))

    # --------------------------- INFO functions ------------------------------
    def _validate(self):
        errors = []
        tomos = self.inputSetTomograms.get()
        if tomos is None:
            return ["Give the tomograms to denoise."]
        try:
            byTsId = tomograms_by_tsid(tomos)
        except ValueError as err:
            return [str(err)]
        for tsId, tomogram in byTsId.items():
            try:
                shape = mrc_header_info(tomogram.getFileName())["shape"]
            except MrcError as err:
                errors.append(f"Tomogram {tsId}: {err}")
                continue
            if shape[0] < 2:
                errors.append(f"Tomogram {tsId}: {tomogram.getFileName()} is not a 3D volume "
                              f"(shape {shape})")
        if self.method.get() == EED:
            if self.Lambda.get() == 0:
                errors.append("Lambda (K) must be > 0 (fixed contrast) or negative "
                              "(automatic); 0 is not allowed.")
        return errors

    def _warnings(self):
        step = self.TimeStep.get() if self.method.get() == EED else self.TimeStepBflow.get()
        if step is None or step <= 0:
            return []
        bound = denoise.clamp_time_step(step, METHOD_CHOICES[self.method.get()], warn=False)
        if bound < step:
            return [f"The time step {step:g} exceeds the stability bound {bound:.4f} of the "
                    f"explicit scheme; it is clamped to {bound:.4f}."]
        return []

    def _summary(self):
        if self.tomograms is None:
            return ["Output not ready yet."]
        return [f"{self.tomograms.getSize()} tomograms denoised with "
                f"{self._methodDescription()}."]

    def _methods(self):
        if self.tomograms is None:
            return []
        return [f"The tomograms were denoised with {self._methodDescription()} "
                "(tomopick, explicit scheme, Neumann borders)."]

    def _methodDescription(self):
        if self.method.get() == EED:
            lam = self.Lambda.get()
            k = "automatic K (90% gradient quantile)" if lam < 0 else f"K = {lam:g}"
            return (f"edge-enhancing diffusion ({self.nIter.get()} iterations of time step "
                    f"{self.TimeStep.get():g}, Gaussian sigma {self.SigmaGaussian.get():g} "
                    f"voxels, {k})")
        return (f"Beltrami flow ({self.nIterBflow.get()} iterations of time step "
                f"{self.TimeStepBflow.get():g})")
