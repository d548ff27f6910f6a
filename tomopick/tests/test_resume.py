"""Killed runs continue where they stopped: a protocol (Scipion's Continue) and `tomopick run`.

A protocol with one step per tomogram (denoising; template matching) is
killed with SIGKILL right after its first tomogram step is recorded finished.
Relaunched in resume mode, the finished step is not run again (its step
record and its output files are untouched), the others are, and the outputs
equal an uninterrupted run's. Nothing is registered while the protocol is dead.
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

from tomopick.convert import picks_from_coordinates
from tomopick.core import denoise
from tomopick.core.formats import read_mrc, write_mrc
from tomopick.protocols import ProtTomoPickDenoise, ProtTomoPickTemplateMatching
from tomopick.tests.protocol_base import TomoPickProtocolTest

TSIDS = ("TS_0", "TS_1", "TS_2")
# Beltrami flow, one thread: each tomogram step takes a few seconds, time to kill in between
N_ITER = 200
SLOW = dict(method=1, nIterBflow=N_ITER, TimeStepBflow=0.1, numberOfThreads=1)
# dark Gaussian blobs (sigma 2 voxels, 2.5 x the noise) in each tomogram, (x, y, z):
# particles for template matching
BLOBS = ((20, 20, 12), (60, 22, 20), (22, 58, 16), (58, 60, 12), (40, 40, 20))


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
        z, y, x = np.indices((32, 80, 80))
        particles = sum(np.exp(-((x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2) / 8.0)
                        for bx, by, bz in BLOBS)
        for tsId in TSIDS:
            write_mrc(os.path.join(cls.dataDir, f"{tsId}.mrc"),
                      (rng.normal(size=(32, 80, 80)) - 2.5 * particles).astype(np.float32), 10.0)
        r = np.arange(-8, 9)
        os.makedirs(os.path.join(cls.dataDir, "reference"))  # not a tomogram to import
        cls.template = os.path.join(cls.dataDir, "reference", "blob.mrc")
        write_mrc(cls.template, np.exp(-(r[:, None, None] ** 2 + r[None, :, None] ** 2
                                         + r[None, None, :] ** 2) / 8.0).astype(np.float32), 10.0)
        cls.importProt = cls.importTomograms(pattern="{TS}.mrc")

    def _denoiser(self):
        return self.newProtocol(ProtTomoPickDenoise,
                                inputSetTomograms=self.pointer(self.importProt, "Tomograms"),
                                **SLOW)

    def _matcher(self):
        # one thread: one tomogram at a time, a second or more each (83 rotations); the
        # blobs are 2.5 sigma deep: smoothed, they would pass for gold beads
        return self.newProtocol(ProtTomoPickTemplateMatching,
                                inputTomograms=self.pointer(self.importProt, "Tomograms"),
                                referenceFile=self.template, particleDiameter=100.0,
                                coarseStep=45.0, angularSampling=30.0, maskBeads=False,
                                numberOfThreads=1)

    def _killAfterFirstStep(self, prot, funcName):
        """Launch, SIGKILL once a `funcName` step is finished; return (records, finished tsIds).

        Asserts the run is then failed ("not found running") with nothing registered.
        """
        self.proj.launchProtocol(prot, wait=False)
        before = wait_for_finished_step(prot.getStepsFile(), funcName)
        self.proj._updateProtocol(prot)  # the pid the protocol stored for itself
        os.kill(prot.getPid(), signal.SIGKILL)
        time.sleep(0.5)
        self.proj._updateProtocol(prot)
        self.assertTrue(prot.isFailed(), prot.getStatus())
        self.assertIn("not found running", prot.getErrorMessage())
        self.assertEqual(self.registeredOutputs(prot), [],
                         "the killed run registered an output")
        finished = [json.loads(r[1])[0] for r in before
                    if r[0] == funcName and r[2] == "finished"]
        self.assertLess(len(finished), len(TSIDS), "every tomogram was done before the kill")
        return before, finished

    def _continueWithoutRedoing(self, prot, before, files):
        """Relaunch in resume mode; assert finished steps and their `files` were left alone."""
        stamps = {path: os.stat(path).st_mtime_ns for path in files}
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
        for path, stamp in stamps.items():  # the finished steps' files were not rewritten
            self.assertEqual(os.stat(path).st_mtime_ns, stamp, path)
        with open(prot.getStdoutLog()) as handle:
            self.assertIn("RESUMING", handle.read())
        self.assertEqual(glob.glob(prot._getExtraPath("*.part")), [])

    def test_killed_protocol_continues_without_redoing_finished_steps(self):
        # what an uninterrupted run writes (test_protocol_denoise: the protocol's output is
        # exactly the core filter's)
        expected = {t.getTsId(): denoise.beltrami_flow(read_mrc(t.getFileName()), n_iter=N_ITER,
                                                       time_step=0.1)
                    for t in self.importProt.Tomograms}

        prot = self._denoiser()
        before, finished = self._killAfterFirstStep(prot, "denoiseStep")
        # what the killed run left: the finished tomogram(s), complete; at most a .part
        left = {os.path.basename(p) for p in glob.glob(prot._getExtraPath("*"))}
        self.assertTrue({f"{t}.mrc" for t in finished} <= left, left)
        for name in left:
            self.assertTrue(name.endswith(".part") or name[:-4] in finished or
                            name[:-4] in TSIDS, name)
            if name.endswith(".mrc"):
                np.testing.assert_array_equal(read_mrc(prot._getExtraPath(name)),
                                              expected[name[:-4]])

        self._continueWithoutRedoing(prot, before,
                                     [prot._getExtraPath(f"{t}.mrc") for t in finished])
        self.assertEqual(sorted(t.getTsId() for t in prot.tomograms), list(TSIDS))
        for tomo in prot.tomograms:
            np.testing.assert_array_equal(read_mrc(tomo.getFileName()), expected[tomo.getTsId()])

    def test_killed_template_matching_continues_and_equals_an_uninterrupted_run(self):
        reference = self.launch(self._matcher())  # uninterrupted
        expected = picks_from_coordinates(reference.coordinates)
        # every blob of every tomogram found: the comparison below is about real picks
        for tsId in TSIDS:
            found = expected.for_tomogram(tsId).positions
            distance = np.linalg.norm(found[None] - np.array(BLOBS)[:, None], axis=2).min(1)
            self.assertLess(distance.max(), 1.0, (tsId, found))

        prot = self._matcher()
        before, finished = self._killAfterFirstStep(prot, "matchStep")
        outputs = [prot._getExtraPath(f"{t}{suffix}") for t in finished
                   for suffix in ("_picks.npz", "_scores.mrc", "_best_rotation_index.mrc",
                                  "_rotations.npy", "_stats.json")]
        self._continueWithoutRedoing(prot, before, outputs)

        picks = picks_from_coordinates(prot.coordinates)
        self.assertEqual(list(picks.tomo_ids), list(expected.tomo_ids))
        # the same computation on the same data: equal but for rounding
        np.testing.assert_allclose(picks.positions, expected.positions, atol=1e-6)
        np.testing.assert_allclose(picks.scores, expected.scores, rtol=1e-6)
        np.testing.assert_allclose(picks.matrices, expected.matrices, atol=1e-6)
        self.assertEqual(sorted(t.getTsId() for t in prot.scoreMaps), list(TSIDS))
        for mine, theirs in zip(prot.scoreMaps, reference.scoreMaps):
            np.testing.assert_allclose(read_mrc(mine.getFileName()),
                                       read_mrc(theirs.getFileName()), atol=1e-6)


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
