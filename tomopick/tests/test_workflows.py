"""`tomopick run` on the saved workflow templates, headless, on a small phantom."""
import os
import subprocess
import sys

import pytest
from pyworkflow.project import Manager

from tomopick import demo
from tomopick.core import simulate

EXPECTED_OUTPUTS = {
    "directional": [("ProtTomoPickImportTomograms", "Tomograms"), ("ProtTomoPickDenoise", "tomograms"),
                    ("ProtTomoPickVectorialPicking", "meshes"), ("ProtTomoPickModelWorkflow", "coordinates"),
                    ("ProtTomoPickExtraction", "subtomograms"),
                    ("ProtTomoPickApplyAlignment", "outputAverage")],
    "non_directional": [("ProtTomoPickImportTomograms", "Tomograms"),
                        ("ProtTomoPickDenoise", "tomograms"), ("ProtTomoPickPickET", "coordinates"),
                        ("ProtTomoPickPickET", "segmentations"),
                        ("ProtTomoPickConsensus", "consensusCoordinates"),
                        ("ProtTomoPickExtraction", "subtomograms"),
                        ("ProtTomoPickApplyAlignment", "outputAverage")],
}


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("workflow_data")
    phantom = simulate.simulate_tomogram(shape=(48, 112, 112), n_particles=16, n_vesicles=1,
                                         proteins_per_vesicle=8, snr=2.0, seed=3,
                                         tomo_id=demo.TOMO_ID)
    phantom.save(str(directory), demo.TOMO_ID)
    assert demo.write_vesicle_points(phantom, str(directory / "points.csv"), seed=3)
    return directory


def _run(*args):
    return subprocess.run([sys.executable, "-m", "tomopick.cli", "run", *args],
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("template", ["directional", "non_directional"])
def test_template_runs_every_protocol_to_its_outputs(template, phantom_dir):
    project = f"wf_{template}_{os.getpid()}"
    fields = ["--set", f"tomoDir={phantom_dir}", "--set", "nIter=2", "--set", "boxSize=24"]
    if template == "directional":
        fields += ["--set", f"pointsFile={phantom_dir / 'points.csv'}"]
    result = _run(template, "--project", project, *fields)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    runs = Manager().loadProject(project).getRuns()
    assert len(runs) == len(set(c for c, _ in EXPECTED_OUTPUTS[template])) + \
        (1 if template == "non_directional" else 0)
    assert all(run.isFinished() for run in runs)
    for class_name, output in EXPECTED_OUTPUTS[template]:
        produced = [getattr(run, output, None) for run in runs if run.getClassName() == class_name]
        assert any(obj is not None for obj in produced), f"{class_name} has no {output}"
        sets = [obj for obj in produced if obj is not None and hasattr(obj, "getSize")]
        assert all(obj.getSize() > 0 for obj in sets), f"{class_name}.{output} is empty"


def test_failing_protocol_makes_run_exit_non_zero_with_its_error(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tomo_1.mrc").write_bytes(b"MRC? no, just a few bytes")
    result = _run("directional", "--project", f"wf_failing_{os.getpid()}",
                  "--set", f"tomoDir={bad}")
    assert result.returncode == 1
    assert "FAILED" in result.stderr and "tomo_1" in result.stderr


def test_unknown_template_field_is_refused():
    result = _run("directional", "--project", f"wf_unknown_{os.getpid()}", "--set", "noSuchField=1")
    assert result.returncode == 2
    assert "noSuchField" in result.stderr
