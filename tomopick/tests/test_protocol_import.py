"""Headless tests of ProtTomoPickImportTomograms: outputs, binning, origins, bad input."""
import os

import numpy as np

from tomopick.core.formats import read_mrc, write_mrc
from tomopick.protocols import ProtTomoPickImportTomograms
from tomopick.tests.protocol_base import TomoPickProtocolTest


def _volume(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(np.float32)


class TestImportTomograms(TomoPickProtocolTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.goodDir = os.path.join(cls.dataDir, "good")
        os.makedirs(cls.goodDir)
        cls.volumes = {}
        for i, ts in enumerate(["TS_01", "TS_02"]):
            cls.volumes[ts] = _volume((24, 32, 40), i)
            write_mrc(os.path.join(cls.goodDir, f"{ts}.mrc"), cls.volumes[ts], 7.5)

    def _import(self, directory=None, **kwargs):
        prot = self.newProtocol(ProtTomoPickImportTomograms,
                                filesPath=directory or self.goodDir, **kwargs)
        return prot

    def test_sampling_rate_from_header_and_default_origin(self):
        prot = self.launch(self._import(filesPattern="{TS}.mrc"))
        tomos = prot.Tomograms
        self.assertEqual(tomos.getSize(), 2)
        self.assertAlmostEqual(tomos.getSamplingRate(), 7.5, places=4)
        self.assertEqual(sorted(t.getTsId() for t in tomos), ["TS_01", "TS_02"])
        for tomo in tomos:
            self.assertEqual(tomo.getDim(), (40, 32, 24))
            # Scipion's default: the origin at the centre, -dim/2 * sampling (Å)
            np.testing.assert_allclose(tomo.getShiftsFromOrigin(), (-150.0, -120.0, -90.0))
            np.testing.assert_array_equal(read_mrc(tomo.getFileName()),
                                          self.volumes[tomo.getTsId()])

    def test_given_sampling_rate_and_custom_origin(self):
        prot = self.launch(self._import(filesPattern="TS_01.mrc", samplingRate=3.0,
                                        setOrigCoord=True, x=10.0, y=20.0, z=30.0))
        tomo = prot.Tomograms.getFirstItem()
        self.assertAlmostEqual(prot.Tomograms.getSamplingRate(), 3.0)
        self.assertEqual(tomo.getTsId(), "TS_01")
        np.testing.assert_allclose(tomo.getShiftsFromOrigin(), (-10.0, -20.0, -30.0))

    def test_fourier_binning_halves_dimensions_and_keeps_low_frequencies(self):
        prot = self.launch(self._import(filesPattern="{TS}.mrc", binning=2))
        tomos = prot.Tomograms
        self.assertAlmostEqual(tomos.getSamplingRate(), 15.0, places=4)
        tomo = tomos.getFirstItem()
        self.assertEqual(tomo.getDim(), (20, 16, 12))
        binned = read_mrc(tomo.getFileName())
        original = self.volumes[tomo.getTsId()]
        # the binned volume is the low-pass of the original: same mean, and its
        # voxels correlate with 2x2x2 block averages of the original
        self.assertAlmostEqual(float(binned.mean()), float(original.mean()), places=4)
        blocks = original.reshape(12, 2, 16, 2, 20, 2).mean(axis=(1, 3, 5))
        self.assertGreater(np.corrcoef(binned.ravel(), blocks.ravel())[0, 1], 0.5)

    def test_pattern_matching_nothing_is_a_validation_error(self):
        errors = self.validationErrors(self._import(filesPattern="nothing_*.mrc"))
        self.assertTrue(any("No files match" in e for e in errors), errors)

    def test_corrupt_mrc_is_named_and_project_stays_intact(self):
        before = self.launch(self._import(filesPattern="TS_02.mrc"))
        badDir = os.path.join(self.dataDir, "bad")
        os.makedirs(badDir, exist_ok=True)
        good = open(os.path.join(self.goodDir, "TS_01.mrc"), "rb").read()
        with open(os.path.join(badDir, "broken.mrc"), "wb") as handle:
            handle.write(good[:2000])  # header + a truncated data block
        errors = self.validationErrors(self._import(directory=badDir, filesPattern="*.mrc"))
        self.assertTrue(any("broken" in e for e in errors), errors)
        prot = self._import(directory=badDir, filesPattern="*.mrc")
        failed = self.launchExpectingFailure(prot)
        self.assertIn("broken", failed.getErrorMessage())
        # the earlier protocol's output is still readable from the project database
        earlier = self.proj.getProtocol(before.getObjId())
        self.assertEqual(earlier.Tomograms.getSize(), 1)
        self.assertEqual(earlier.Tomograms.getFirstItem().getTsId(), "TS_02")

    def test_missing_directory_is_named(self):
        errors = self.validationErrors(self._import(directory="/nonexistent/tomograms",
                                                    filesPattern="*.mrc"))
        self.assertTrue(errors and "/nonexistent/tomograms" in errors[0], errors)

    def test_mismatched_header_voxel_sizes_are_refused(self):
        mixedDir = os.path.join(self.dataDir, "mixed")
        os.makedirs(mixedDir, exist_ok=True)
        write_mrc(os.path.join(mixedDir, "a.mrc"), _volume((8, 8, 8), 5), 5.0)
        write_mrc(os.path.join(mixedDir, "b.mrc"), _volume((8, 8, 8), 6), 6.0)
        errors = self.validationErrors(self._import(directory=mixedDir, filesPattern="*.mrc"))
        self.assertTrue(any("different voxel sizes" in e for e in errors), errors)
