"""Headless tests of ProtTomoPickTemplateMatching: real ribosomes found and oriented, bad input."""
import os

import numpy as np

from tomopick import convert
from tomopick.convert import picks_from_coordinates
from tomopick.core.evaluate import match_picks
from tomopick.core.formats import read_mrc
from tomopick.core.rotations import angular_distance
from tomopick.protocols.protocol_template_matching import ProtTomoPickTemplateMatching
from tomopick.tests.protocol_base import TomoPickProtocolTest

HERE = os.path.dirname(os.path.abspath(__file__))
RIBOSOME = "emd3883_80S_ribosome_64px_8.66A.mrc"
VOXEL, DIAMETER = 24.0, 400.0
NAMES = ("tomo_1", "tomo_2")


def _ribosome_file():
    for d in (os.path.join(HERE, "..", "..", "..", "shared", "data"), "/work/shared/data"):
        if os.path.exists(os.path.join(d, RIBOSOME)):
            return os.path.abspath(os.path.join(d, RIBOSOME))
    return None


class TestTemplateMatching(TomoPickProtocolTest):

    @classmethod
    def setUpClass(cls):
        cls.reference = _ribosome_file()
        if cls.reference is None:
            raise __import__("unittest").SkipTest(f"real data {RIBOSOME} not found in "
                                                  f"../shared/data")
        super().setUpClass()
        from tomopick.core.simulate_maps import map_particle_class
        rib = map_particle_class("ribosome80S", cls.reference, None, VOXEL)
        cls.phantoms = {}
        for seed, name in enumerate(NAMES):
            cls.phantoms[name], _ = cls.simulate(
                name, shape=(48, 96, 96), voxel_size=VOXEL, n_particles=12, n_vesicles=0,
                n_gold=2, tilt_range=(-60, 60), snr=0.1, seed=11 + seed,
                particle_classes=[10, 10, 10, 1], extra_classes={10: rib})
        cls.importProt = cls.importTomograms(pattern="{TS}.mrc", acquisitionAngleMin=-60,
                                             acquisitionAngleMax=60)

    def _matching(self, **kwargs):
        kwargs.setdefault("referenceFile", self.reference)
        kwargs.setdefault("particleDiameter", DIAMETER)
        kwargs.setdefault("lowpass", 55.0)
        kwargs.setdefault("coarseStep", 25.0)
        return self.newProtocol(ProtTomoPickTemplateMatching,
                                inputTomograms=self.pointer(self.importProt, "Tomograms"),
                                **kwargs)

    def test_ribosomes_are_found_and_oriented_in_scipion_convention(self):
        prot = self.launch(self._matching(boxSize=20, numberOfThreads=2))
        picks = picks_from_coordinates(prot.coordinates)
        self.assertEqual(prot.coordinates.getBoxSize(), 20)
        self.assertEqual(set(picks.tomo_ids), set(NAMES))
        self.assertTrue(np.all(picks.scores > 0))
        errors, normals_err = [], []
        for name, phantom in self.phantoms.items():
            mine = picks.for_tomogram(name)
            truth = phantom.particles.group_ids == 10
            true_pos = phantom.particles.positions[truth]
            true_rot = phantom.particles.matrices[truth, :3, :3]
            i, j, _ = match_picks(mine.positions, true_pos, DIAMETER / VOXEL / 4)
            f1 = 2 * len(i) / (len(mine) + len(true_pos))
            self.assertGreaterEqual(f1, 0.9, f"{name}: {len(i)} of {len(true_pos)} ribosomes, "
                                             f"{len(mine)} picks")
            # read back through convert: core matrices, R @ z = the template's z-axis
            errors.extend(angular_distance(mine.matrices[i, :3, :3], true_rot[j]))
            if hasattr(convert, "set_subtomogram_matrix"):
                # the convert fix of issue 12 stores Scipion's M = inv([[R, t]])
                from tomo.utils import normalFromMatrix
                coords = [c.clone() for c in prot.coordinates.iterCoordinates()
                          if c.getTomoId() == name]
                normals = np.array([normalFromMatrix(c.getMatrix()) for c in coords])
                normals_err.extend(np.degrees(np.arccos(np.clip(
                    (normals[i] * true_rot[j][:, :, 2]).sum(1), -1, 1))))
        self.assertLess(np.median(errors), 5.0, errors)
        if normals_err:
            self.assertLess(np.median(normals_err), 5.0, normals_err)
        # score maps: one per tomogram, the tomogram's size, peaks at the picks
        self.assertEqual(prot.scoreMaps.getSize(), len(NAMES))
        for scoreMap in prot.scoreMaps:
            data = read_mrc(scoreMap.getFileName())
            self.assertEqual(data.shape, (48, 96, 96))
            self.assertAlmostEqual(scoreMap.getSamplingRate(), VOXEL, places=3)
            mine = picks.for_tomogram(scoreMap.getTsId())
            at = np.round(mine.positions).astype(int)
            self.assertGreater(np.median(data[at[:, 2], at[:, 1], at[:, 0]]),
                               np.percentile(data, 99))
            self.assertTrue(os.path.exists(prot._anglePath(scoreMap.getTsId())))

    def test_bad_input_is_named(self):
        errors = " ".join(self.validationErrors(self._matching(tiltRange="-100,60")))
        self.assertIn("Tilt range", errors)
        errors = " ".join(self.validationErrors(self._matching(symmetry="x3")))
        self.assertIn("'x3'", errors)
        errors = " ".join(self.validationErrors(self._matching(referenceFile="/nope.mrc")))
        self.assertIn("/nope.mrc", errors)
        errors = " ".join(self.validationErrors(self._matching(lowpass=60, highpass=40)))
        self.assertIn("High-pass", errors)
        prot = self.newProtocol(ProtTomoPickTemplateMatching, referenceFile=self.reference)
        self.assertIn("Give the input tomograms.", self.validationErrors(prot))

    def test_constant_reference_fails_with_its_name(self):
        from tomopick.core.formats import write_mrc
        path = os.path.join(self.dataDir, "flat_reference.mrc")
        write_mrc(path, np.ones((32, 32, 32), np.float32), VOXEL)
        prot = self.launchExpectingFailure(self._matching(referenceFile=path))
        self.assertIn("flat_reference.mrc", prot.getErrorMessage())
        self.assertIn("constant", prot.getErrorMessage())
        self.assertFalse(prot.hasAttribute("coordinates") and prot.coordinates is not None)
