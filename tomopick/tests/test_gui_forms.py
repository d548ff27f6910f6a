"""Every protocol form opens in the real pyworkflow Tk form window (under Xvfb).

Checks that the form builds and shows a widget for each parameter name that
SPEC.md fixes (saved workflows and other plugins use these names).
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

SPEC_PARAMS = {
    "ProtTomoPickImportTomograms": ["filesPath", "filesPattern", "samplingRate", "binning",
                                    "setOrigCoord", "x", "y", "z", "acquisitionAngleMax",
                                    "acquisitionAngleMin", "step", "tiltAxisAngle"],
    "ProtTomoPickImportCoordinates": ["filesPath", "filesPattern", "importFrom", "inputTomograms",
                                      "samplingRate", "boxSize", "outputType"],
    "ProtTomoPickDenoise": ["inputSetTomograms", "method", "SigmaGaussian", "nIter", "Lambda",
                            "TimeStep", "nIterBflow", "TimeStepBflow", "numberOfThreads"],
    "ProtTomoPickVectorialPicking": ["inputTomograms", "boxSize", "modelType", "inputMeshes",
                                     "pointsFile"],
    "ProtTomoPickModelWorkflow": ["inputMeshes", "boxSize", "modelType", "meshParameter", "maxTr",
                                  "doRefineMesh", "subDivision", "cropping", "dz", "dphi",
                                  "radius"],
    "ProtTomoPickPickET": ["inputTomograms", "featureExtraction", "clustering", "localization",
                           "neighborhoodSize", "maxNeighborhoodsForFitting", "zFitRange",
                           "zPickRange", "particleClusterId", "particleDiameter", "minDistance",
                           "boxSize"],
    "ProtTomoPickExtraction": ["inputCoordinates", "tomoSource", "inputTomograms", "boxSize",
                               "downFactor", "doInvert", "doNormalize", "normproc",
                               "outOfBounds"],
    "ProtTomoPickApplyAlignment": ["inputSubtomograms", "interpolation"],
    "ProtTomoPickConsensus": ["inputCoordinates", "consensusRadius", "consensus", "mode"],
    "ProtTomoPickTemplateMatching": ["inputTomograms", "reference", "referenceFile", "mask",
                                     "invertContrast", "particleDiameter", "symmetry",
                                     "angularSampling", "lowpass", "highpass", "tiltRange",
                                     "randomPhaseCorrection", "falsePositives", "maxPicks",
                                     "tomogramMask", "boxSize"],
    "ProtTomoPickManualPicking": ["inputTomograms", "boxSize", "inputCoordinates", "pointsFile"],
    "ProtTomoPickLearnedPicking": ["inputTomograms", "positives", "negatives", "previousRun",
                                   "particleDiameter", "boxSize", "threshold", "maxPicks",
                                   "seed"],
    "ProtTomoPickInitialModel": ["inputSubtomograms", "symmetry", "particleDiameter",
                                 "reference", "angularSampling", "numberOfIterations",
                                 "batchSize", "lowpass", "shrink", "seed"],
}


@pytest.fixture(scope="module")
def xserver():
    if os.environ.get("DISPLAY") is None:
        xvfb = shutil.which("Xvfb")
        if xvfb is None:
            pytest.skip("no X server: install Debian's xvfb (.ci/run does)")
        display = f":{90 + os.getpid() % 100}"
        proc = subprocess.Popen([xvfb, display, "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        yield display
        proc.terminate()
    else:
        yield os.environ["DISPLAY"]


def test_every_protocol_form_opens_with_its_spec_parameters(xserver, tmp_path):
    env = dict(os.environ, DISPLAY=xserver)
    out = subprocess.run([sys.executable, "-m", "tomopick.tests.form_snapshots", str(tmp_path),
                          *SPEC_PARAMS], env=env, capture_output=True, text=True, timeout=300)
    results = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            results[entry["class"]] = entry
    assert set(results) == set(SPEC_PARAMS), out.stderr[-3000:]
    problems = []
    for name, expected in SPEC_PARAMS.items():
        entry = results[name]
        if entry["error"]:
            problems.append(f"{name}: {entry['error']}")
            continue
        missing = [p for p in expected if p not in entry["params"]]
        if missing:
            problems.append(f"{name}: no widget for {missing}")
    assert not problems, "\n".join(problems)
    if shutil.which("import"):
        for name in SPEC_PARAMS:
            assert (tmp_path / f"{name}.png").stat().st_size > 5000, f"blank screenshot of {name}"
