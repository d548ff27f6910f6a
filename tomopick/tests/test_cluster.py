"""Scale-out through pyworkflow itself: parallel steps (threads) and a queue system.

The queue test uses a hosts.conf with a SLURM-like queue whose sbatch/squeue are
small scripts that run the job here; what is tested is tomopick's side of the
contract: the protocol is submitted through the queue template, runs from the
job script, and registers its outputs.
"""
import json
import os
import stat
import textwrap

import numpy as np
from pyworkflow.project import Manager

from tomopick.core.formats import write_mrc
from tomopick.protocols import ProtTomoPickImportTomograms
from tomopick.tests.protocol_base import TomoPickProtocolTest


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

    def test_protocol_runs_through_a_queue_system(self):
        binDir = os.path.join(self.dataDir, "fake_slurm")
        os.makedirs(binDir, exist_ok=True)
        scripts = {
            # runs the job script here and answers like sbatch
            "sbatch": 'bash "$1" > "$1.out" 2>&1\necho "Submitted batch job 4242"\n',
            # an empty reply means the job has left the queue (finished)
            "squeue": "exit 0\n",
            "scancel": "exit 0\n",
        }
        for name, body in scripts.items():
            path = os.path.join(binDir, name)
            with open(path, "w") as handle:
                handle.write("#!/bin/bash\n" + body)
            os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
        hosts = os.path.join(self.dataDir, "hosts_slurm.conf")
        with open(hosts, "w") as handle:
            handle.write(textwrap.dedent(f"""\
                [localhost]
                PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s
                NAME = SLURM
                MANDATORY = 0
                SUBMIT_COMMAND = {binDir}/sbatch %_(JOB_SCRIPT)s
                CANCEL_COMMAND = {binDir}/scancel %_(JOB_ID)s
                CHECK_COMMAND = {binDir}/squeue -j %_(JOB_ID)s
                SUBMIT_TEMPLATE = #!/bin/bash
                    ### Job name
                    #SBATCH -J %_(JOB_NAME)s
                    #SBATCH --partition=%_(JOB_QUEUE)s
                    #SBATCH --cpus-per-task=%_(JOB_THREADS)d
                    #SBATCH --time=%_(JOB_TIME)s:00:00
                    %_(JOB_COMMAND)s
                QUEUES = {{"cpu": [["JOB_TIME", "24", "Time (hours)", "Maximum run time"]]}}
                """))
        manager = Manager()
        project = manager.createProject("TestScaleOutQueue", hostsConf=hosts)
        os.chdir(project.getPath())
        prot = project.newProtocol(ProtTomoPickImportTomograms, filesPath=self.dataDir,
                                   filesPattern="{TS}.mrc")
        prot._useQueue.set(True)
        prot._queueParams.set(json.dumps(["cpu", {"JOB_TIME": "2"}]))
        project.launchProtocol(prot, wait=True)
        prot = project.getProtocol(prot.getObjId())
        script = open(prot.getSubmitDict()["JOB_SCRIPT"]).read()
        self.assertIn("#SBATCH --partition=cpu", script)
        self.assertIn("pw_protocol_run.py", script)
        self.assertEqual(prot.getJobIds(), ["4242"])
        self.assertTrue(prot.isFinished(), prot.getErrorMessage())
        self.assertEqual(prot.Tomograms.getSize(), 3)
        os.chdir(self.outputPath)
