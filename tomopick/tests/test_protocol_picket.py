"""Headless tests of ProtTomoPickPickET: picks with scores, label masks, ranges, bad input."""
import numpy as np

from tomopick.convert import picks_from_coordinates
from tomopick.core.evaluate import evaluate_picks
from tomopick.core.formats import read_mrc
from tomopick.core.picks import Picks
from tomopick.protocols.protocol_picket import ProtTomoPickPickET
from tomopick.tests.protocol_base import TomoPickProtocolTest

NAMES = ("tomo_1", "tomo_2")


class TestPickET(TomoPickProtocolTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.importProt, cls.phantoms = cls.simulatedTomograms(
            names=NAMES, shape=(48, 80, 80), n_particles=12, n_vesicles=0, snr=0.5,
            voxel_size=10.0)
        diameters = np.concatenate([p.particle_info["diameter"] for p in cls.phantoms.values()])
        cls.diameter = float(np.median(diameters))             # voxels
        cls.truth = Picks.concatenate(
            [Picks(name, p.particles.positions, voxel_size=10.0)
             for name, p in cls.phantoms.items()])

    def _picket(self, **kwargs):
        kwargs.setdefault("particleDiameter", self.diameter * 10.0)        # Å
        return self.newProtocol(ProtTomoPickPickET,
                                inputTomograms=self.pointer(self.importProt, "Tomograms"),
                                **kwargs)

    def test_default_workflow_picks_scored_particles_and_label_masks(self):
        prot = self.launch(self._picket(boxSize=24))
        coords = prot.coordinates
        self.assertEqual(coords.getBoxSize(), 24)
        self.assertAlmostEqual(coords.getSamplingRate(), 10.0, places=4)
        picks = picks_from_coordinates(coords)
        self.assertEqual(set(picks.tomo_ids), set(NAMES))
        self.assertTrue(np.all(picks.scores > 0))
        result = evaluate_picks(picks, self.truth, self.diameter / 2)
        # Gabor + GMM + watershed reaches 0.85-0.95 one-to-one F1 at SNR 0.15 on
        # larger phantoms; these 48x80x80 ones hold only 12 particles each
        self.assertGreater(result["one_to_one"]["f1"], 0.6, result["one_to_one"])
        masks = prot.segmentations
        self.assertEqual(masks.getSize(), len(NAMES))
        files = {t.getTsId(): t.getFileName() for t in self.importProt.Tomograms}
        for mask in masks:
            tsId = mask.getTsId()
            labels = read_mrc(mask.getFileName())
            self.assertEqual(labels.shape, (48, 80, 80))
            self.assertEqual(mask.getVolName(), files[tsId])
            mine = picks.for_tomogram(tsId)
            # label k is the k-th best pick of that tomogram
            self.assertEqual(int(labels.max()), len(mine))
            order = np.argsort(-mine.scores)
            z, y, x = np.nonzero(labels == 1)
            # picks are centroids on the segmentation grid (step 2 for these
            # 14-voxel particles); each voxel of the written labels takes its
            # nearest grid voxel (an odd voxel, halfway, the next one), which
            # moves a centroid by up to a voxel (half a voxel inside, more
            # where the object meets a face or the picking range)
            np.testing.assert_allclose((x.mean(), y.mean(), z.mean()),
                                       mine.positions[order[0]], atol=1.0)

    def test_given_ranges_and_cluster_are_obeyed(self):
        prot = self.launch(self._picket(featureExtraction=0, clustering=0, localization=0,
                                        zFitRange="16-32", zPickRange="10-30",
                                        particleClusterId=1, seed=3))
        picks = picks_from_coordinates(prot.coordinates)
        self.assertGreater(len(picks), 0)
        self.assertTrue(np.all((picks.positions[:, 2] >= 10) & (picks.positions[:, 2] <= 30)))
        for mask in prot.segmentations:
            labels = read_mrc(mask.getFileName())
            self.assertFalse(labels[:10].any() or labels[31:].any())

    def test_extra_workflows_share_stage_one_and_get_their_own_outputs(self):
        from tomopick.core import picket
        prot = self.launch(self._picket(
            featureExtraction=2, clustering=0, localization=0,
            extraWorkflows="intensities KMeans watershed; Gabor GMM connected components"))
        self.assertEqual(prot.coordinates.getSize(),
                         sum(len(picket.picket_pick(p.tomogram, "intensities", "KMeans",
                                                    particle_diameter=self.diameter)[0])
                             for p in self.phantoms.values()))
        for name, (mode, clusterer, loc) in (
                ("coordinates_intensities_KMeans_watershed",
                 ("intensities", "KMeans", "watershed")),
                ("coordinates_Gabor_GMM_cc", ("Gabor", "GMM", "connected components"))):
            output = getattr(prot, name)
            picks = picks_from_coordinates(output)
            for tsId, phantom in self.phantoms.items():
                ref, _, _ = picket.picket_pick(phantom.tomogram, mode, clusterer, loc,
                                               particle_diameter=self.diameter)
                mine = picks.for_tomogram(tsId)
                # the same picks as the workflow run alone (positions to the
                # coordinates' integer rounding)
                self.assertEqual(len(mine), len(ref), (name, tsId))
                np.testing.assert_allclose(np.sort(mine.positions[:, 0]),
                                           np.sort(ref.positions[:, 0]), atol=1.0)

    def test_bad_parameters_are_named_before_running(self):
        errors = " ".join(self.validationErrors(self._picket(neighborhoodSize=4)))
        self.assertIn("odd", errors)
        errors = " ".join(self.validationErrors(self._picket(zPickRange="10-80")))
        self.assertIn("z range for picking", errors)
        self.assertIn("tomo_1", errors)
        errors = " ".join(self.validationErrors(self._picket(zFitRange="a-b")))
        self.assertIn("z range for fitting", errors)
        errors = " ".join(self.validationErrors(self._picket(particleDiameter=0,
                                                             localization=1, minDistance=0)))
        self.assertIn("watershed", errors)
        errors = " ".join(self.validationErrors(self._picket(extraWorkflows="FFT GMM")))
        self.assertIn("Also run these workflows", errors)
        self.assertIn("'FFT GMM'", errors)
        errors = " ".join(self.validationErrors(self._picket(particleClusterId=3)))
        self.assertIn("Particle cluster", errors)
