"""Bad input under load: each a named failure or a retry, the project intact.

- a tomogram file truncated while a run is working through the tomograms: the
  step of that tomogram fails naming it; nothing is registered; the finished
  tomograms stay readable; once the file is back, Continue finishes the run
  without redoing them.
- a tomogram truncated after it was memory-mapped and before a slab is read:
  a named error, not a SIGBUS that kills the process without a word.
- the disk fills up (a small tmpfs mounted as the protocol's extra folder):
  the step fails naming the file and "No space left"; no ``.part`` or
  truncated file is left; the earlier output stays readable.
- another process holds the project's and the input set's SQLite databases
  locked for a few seconds: pyworkflow waits for the lock and the run finishes.
In every case ``PRAGMA integrity_check`` of project.sqlite is "ok" and the
import's output is still readable.
"""
import glob
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import unittest

import numpy as np
from pyworkflow.protocol.constants import MODE_RESUME

from tomopick.core import denoise
from tomopick.core.formats import read_mrc, write_mrc
from tomopick.protocols import ProtTomoPickDenoise
from tomopick.tests.protocol_base import TomoPickProtocolTest
from tomopick.tests.test_resume import N_ITER, SLOW, TSIDS, wait_for_finished_step

SHAPE = (32, 80, 80)  # 819,200 bytes as float32 MRC data
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# run in a subprocess: a SIGBUS there fails the test instead of killing pytest
TRUNCATED_READS = """
import os, sys
import numpy as np
from tomopick.core.formats import MrcError, read_mrc, write_mrc
from tomopick.core.extraction import extract_subtomograms
from tomopick.core.resample import fourier_bin
path = sys.argv[1]
write_mrc(path, np.ones((32, 80, 80), np.float32), 10.0)
volume = read_mrc(path, mmap=True)
first = float(volume[0:4].sum())          # pages of the first slabs are now mapped
os.truncate(path, 1024 + 80 * 80 * 4 * 5)  # 5 of 32 planes left
if sys.argv[2] == "raw":                  # what a plain memory map does: SIGBUS
    print(float(np.asarray(volume.view(np.memmap))[20:24].sum()))
reads = {"slab": lambda: np.array(volume[20:24]), "sum": lambda: volume.sum(),
         "tile": lambda: np.array(volume[:, 10:30, 10:30]), "bin": lambda: fourier_bin(volume, 2),
         "boxes": lambda: extract_subtomograms(volume, [[40, 40, 20]], 8)}
for name, read in reads.items():
    try:
        read()
        print(name, "read without error")
    except MrcError as err:
        print(name, "MrcError:", err)
print("first", first)
"""


class TestFailuresUnderLoad(TomoPickProtocolTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        rng = np.random.default_rng(11)
        cls.volumes = {}
        for tsId in TSIDS:
            cls.volumes[tsId] = rng.normal(size=SHAPE).astype(np.float32)
            write_mrc(os.path.join(cls.dataDir, f"{tsId}.mrc"), cls.volumes[tsId], 10.0)
        cls.importProt = cls.importTomograms(pattern="{TS}.mrc")

    def _denoiser(self, **params):
        return self.newProtocol(ProtTomoPickDenoise,
                                inputSetTomograms=self.pointer(self.importProt, "Tomograms"),
                                **(params or SLOW))

    def assertProjectIntact(self):
        db = sqlite3.connect(os.path.join(self.proj.getPath(), "project.sqlite"))
        try:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        finally:
            db.close()
        imported = self.proj.getProtocol(self.importProt.getObjId())
        self.assertTrue(imported.isFinished())
        for tomo in imported.Tomograms:
            self.assertEqual(read_mrc(tomo.getFileName(), mmap=True).shape, SHAPE)

    def test_tomogram_truncated_during_the_run_is_named_and_the_run_continues(self):
        victim = os.path.join(self.dataDir, f"{TSIDS[-1]}.mrc")
        backup = victim + ".backup"
        shutil.copyfile(victim, backup)
        prot = self._denoiser()
        try:
            self.proj.launchProtocol(prot, wait=False)
            wait_for_finished_step(prot.getStepsFile(), "denoiseStep")
            os.truncate(victim, os.path.getsize(victim) // 2)  # the last one, not read yet
            deadline = time.time() + 300
            while prot.isActive() and time.time() < deadline:
                time.sleep(0.5)
                self.proj._updateProtocol(prot)
            self.assertTrue(prot.isFailed(), prot.getStatus())
            self.assertIn(f"Tomogram {TSIDS[-1]}: cannot read MRC file", prot.getErrorMessage())
            self.assertEqual(self.registeredOutputs(prot), [])
            for tsId in TSIDS[:-1]:  # finished before: complete and readable
                np.testing.assert_array_equal(
                    read_mrc(prot._getExtraPath(f"{tsId}.mrc")),
                    denoise.beltrami_flow(self.volumes[tsId], n_iter=N_ITER, time_step=0.1))
            self.assertEqual(glob.glob(prot._getExtraPath("*.part")), [])
        finally:
            os.replace(backup, victim)
        self.assertProjectIntact()
        stamp = os.stat(prot._getExtraPath(f"{TSIDS[0]}.mrc")).st_mtime_ns
        prot.runMode.set(MODE_RESUME)
        self.launch(prot)
        self.assertEqual(os.stat(prot._getExtraPath(f"{TSIDS[0]}.mrc")).st_mtime_ns, stamp)
        self.assertEqual(prot.tomograms.getSize(), len(TSIDS))

    def test_full_disk_is_a_named_failure_and_leaves_no_partial_file(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("mounting a tmpfs needs root")
        prot = self._denoiser(method=0, nIter=1, numberOfThreads=1)
        self.proj.saveProtocol(prot)  # gives it its run folder
        extra = prot._getExtraPath()
        os.makedirs(extra, exist_ok=True)
        # room for one denoised tomogram (819,200 bytes + header), not two
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", extra],
                               capture_output=True, text=True)
        if mount.returncode != 0:
            raise unittest.SkipTest(f"cannot mount a tmpfs: {mount.stderr.strip()}")
        try:
            prot = self.launchExpectingFailure(prot)
            message = prot.getErrorMessage()
            self.assertIn("No space left on device", message)
            self.assertRegex(message, r"cannot write .*/extra/TS_[12]\.mrc")
            self.assertEqual(self.registeredOutputs(prot), [])
            left = sorted(os.listdir(extra))
            self.assertEqual(left, ["TS_0.mrc"])  # nothing partial next to it
            np.testing.assert_array_equal(
                read_mrc(os.path.join(extra, "TS_0.mrc")),
                denoise.eed(self.volumes["TS_0"], n_iter=1))
            self.assertProjectIntact()
        finally:
            subprocess.run(["umount", extra], check=True)

    def test_databases_locked_by_another_process_are_waited_for(self):
        inputDb = self.importProt.Tomograms.getFileName()
        projectDb = os.path.join(self.proj.getPath(), "project.sqlite")
        hold = 4.0
        locker = subprocess.Popen(
            [sys.executable, "-c",
             "import sqlite3, sys, time\n"
             "dbs = [sqlite3.connect(p, isolation_level=None) for p in sys.argv[2:]]\n"
             "for db in dbs: db.execute('BEGIN EXCLUSIVE')\n"
             "print('locked', flush=True)\n"
             "time.sleep(float(sys.argv[1]))\n"
             "for db in dbs: db.execute('ROLLBACK')\n",
             str(hold), inputDb, projectDb], stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(locker.stdout.readline().strip(), "locked")
            start = time.time()
            prot = self.launch(self._denoiser(method=0, nIter=1, numberOfThreads=2))
            self.assertGreater(time.time() - start, hold * 0.5)  # it did wait
        finally:
            locker.wait(timeout=60)
            locker.stdout.close()
        self.assertEqual(locker.returncode, 0)
        for tomo in prot.tomograms:
            np.testing.assert_array_equal(read_mrc(tomo.getFileName()),
                                          denoise.eed(self.volumes[tomo.getTsId()], n_iter=1))
        self.assertProjectIntact()


def test_memory_mapped_tomogram_truncated_before_a_slab_is_read_is_named(tmp_path):
    path = str(tmp_path / "victim.mrc")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))

    def run(mode):
        return subprocess.run([sys.executable, "-c", TRUNCATED_READS, path, mode], env=env,
                              capture_output=True, text=True, timeout=120)

    checked = run("checked")
    assert checked.returncode == 0, (checked.returncode, checked.stderr[-2000:])
    lines = dict(line.split(" ", 1) for line in checked.stdout.splitlines())
    assert lines.pop("first") == str(4 * 80 * 80.0)  # read before the truncation
    for name in ("slab", "sum", "tile", "bin", "boxes"):
        assert lines[name] == (f"MrcError: MRC file {path} was truncated while in use: "
                               f"{1024 + 80 * 80 * 4 * 5} bytes, its header needs "
                               f"{1024 + 32 * 80 * 80 * 4}"), (name, lines)
    # the same read through a plain memory map kills the process: the check matters
    raw = run("raw")
    assert raw.returncode == -signal.SIGBUS, (raw.returncode, raw.stdout, raw.stderr[-500:])
