"""`tomopick run` on the saved workflow templates, headless, on small phantoms.

The tutorial's non-directional workflow is also scored against the truth.
"""
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
    "picket": [("ProtTomoPickImportTomograms", "Tomograms"),
                        ("ProtTomoPickDenoise", "tomograms"), ("ProtTomoPickPickET", "coordinates"),
                        ("ProtTomoPickPickET", "segmentations"),
                        ("ProtTomoPickConsensus", "consensusCoordinates"),
                        ("ProtTomoPickExtraction", "subtomograms"),
                        ("ProtTomoPickApplyAlignment", "outputAverage")],
    "non_directional": [("ProtTomoPickImportTomograms", "Tomograms"),
                        ("ProtTomoPickDenoise", "tomograms"),
                        ("ProtTomoPickManualPicking", "coordinates"),
                        ("ProtTomoPickExtraction", "subtomograms"),
                        ("ProtTomoPickInitialModel", "average"),
                        ("ProtTomoPickTemplateMatching", "coordinates"),
                        ("ProtTomoPickTemplateMatching", "scoreMaps"),
                        ("ProtTomoPickLearnedPicking", "coordinates"),
                        ("ProtTomoPickPickET", "coordinates"),
                        ("ProtTomoPickConsensus", "consensusCoordinates"),
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


@pytest.mark.parametrize("template", ["directional", "picket"])
def test_template_runs_every_protocol_to_its_outputs(template, phantom_dir):
    project = f"wf_{template}_{os.getpid()}"
    fields = ["--set", f"tomoDir={phantom_dir}", "--set", "nIter=2", "--set", "boxSize=24"]
    if template == "directional":
        fields += ["--set", f"pointsFile={phantom_dir / 'points.csv'}"]
    result = _run(template, "--project", project, *fields)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    runs = Manager().loadProject(project).getRuns()
    assert len(runs) == len(set(c for c, _ in EXPECTED_OUTPUTS[template])) + \
        (1 if template == "picket" else 0)
    _assert_outputs(runs, template)


def _assert_outputs(runs, template):
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


def test_tutorial_non_directional_workflow_against_the_truth(tmp_path):
    """Manual picks -> initial model -> template matching + learned picking + PickET -> consensus.

    A small lamella of real ribosomes (or the simulator's ribosome-like class when the
    shared data folder is absent) at SNR 0.3 with a second class and gold: every picker
    is scored one-to-one against the ribosomes at half a diameter.
    """
    phantom, class_id = demo.simulate_ribosomes(shape=(40, 112, 112), n_particles=24, seed=5,
                                                log=lambda *_: None)
    phantom.save(str(tmp_path), demo.TOMO_ID)
    points = tmp_path / "manual.csv"
    assert demo.write_manual_picks(phantom, class_id, str(points), count=12, seed=5) == 12
    project = f"wf_tutorial_{os.getpid()}"
    result = _run("non_directional", "--project", project, "--set", f"tomoDir={tmp_path}",
                  "--set", f"pointsFile={points}", "--set", "nIter=1", "--set", "boxSize=24",
                  "--set", "modelIterations=4", "--set", "modelBatchSize=8")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    runs = sorted(Manager().loadProject(project).getRuns(), key=lambda r: r.getObjId())
    assert len(runs) == 11
    _assert_outputs(runs, "non_directional")
    scores = demo.score_tutorial_run(phantom, class_id, [{"protocol": r} for r in runs], 24)
    summary = str(scores)
    print(summary)
    # at SNR 0.3 with a model made from 12 picks, matching finds nearly every ribosome
    assert scores["template matching"]["f1"] >= 0.85, summary
    assert scores["learned picking"]["f1"] >= 0.8, summary
    # PickET picks every particle class: the consensus of two of three keeps the ribosomes
    for picker in ("template matching", "learned picking", "PickET"):
        assert scores["consensus"]["precision"] >= scores[picker]["precision"], summary
    assert scores["consensus"]["precision"] > scores["PickET"]["precision"], summary
    assert scores["consensus"]["recall"] >= 0.8, summary
    # orientations in the model's frame: a 30-degree search refined locally
    assert scores["orientation_median_deg"] < 10.0, summary
    assert scores["model_correlation"] >= 0.7, summary
    assert scores["average_correlation"] >= 0.7, summary
