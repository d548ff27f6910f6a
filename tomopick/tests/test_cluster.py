"""Scale-out through pyworkflow itself: parallel steps (threads) and a real SLURM queue.

The queue test starts a one-node SLURM cluster on loopback (`slurm_cluster`:
Debian's slurm-wlm and munge; skipped with the reason where they are missing
or cannot start) and submits tomopick protocols through the README's
hosts.conf, read from the README itself so that the documented configuration
is the tested one.
"""
import json
import os
import re
import time
import unittest

import numpy as np
import pyworkflow as pw
from pyworkflow.project import Manager

from tomopick.core.formats import read_mrc, write_mrc
from tomopick.protocols import ProtTomoPickDenoise, ProtTomoPickImportTomograms
from tomopick.tests.protocol_base import TomoPickProtocolTest
from tomopick.tests.slurm_cluster import SlurmCluster, SlurmUnavailable

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.rst")


def readme_hosts_conf():
    """The SLURM hosts.conf example of the README (its literal block), dedented."""
    with open(README) as handle:
        text = handle.read()
    block = text.split("A SLURM example::", 1)[1].split("\n\n", 2)[1]
    return "\n".join(line[4:] for line in block.splitlines()) + "\n"


class TestScaleOut(TomoPickProtocolTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        rng = np.random.default_rng(0)
        for i in range(3):
            write_mrc(os.path.join(cls.dataDir, f"TS_{i}.mrc"),
                      rng.normal(size=(16, 24, 24)).astype(np.float32), 8.0)

    def test_per_tomogram_steps_run_on_threads(self):
        prot = self.launch(self.newProtocol(ProtTomoPickImportTomograms, filesPath=self.dataDir,
                                            filesPattern="{TS}.mrc", numberOfThreads=3))
        self.assertEqual(prot.Tomograms.getSize(), 3)
        with open(prot.getStdoutLog()) as handle:
            log = handle.read()
        self.assertIn("Scipion threads: 3", log)
        self.assertNotIn("Serial execution", log)
        steps = [s for s in prot.loadSteps() if s.funcName.get() == "importTomogramStep"]
        self.assertEqual(len(steps), 3)
        self.assertTrue(all(s.isFinished() for s in steps))


class TestSlurmQueue(TomoPickProtocolTest):
    """Protocols submitted with sbatch to a real slurmctld/slurmd, watched with squeue."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cluster = SlurmCluster(partition="cpu")
        try:
            cls.cluster.start()
        except SlurmUnavailable as err:
            raise unittest.SkipTest(f"no SLURM cluster: {err}")
        rng = np.random.default_rng(1)
        for i in range(3):
            write_mrc(os.path.join(cls.dataDir, f"TS_{i}.mrc"),
                      rng.normal(size=(20, 40, 40)).astype(np.float32), 8.0)
        # a bigger one keeps the job that is cancelled busy long enough
        write_mrc(os.path.join(cls.dataDir, "big_0.mrc"),
                  rng.normal(size=(48, 128, 128)).astype(np.float32), 8.0)

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        super().tearDownClass()

    def _waitWhileActive(self, project, prots, timeout):
        deadline = time.time() + timeout
        while any(p.isActive() for p in prots):
            if time.time() > deadline:
                self.fail(f"still active after {timeout} s: "
                          f"{[(p.getRunName(), p.getStatus()) for p in prots]}; queue "
                          f"{self.cluster.squeue()}\n{self.cluster.log('slurmctld')}")
            time.sleep(1)
            for p in prots:
                project._updateProtocol(p)

    def test_concurrent_jobs_register_outputs_and_a_cancelled_job_fails(self):
        hosts = os.path.join(self.dataDir, "hosts.conf")
        with open(hosts, "w") as handle:
            handle.write(readme_hosts_conf())
        # Not createProject(hostsConf=...): pyworkflow copies that file over the one
        # SCIPION_HOSTS names (an absolute path: the user's hosts.conf, shared with every
        # other project and test run). This process, the protocol processes and the jobs
        # (sbatch exports the environment) read this file instead, for this test only.
        saved = os.environ.get("SCIPION_HOSTS"), pw.Config.SCIPION_HOSTS
        os.environ["SCIPION_HOSTS"] = pw.Config.SCIPION_HOSTS = hosts
        try:
            project = Manager().createProject("TestSlurmQueueProject")
            os.chdir(project.getPath())
            self._runThroughSlurm(project)
        finally:
            os.chdir(self.outputPath)
            pw.Config.SCIPION_HOSTS = saved[1]
            if saved[0] is None:
                os.environ.pop("SCIPION_HOSTS", None)
            else:
                os.environ["SCIPION_HOSTS"] = saved[0]

    def _runThroughSlurm(self, project):
        new = project.newProtocol

        def denoiser(source, output="Tomograms", **kwargs):
            prot = new(ProtTomoPickDenoise, **kwargs)
            prot.inputSetTomograms.set(source)
            prot.inputSetTomograms.setExtended(output)
            return prot

        def queued(prot):
            prot._useQueue.set(True)
            prot._queueParams.set(json.dumps(["cpu", {"JOB_TIME": "1"}]))
            return prot

        imports = new(ProtTomoPickImportTomograms, filesPath=self.dataDir,
                      filesPattern="TS_{TS}.mrc")
        project.launchProtocol(imports, wait=True)
        big = new(ProtTomoPickImportTomograms, filesPath=self.dataDir, filesPattern="big_{TS}.mrc")
        project.launchProtocol(big, wait=True)
        self.assertTrue(imports.isFinished() and big.isFinished(), imports.getErrorMessage())

        eed = dict(method=0, nIter=3, numberOfThreads=2)
        bflow = dict(method=1, nIterBflow=4, numberOfThreads=2)
        local = {}
        for name, params in (("eed", eed), ("bflow", bflow)):
            local[name] = denoiser(imports, **params)
            project.launchProtocol(local[name], wait=True)
            self.assertTrue(local[name].isFinished(), local[name].getErrorMessage())

        # three jobs at once: two that finish, one (minutes of iterations) cancelled
        jobs = {"eed": queued(denoiser(imports, **eed)),
                "bflow": queued(denoiser(imports, **bflow)),
                "doomed": queued(denoiser(big, method=1, nIterBflow=3000, numberOfThreads=1))}
        for prot in jobs.values():
            project.launchProtocol(prot)
        ids = {name: str(prot.getJobIds()[0]) for name, prot in jobs.items()}
        self.assertTrue(all(re.fullmatch(r"\d+", i) for i in ids.values()), ids)
        with open(jobs["eed"].getSubmitDict()["JOB_SCRIPT"]) as handle:
            script = handle.read()
        self.assertIn("#SBATCH --partition=cpu", script)
        self.assertIn("#SBATCH --cpus-per-task=2", script)
        self.assertIn("pw_protocol_run.py", script)
        self.assertIn("#SBATCH -o ", script)  # the README's template, not another hosts.conf

        # squeue lists the jobs, and the doomed one runs at the same time as another one
        seen, deadline = {}, time.time() + 60
        while time.time() < deadline:
            queue = self.cluster.squeue()
            for name, jobId in ids.items():
                seen.setdefault(name, set()).add(queue.get(jobId, "gone"))
            if queue.get(ids["doomed"]) == "RUNNING" and "RUNNING" in (
                    queue.get(ids["eed"]), queue.get(ids["bflow"])):
                break
            time.sleep(0.3)
        else:
            self.fail(f"the jobs never ran together: {seen}")
        self._waitForLog(jobs["doomed"], "iteration", 60)
        self.cluster.command("scancel", ids["doomed"])

        self._waitWhileActive(project, list(jobs.values()), timeout=120)
        doomed = jobs["doomed"]
        self.assertTrue(doomed.isFailed(), doomed.getStatus())
        self.assertIn(f"JOB ID {ids['doomed']}", doomed.getErrorMessage())
        self.assertEqual(self.registeredOutputs(doomed), [],
                         "a cancelled run registered output")
        # a protocol reports itself finished a moment before its job ends
        deadline = time.time() + 30
        while set(ids.values()) & set(self.cluster.squeue()) and time.time() < deadline:
            time.sleep(0.3)
        accounting = self.cluster.sacct()
        self.assertEqual(accounting.get(ids["doomed"]), "CANCELLED", accounting)
        for name in ("eed", "bflow"):
            prot = jobs[name]
            self.assertTrue(prot.isFinished(), f"{name}: {prot.getErrorMessage()}")
            self.assertEqual(accounting.get(ids[name]), "COMPLETED", accounting)
            with open(prot.getStdoutLog()) as handle:
                self.assertIn("Scipion threads: 2", handle.read())
            queuedOut = {t.getTsId(): t.getFileName() for t in prot.tomograms}
            localOut = {t.getTsId(): t.getFileName() for t in local[name].tomograms}
            self.assertEqual(sorted(queuedOut), ["TS_0", "TS_1", "TS_2"])
            self.assertEqual(sorted(queuedOut), sorted(localOut))
            for tsId, path in queuedOut.items():
                self.assertNotEqual(os.path.abspath(path), os.path.abspath(localOut[tsId]))
                np.testing.assert_array_equal(read_mrc(path), read_mrc(localOut[tsId]))

    def _waitForLog(self, prot, text, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with open(prot.getStdoutLog()) as handle:
                    if text in handle.read():
                        return
            except OSError:
                pass
            time.sleep(0.3)
        self.fail(f"{prot.getRunName()} never logged {text!r}")
