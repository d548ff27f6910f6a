"""Test session set-up: the Scipion environment, before anything imports pyworkflow.

pyworkflow reads SCIPION_* variables once, when first imported, and tomopick's
package imports pwem; so environment.py is loaded by path here, not through
the package. Each test process gets its own throw-away SCIPION_USER_DATA, so
parallel workers (pytest -n) never share a project: the controller's folder is
inherited by the xdist workers, so each worker uses a subfolder named after it
(PYTEST_XDIST_WORKER).
"""
import importlib.util
import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")

_spec = importlib.util.spec_from_file_location(
    "_tomopick_environment", os.path.join(os.path.dirname(__file__), "tomopick", "environment.py"))
_environment = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_environment)
if "SCIPION_USER_DATA" not in os.environ:
    os.environ["SCIPION_USER_DATA"] = tempfile.mkdtemp(prefix="tomopick-tests-")
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker and os.path.basename(os.environ["SCIPION_USER_DATA"]) != _worker:
    os.environ["SCIPION_USER_DATA"] = os.path.join(os.environ["SCIPION_USER_DATA"], _worker)
    os.makedirs(os.environ["SCIPION_USER_DATA"], exist_ok=True)
_environment.set_defaults()
