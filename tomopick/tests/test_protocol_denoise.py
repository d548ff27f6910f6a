"""Headless tests of ProtTomoPickDenoise: core-equal outputs, geometry kept, bad input."""
import os

import numpy as np
import pytest

from tomopick.core import denoise
from tomopick.core.formats import mrc_header_info, read_mrc, write_mrc
from tomopick.protocols import ProtTomoPickDenoise
from tomopick.tests.protocol_base import TomoPickProtocolTest


class TestProtocolDenoise(TomoPickProtocolTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # two small phantoms (SNR 0.5, one vesicle), imported with a custom origin
        for seed, name in enumerate(["TS_01", "TS_02"]):
            cls.simulate(name, shape=(40, 64, 64), n_particles=4, n_vesicles=1, snr=0.5,
                         seed=seed)
        cls.importProt = cls.importTomograms(pattern="{TS}.mrc", setOrigCoord=True,
                                             x=11.0, y=-22.0, z=33.0)
        cls.inputs = {t.getTsId(): t.clone() for t in cls.importProt.Tomograms}

    def _denoise(self, importProt=None, **kwargs):
        prot = self.newProtocol(ProtTomoPickDenoise,
                                inputSetTomograms=self.pointer(importProt or self.importProt,
                                                               "Tomograms"),
                                **kwargs)
        return prot

    def test_eed_output_equals_core_filter_and_keeps_geometry(self):
        prot = self.launch(self._denoise(method=0, nIter=4, SigmaGaussian=0.8, Lambda=-1,
                                         TimeStep=0.12, numberOfThreads=3))
        out = prot.tomograms
        self.assertEqual(out.getSize(), 2)
        self.assertAlmostEqual(out.getSamplingRate(), self.importProt.Tomograms.getSamplingRate())
        self.assertEqual(sorted(t.getTsId() for t in out), ["TS_01", "TS_02"])
        for tomo in out:
            source = self.inputs[tomo.getTsId()]
            np.testing.assert_allclose(tomo.getShiftsFromOrigin(), (-11.0, 22.0, -33.0))
            np.testing.assert_allclose(tomo.getShiftsFromOrigin(), source.getShiftsFromOrigin())
            data = read_mrc(tomo.getFileName())
            expected = denoise.eed(read_mrc(source.getFileName()), sigma=0.8, n_iter=4,
                                   lam=-1, time_step=0.12)
            np.testing.assert_array_equal(data, expected)
            header = mrc_header_info(tomo.getFileName())
            self.assertAlmostEqual(header["voxel_size"], source.getSamplingRate(), places=3)
            self.assertEqual(header["origin"], mrc_header_info(source.getFileName())["origin"])
        self.assertIn("edge-enhancing diffusion (4 iterations", prot.summary()[0])

    def test_bflow_honours_its_iterations_and_time_step(self):
        prot = self.launch(self._denoise(method=1, nIterBflow=6, TimeStepBflow=0.05,
                                         numberOfThreads=1))
        for tomo in prot.tomograms:
            source = self.inputs[tomo.getTsId()]
            expected = denoise.beltrami_flow(read_mrc(source.getFileName()), n_iter=6,
                                             time_step=0.05)
            np.testing.assert_array_equal(read_mrc(tomo.getFileName()), expected)

    def test_time_step_above_bound_is_clamped_and_announced(self):
        prot = self._denoise(method=0, nIter=2, TimeStep=0.5)
        self.assertTrue(any("clamped" in w for w in prot._warnings()))
        prot = self.launch(prot)
        with open(prot.getLogPaths()[0]) as handle:
            log = handle.read()
        for tsId in self.inputs:     # the clamp and the progress of every tomogram are logged
            self.assertIn(f"{tsId}: The time step 0.5 exceeds the stability bound", log)
            self.assertIn(f"{tsId}: EED iteration 2/2 (K = ", log)
        tomo = prot.tomograms.getFirstItem()
        expected = denoise.eed(read_mrc(self.inputs[tomo.getTsId()].getFileName()), n_iter=2,
                               time_step=1 / 6)
        np.testing.assert_array_equal(read_mrc(tomo.getFileName()), expected)

    def test_header_gets_the_project_sampling_rate(self):
        # imported at 3 Å/voxel although the MRC header says 10
        importProt = self.importTomograms(pattern="TS_01.mrc", samplingRate=3.0)
        prot = self.launch(self._denoise(importProt, method=0, nIter=1))
        tomo = prot.tomograms.getFirstItem()
        self.assertAlmostEqual(prot.tomograms.getSamplingRate(), 3.0)
        self.assertAlmostEqual(tomo.getSamplingRate(), 3.0)
        self.assertAlmostEqual(mrc_header_info(tomo.getFileName())["voxel_size"], 3.0)

    def test_lambda_zero_is_a_validation_error(self):
        errors = self.validationErrors(self._denoise(method=0, Lambda=0))
        self.assertTrue(any("Lambda" in e for e in errors), errors)

    @pytest.mark.filterwarnings("ignore:Data array contains NaN")
    def test_nan_tomogram_fails_naming_it(self):
        directory = os.path.join(self.dataDir, "nan")
        os.makedirs(directory)
        write_mrc(os.path.join(directory, "TS_NAN.mrc"),
                  np.full((8, 12, 12), np.nan, dtype=np.float32), 10.0)
        importProt = self.importTomograms(pattern="TS_NAN.mrc", directory=directory)
        prot = self.launchExpectingFailure(self._denoise(importProt, method=0))
        self.assertIn("TS_NAN", prot.getErrorMessage())
        self.assertIn("NaN", prot.getErrorMessage())
        # nothing partial registered (pyworkflow lists _prerequisites among a reloaded run's outputs)
        self.assertEqual([name for name, _ in prot.iterOutputAttributes() if not name.startswith("_")], [])

    def test_constant_tomogram_passes_through_without_nans(self):
        directory = os.path.join(self.dataDir, "flat")
        os.makedirs(directory)
        write_mrc(os.path.join(directory, "TS_FLAT.mrc"),
                  np.full((8, 12, 12), 4.0, dtype=np.float32), 10.0)
        importProt = self.importTomograms(pattern="TS_FLAT.mrc", directory=directory)
        prot = self.launch(self._denoise(importProt, method=1))
        data = read_mrc(prot.tomograms.getFirstItem().getFileName())
        self.assertTrue(np.isfinite(data).all())
        self.assertTrue((data == 4.0).all())
