"""Killed runs continue where they stopped: a protocol (Scipion's Continue) and `tomopick run`.

A denoising protocol with one step per tomogram is killed with SIGKILL right
after its first tomogram step is recorded finished. Relaunched in resume mode,
the finished step is not run again (its step record and its output file are
untouched), the others are, and the outputs equal an uninterrupted run's.
Nothing is registered while the protocol is dead.
"""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from pyworkflow.project import Manager
from pyworkflow.protocol.constants import MODE_RESUME
from pyworkflow.protocol.protocol import StepSet

from tomopick.core import denoise
from tomopick.core.formats import read_mrc, write_mrc
from tomopick.protocols import ProtTomoPickDenoise
from tomopick.tests.protocol_base import TomoPickProtocolTest

TSIDS = ("TS_0", "TS_1", "TS_2")
# Beltrami flow, one thread: each tomogram step takes a few seconds, time to kill in between
N_ITER = 200
SLOW = dict(method=1, nIterBflow=N_ITER, TimeStepBflow=0.1, numberOfThreads=1)


def step_records(stepsFile):
    """[(funcName, args, status, initTime, endTime)] of a run's steps.sqlite, in order."""
    if not os.path.exists(stepsFile):
        return []
    steps = StepSet(filename=stepsFile)
    try:
        return [(s.funcName.get(), s.argsStr.get(), s.getStatus(), str(s.initTime.get()),
                 str(s.endTime.get())) for s in steps]
    except Exception:  # the run is writing it right now
        return []
    finally:
        steps.close()


def wait_for_finished_step(stepsFile, funcName, timeout=120):
    """Poll a run's steps until one `funcName` step is finished; return the records."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        records = step_records(stepsFile)
        if any(r[0] == funcName and r[2] == "finished" for r in records):
            return records
        time.sleep(0.1)
    raise AssertionError(f"no {funcName} step finished in {timeout} s: {step_records(stepsFile)}")


class TestKillAndResume(TomoPickProtocolTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        rng = np.random.default_rng(7)
        for tsId in TSIDS:
            write_mrc(os.path.join(cls.dataDir, f"{tsId}.mrc"),
                      rng.normal(size=(32, 80, 80)).astype(np.float32), 10.0)
        cls.importProt = cls.importTomograms(pattern="{TS}.mrc")

    def _denoiser(self):
        return self.newProtocol(ProtTomoPickDenoise,
                                inputSetTomograms=self.pointer(self.importProt, "Tomograms"),
                                **SLOW)

    def test_killed_protocol_continues_without_redoing_finished_steps(self):
        # what an uninterrupted run writes (test_protocol_denoise: the protocol's output is
        # exactly the core filter's)
        expected = {t.getTsId(): denoise.beltrami_flow(read_mrc(t.getFileName()), n_iter=N_ITER,
                                                       time_step=0.1)
                    for t in self.importProt.Tomograms}

        prot = self._denoiser()
        self.proj.launchProtocol(prot, wait=False)
        before = wait_for_finished_step(prot.getStepsFile(), "denoiseStep")
        self.proj._updateProtocol(prot)  # the pid the protocol stored for itself
        os.kill(prot.getPid(), signal.SIGKILL)
        time.sleep(0.5)
        self.proj._updateProtocol(prot)
        self.assertTrue(prot.isFailed(), prot.getStatus())
        self.assertIn("not found running", prot.getErrorMessage())
        self.assertEqual(self.registeredOutputs(prot), [],
                         "the killed run registered an output")

        # what the killed run left: the finished tomogram(s), complete; at most a .part
        finished = [json.loads(r[1])[0] for r in before
                    if r[0] == "denoiseStep" and r[2] == "finished"]
        left = {os.path.basename(p) for p in glob.glob(prot._getExtraPath("*"))}
        self.assertTrue({f"{t}.mrc" for t in finished} <= left, left)
        for name in left:
            self.assertTrue(name.endswith(".part") or name[:-4] in finished or
                            name[:-4] in TSIDS, name)
            if name.endswith(".mrc"):
                np.testing.assert_array_equal(read_mrc(prot._getExtraPath(name)),
                                              expected[name[:-4]])
        stamps = {t: os.stat(prot._getExtraPath(f"{t}.mrc")).st_mtime_ns for t in finished}

        prot.runMode.set(MODE_RESUME)
        self.launch(prot)
        after = step_records(prot.getStepsFile())
        self.assertEqual(len(after), len(before))
        self.assertTrue(all(r[2] == "finished" for r in after), after)
        for old, new in zip(before, after):
            if old[2] == "finished":  # kept: same step record, start and end times
                self.assertEqual(old, new)
            else:
                self.assertGreater(new[3], max(r[4] for r in before if r[2] == "finished"))
        for tsId in finished:  # its file was not rewritten either
            self.assertEqual(os.stat(prot._getExtraPath(f"{tsId}.mrc")).st_mtime_ns,
                             stamps[tsId])
        with open(prot.getStdoutLog()) as handle:
            self.assertIn("RESUMING", handle.read())
        self.assertEqual(sorted(t.getTsId() for t in prot.tomograms), list(TSIDS))
        for tomo in prot.tomograms:
            np.testing.assert_array_equal(read_mrc(tomo.getFileName()), expected[tomo.getTsId()])
        self.assertEqual(glob.glob(prot._getExtraPath("*.part")), [])


def _workflow(dataDir):
    """import -> slow denoise (one step per tomogram) -> quick EED on its output."""
    return [
        {"object.className": "ProtTomoPickImportTomograms", "object.id": "1",
         "object.label": "import", "filesPath": dataDir, "filesPattern": "{TS}.mrc"},
        {"object.className": "ProtTomoPickDenoise", "object.id": "2", "object.label": "slow",
         "inputSetTomograms": "1.Tomograms", **SLOW},
        {"object.className": "ProtTomoPickDenoise", "object.id": "3", "object.label": "eed",
         "inputSetTomograms": "2.tomograms", "method": 0, "nIter": 2},
    ]


def test_killed_tomopick_run_continues_where_it_stopped(tmp_path):
    rng = np.random.default_rng(8)
    volumes = {}
    for tsId in TSIDS:
        volumes[tsId] = rng.normal(size=(32, 80, 80)).astype(np.float32)
        write_mrc(tmp_path / f"{tsId}.mrc", volumes[tsId], 10.0)
    workflow = tmp_path / "workflow.json"
    workflow.write_text(json.dumps(_workflow(str(tmp_path))))
    name = f"resume_run_{os.getpid()}"
    command = [sys.executable, "-m", "tomopick.cli", "run", str(workflow), "--project", name]
    # its own session: the kill takes the protocol process it started with it, as a
    # cancelled job or a lost node would
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        projectPath = os.path.join(os.environ["SCIPION_USER_DATA"], "projects", name)
        pattern = os.path.join(projectPath, "Runs", "*_ProtTomoPickDenoise", "logs")
        deadline = time.time() + 120
        while not glob.glob(pattern):  # the slow denoise (the first one) has started
            assert time.time() < deadline and first.poll() is None, first.stdout.read()
            time.sleep(0.2)
        logs = sorted(glob.glob(pattern))[0]
        before = wait_for_finished_step(os.path.join(logs, "steps.sqlite"), "denoiseStep")
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        first.wait()
        first.stdout.close()
    ids = sorted(r.getObjId() for r in Manager().loadProject(name).getRuns())
    assert len(ids) == 3, ids  # import, slow, eed
    importEnd = str(Manager().loadProject(name).getProtocol(ids[0]).endTime.get())

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "continuing the run of workflow.json" in again.stdout
    assert "(earlier run)" in again.stdout.splitlines()[1]  # the import is not rerun

    project = Manager().loadProject(name)
    runs = project.getRuns()
    assert len(runs) == 3 and all(r.isFinished() for r in runs), \
        [(r.getRunName(), r.getStatus()) for r in runs]
    assert sorted(r.getObjId() for r in runs) == ids
    assert str(project.getProtocol(ids[0]).endTime.get()) == importEnd
    slow = project.getProtocol(ids[1])
    after = step_records(slow.getStepsFile())
    kept = [old for old in before if old[2] == "finished"]
    assert kept and all(old in after for old in kept), (kept, after)
    for tomo in slow.tomograms:
        np.testing.assert_array_equal(
            read_mrc(tomo.getFileName()),
            denoise.beltrami_flow(volumes[tomo.getTsId()], n_iter=N_ITER, time_step=0.1))
    assert project.getProtocol(ids[2]).tomograms.getSize() == 3
