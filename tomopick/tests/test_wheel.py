"""A pip-installed tomopick works: build the wheel, install it into a fresh virtual
environment and run the 'directional' template headless from it.

`make test` installs tomopick in editable mode, so no other test sees what a
wheel leaves out (0.1.0 shipped no workflow templates). The fresh environment
reuses the Scipion stack of this one through a .pth line (a path, not a site
dir: the editable install's hooks here stay out), so nothing is downloaded
but, when this environment lacks the `wheel` package, the build backend.
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import numpy as np

from tomopick import demo
from tomopick.core import simulate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _build_wheel(tmp_path):
    """The wheel of the sources, built from a copy (the checkout stays clean)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "requirements.txt", "README.rst"):
        shutil.copy(os.path.join(REPO, name), source / name)
    shutil.copytree(os.path.join(REPO, "tomopick"), source / "tomopick",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
               "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)]
    try:
        import wheel  # noqa: F401 (setuptools < 70.1 builds wheels with it)
    except ImportError:
        # an isolated build fetches setuptools and wheel from the package index
        command = [c for c in command if c not in ("--no-index", "--no-build-isolation")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    wheels = glob.glob(str(tmp_path / "dist" / "*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _fresh_venv(tmp_path, wheel_path):
    """A new venv seeing this one's packages (not its tomopick), with the wheel installed."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "outer_stack.pth"), "w") as handle:
        handle.write(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                    "--no-index", "--quiet", wheel_path], check=True, timeout=300)
    return venv, python


def test_wheel_ships_the_templates_and_runs_the_directional_workflow(tmp_path):
    wheel_path = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel_path).namelist()
    for required in ("tomopick/protocols.conf", "tomopick/workflows/directional.json.template",
                     "tomopick/workflows/non_directional.json.template",
                     "tomopick/workflows/picket.json.template"):
        assert required in names, f"{required} missing from {os.path.basename(wheel_path)}"

    venv, python = _fresh_venv(tmp_path, wheel_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(SCIPION_PYTHON=python, PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    where = subprocess.run([python, "-c", "import tomopick; print(tomopick.__file__)"],
                           capture_output=True, text=True, env=env, cwd=str(tmp_path),
                           check=True).stdout.strip()
    assert where.startswith(str(venv)), f"tomopick imported from {where}, not the wheel"

    # a small phantom with one vesicle, and the user's clicks on it
    data = tmp_path / "data"
    data.mkdir()
    phantom = simulate.simulate_tomogram(shape=(40, 96, 96), n_particles=6, n_vesicles=1,
                                         proteins_per_vesicle=6, snr=3.0, seed=4,
                                         tomo_id=demo.TOMO_ID)
    phantom.save(str(data), demo.TOMO_ID)
    picked = demo.write_vesicle_points(phantom, str(data / "points.csv"), seed=4)
    assert picked, "the phantom (seed 4) has a spherical vesicle"
    project = f"wheel_{os.getpid()}"
    result = subprocess.run(
        [str(venv / "bin" / "tomopick"), "run", "directional", "--project", project,
         "--set", f"tomoDir={data}", "--set", f"pointsFile={data / 'points.csv'}",
         "--set", "nIter=2", "--set", "boxSize=24", "--set", "cropping=6"],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    # the model workflow's particles, read as any Scipion plugin reads them
    from pyworkflow.project import Manager
    from tomo.constants import BOTTOM_LEFT_CORNER
    from tomo.utils import normalFromMatrix

    from tomopick.core.rotations import angle_between
    runs = Manager().loadProject(project).getRuns()
    assert all(run.isFinished() for run in runs)
    workflow = next(r for r in runs if r.getClassName() == "ProtTomoPickModelWorkflow")
    assert workflow.getWorkingDir() and os.path.isdir(workflow.getWorkingDir())
    vesicle = phantom.vesicles[picked[0]]
    positions, normals = [], []
    for coord in workflow.coordinates.iterCoordinates():
        positions.append(coord.getPosition(BOTTOM_LEFT_CORNER))
        normals.append(normalFromMatrix(coord.getMatrix()))
    positions = np.array(positions)
    radius = float(np.mean(vesicle["semi_axes"]))
    distance = np.abs(np.linalg.norm(positions - vesicle["center"], axis=1) - radius)
    assert len(positions) > 20
    # clicks jittered by 1 voxel: the fitted sphere is within a voxel of the truth
    assert np.median(distance) < 1.0
    err = angle_between(np.array(normals), simulate.vesicle_normals(vesicle, positions))
    assert np.median(err) < 5.0 and err.max() < 30.0
    average = next(r for r in runs if r.getClassName() == "ProtTomoPickApplyAlignment")
    assert os.path.isfile(average.outputAverage.getFileName())
