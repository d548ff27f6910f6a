"""Headless test of the subtomogram initial model protocol on ribosome subtomograms.

Subtomograms of the real 80S ribosome map (EMD-3883, Fourier-cropped to 24^3
at 23 Å/voxel) in random orientations with a +-60 degree wedge and noise are
written as MRC files, imported with scipion-em-tomo's "import subtomograms"
(acquisition -60..60), and given to ProtTomoPickInitialModel without a
reference.
"""
import os

import numpy as np

from tomopick.core.alignment import align_box
from tomopick.core.averaging import low_pass
from tomopick.core.formats import read_mrc, write_mrc
from tomopick.core.fourier import soft_sphere
from tomopick.core.rotations import angular_distance
from tomopick.tests.protocol_base import TomoPickProtocolTest
from tomopick.tests.test_averaging import (align_to_truth, correlation, make_particles,
                                           ribosome)

N = 24
COUNT = 30


class TestInitialModelProtocol(TomoPickProtocolTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.truth, cls.voxelSize = ribosome(N)
        boxes, cls.poses = make_particles(cls.truth, COUNT, snr=0.3, seed=11)
        folder = os.path.join(cls.dataDir, "particles")
        os.makedirs(folder)
        for i, box in enumerate(boxes):
            write_mrc(os.path.join(folder, f"particle_{i:03d}.mrc"), box, cls.voxelSize)
        cls.imported = cls.importSubtomograms(folder, "particle_*.mrc")
        # one box of another size among the others
        mixed = os.path.join(cls.dataDir, "mixed")
        os.makedirs(mixed)
        for i in range(4):
            write_mrc(os.path.join(mixed, f"p{i}.mrc"), boxes[i], cls.voxelSize)
        write_mrc(os.path.join(mixed, "p9.mrc"), boxes[0][:20, :20, :20].copy(), cls.voxelSize)
        cls.mixed = cls.importSubtomograms(mixed, "p*.mrc")

    @classmethod
    def importSubtomograms(cls, folder, pattern):
        from tomo.protocols import ProtImportSubTomograms
        prot = cls.newProtocol(ProtImportSubTomograms, filesPath=folder, filesPattern=pattern,
                               samplingRate=cls.voxelSize, acquisitionAngleMin=-60.0,
                               acquisitionAngleMax=60.0)
        return cls.launch(prot)

    @classmethod
    def newInitialModel(cls, source, **kwargs):
        from tomopick.protocols import ProtTomoPickInitialModel
        kwargs.setdefault("particleDiameter", 300.0)
        prot = cls.newProtocol(ProtTomoPickInitialModel, **kwargs)
        prot.inputSubtomograms.set(source)
        prot.inputSubtomograms.setExtended("outputSubTomograms")
        return prot

    def test_model_from_scratch_matches_the_ribosome(self):
        prot = self.launch(self.newInitialModel(
            self.imported, angularSampling=30.0, numberOfIterations=2, batchSize=10,
            lowpass=50.0, shrink=1.5, seed=3, restarts=2, halfIterations=1))
        average = prot.average
        self.assertAlmostEqual(average.getSamplingRate(), self.voxelSize, places=3)
        model = read_mrc(average.getFileName()).astype(np.float32)
        self.assertEqual(model.shape, (N, N, N))
        G = align_to_truth(model, self.truth, self.voxelSize, 50.0)
        mask = soft_sphere((N,) * 3, 150 / self.voxelSize + 1, edge=3)
        score = correlation(align_box(model, G, "cubic"),
                            low_pass(self.truth, self.voxelSize, 50.0), mask)
        self.assertGreater(score, 0.8)
        # the output set holds every input with its pose in Scipion's convention
        from tomopick.convert import legacy_convention, subtomogram_matrix
        subtomos = prot.outputSubtomograms
        self.assertEqual(subtomos.getSize(), COUNT)
        self.assertTrue(subtomos.hasAlignment3D())
        legacy = legacy_convention(subtomos)
        found = {os.path.basename(s.getFileName()): subtomogram_matrix(s, legacy)
                 for s in subtomos.iterItems()}
        names = sorted(found)
        matrices = np.array([found[name] for name in names])
        truth = np.array([self.poses[int(name[9:12])] for name in names])
        errors = angular_distance(matrices[:, :3, :3], truth[:, :3, :3] @ G[:3, :3].T)
        self.assertLess(np.median(errors), 15.0)
        summary = "\n".join(prot.summary())
        self.assertIn("Resolution (half-set FSC 0.143)", summary)
        self.assertIn("Restart consistency", summary)
        self.assertTrue(os.path.exists(prot._getExtraPath("fsc.png")))
        # usable as a template: the average's file is a readable MRC of the model
        self.assertEqual(read_mrc(average.getFileName()).shape, (N, N, N))

    def test_bad_inputs_are_named(self):
        prot = self.newInitialModel(self.imported, batchSize=COUNT + 1)
        errors = "\n".join(self.validationErrors(prot))
        self.assertIn(f"batchSize {COUNT + 1}", errors)
        prot = self.newInitialModel(self.imported, symmetry="x7")
        self.assertIn("cannot parse the symmetry 'x7'",
                      "\n".join(self.validationErrors(prot)))
        prot = self.newInitialModel(self.mixed, batchSize=2)
        errors = "\n".join(self.validationErrors(prot))
        self.assertIn("mixed box sizes", errors)
        self.assertIn("p9.mrc", errors)
