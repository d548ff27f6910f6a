"""Headless tests of subtomogram extraction and apply alignment on a simulated phantom.

The phantom is noise-free without wedge, CTF, ice or background so that the
numbers depend only on extraction and alignment: every particle is extracted
at its true position with its true orientation (CSV coordinates imported with
tomopick's importer), aligned, and averaged.
"""
import os

import numpy as np
from tomo.constants import BOTTOM_LEFT_CORNER

from tomopick.convert import subtomogram_matrix
from tomopick.core.extraction import edge_mask
from tomopick.core.formats import read_mrc
from tomopick.core.formats.csv_table import write_csv
from tomopick.tests.protocol_base import TomoPickProtocolTest

PHANTOM = dict(shape=(64, 96, 96), voxel_size=10.0, n_particles=12, n_vesicles=1,
               proteins_per_vesicle=16, tilt_range=None, snr=None, ctf=False,
               background_amplitude=0.0, ice_density=0.0, seed=1)
FREE_CLASS = 4      # 5 particles of this class in the phantom (seed 1)
MEMBRANE_CLASS = 5  # the membrane proteins


def _correlation(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


class TestSubtomogramProtocols(TomoPickProtocolTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        from tomopick.core.picks import Picks
        from tomopick.protocols import ProtTomoPickImportCoordinates
        # two tomograms (seeds 1 and 2): per-tomogram steps and tsId matching
        cls.importTomos, cls.phantoms = cls.simulatedTomograms(names=("tomo_1", "tomo_2"),
                                                               **PHANTOM)
        cls.phantom = cls.phantoms["tomo_1"]
        cls.tomograms = {name: read_mrc(os.path.join(cls.dataDir, f"{name}.mrc"))
                         for name in cls.phantoms}
        cls.truth = {}
        for name, phantom in cls.phantoms.items():
            picks = phantom.particles.subset(np.arange(len(phantom.particles)))
            picks.tomo_ids = np.full(len(picks), name)  # the imported tsId
            # the phantom's matrices carry the position as shift; a coordinate's
            # shift is an offset from its position (SPEC), so keep the rotation only
            picks.matrices[:, :3, 3] = 0.0
            cls.truth[name] = picks
        first = cls.truth["tomo_1"]
        cls.coordinates = {}
        for name, picks in (("free", first.subset(first.group_ids == FREE_CLASS)),
                            ("membrane", first.subset(first.group_ids == MEMBRANE_CLASS)),
                            ("all", Picks.concatenate(cls.truth.values()))):
            path = os.path.join(cls.dataDir, f"coords_{name}.csv")
            write_csv(path, picks)
            prot = cls.newProtocol(ProtTomoPickImportCoordinates, filesPath=path,
                                   filesPattern="", importFrom=1, boxSize=32)
            _link(prot.inputTomograms, cls.importTomos, "Tomograms")
            prot.setObjLabel(f"coordinates {name}")
            cls.coordinates[name] = cls.launch(prot)
        # tomo_1 alone, Fourier-binned by 2: another source (and one lacking tomo_2)
        cls.binned = cls.importTomograms(pattern="tomo_1.mrc", binning=2)

    @classmethod
    def newExtraction(cls, coordinates, tomograms=None, **kwargs):
        from tomopick.protocols import ProtTomoPickExtraction
        prot = cls.newProtocol(ProtTomoPickExtraction, **kwargs)
        _link(prot.inputCoordinates, coordinates, "coordinates")
        if tomograms is not None:
            prot.tomoSource.set(1)
            _link(prot.inputTomograms, tomograms, "Tomograms")
        return prot

    @classmethod
    def extract(cls, coordinates, tomograms=None, **kwargs):
        return cls.launch(cls.newExtraction(coordinates, tomograms, **kwargs))

    @classmethod
    def align(cls, extraction, interpolation=0):
        from tomopick.protocols import ProtTomoPickApplyAlignment
        prot = cls.newProtocol(ProtTomoPickApplyAlignment, interpolation=interpolation)
        _link(prot.inputSubtomograms, extraction, "subtomograms")
        return cls.launch(prot)

    def test_extraction_keeps_coordinates_transforms_and_exact_boxes(self):
        prot = self.extract(self.coordinates["all"], outOfBounds=1)  # pad: keep everything
        subtomos = prot.subtomograms
        total = sum(len(t) for t in self.truth.values())
        self.assertEqual(subtomos.getSize(), total)
        self.assertAlmostEqual(subtomos.getSamplingRate(), 10.0)
        self.assertTrue(subtomos.hasCoordinates3D())
        self.assertEqual(subtomos.getCoordinates3D().getObjId(),
                         self.coordinates["all"].coordinates.getObjId())
        checked = {name: 0 for name in self.truth}
        for subtomo in subtomos.iterSubtomos():
            coord = subtomo.getCoordinate3D()
            tsId = coord.getTomoId()
            self.assertEqual(subtomo.getVolName(), tsId)
            truth = self.truth[tsId]
            position = np.array(coord.getPosition(BOTTOM_LEFT_CORNER))
            row = int(np.argmin(np.linalg.norm(truth.positions - position, axis=1)))
            self.assertLess(np.linalg.norm(truth.positions[row] - position), 1e-3)
            self.assertEqual(coord.getGroupId(), truth.group_ids[row])
            matrix = subtomogram_matrix(subtomo)   # core [[R, t]] = inv(Scipion's M)
            np.testing.assert_allclose(matrix[:3, :3], truth.matrices[row, :3, :3], atol=1e-4)
            # the shift is the sub-voxel remainder of the position
            center = np.floor(truth.positions[row] + 0.5)
            np.testing.assert_allclose(matrix[:3, 3], truth.positions[row] - center, atol=1e-4)
            box = read_mrc(subtomo.getFileName())
            self.assertEqual(box.shape, (32, 32, 32))
            x, y, z = center.astype(int) - 16
            if min(x, y, z) >= 0 and z + 32 <= 64 and y + 32 <= 96 and x + 32 <= 96:
                np.testing.assert_array_equal(
                    box, self.tomograms[tsId][z:z + 32, y:y + 32, x:x + 32])
                checked[tsId] += 1
        self.assertTrue(all(count > 3 for count in checked.values()), checked)
        summary = "\n".join(prot.summary())
        self.assertIn(f"{total} subtomograms", summary)

    def test_extraction_options_invert_normalize_downsample_and_skip(self):
        prot = self.extract(self.coordinates["all"], boxSize=40, downFactor=2.0, doInvert=True,
                            doNormalize=True, normproc=1, outOfBounds=0)
        subtomos = prot.subtomograms
        self.assertAlmostEqual(subtomos.getSamplingRate(), 20.0)
        # boxes of 40 around positions closer than 20 voxels to an edge are skipped
        positions = np.concatenate([t.positions for t in self.truth.values()])
        center = np.floor(positions + 0.5)
        size = np.array([96, 96, 64])
        inside = np.all((center - 20 >= 0) & (center + 20 <= size), axis=1)
        self.assertEqual(subtomos.getSize(), int(inside.sum()))
        self.assertEqual(prot.nSkipped.get(), int((~inside).sum()))
        self.assertIn(f"{int((~inside).sum())} particles skipped", "\n".join(prot.summary()))
        edge = edge_mask(20)
        for subtomo in subtomos.iterItems():
            box = read_mrc(subtomo.getFileName())
            self.assertEqual(box.shape, (20, 20, 20))
            self.assertAlmostEqual(float(box[edge].mean()), 0.0, places=4)
            self.assertAlmostEqual(float(box[edge].std()), 1.0, places=4)
            # inverted: the (dark) particle is bright at the centre
            self.assertGreater(box[8:12, 8:12, 8:12].mean(), 0.5)

    def test_extraction_from_other_tomograms_rescales_positions_and_box(self):
        from tomopick.protocols.protocol_extraction import ExtractionBoxSizeWizard
        binned = self.binned
        prot = self.newExtraction(self.coordinates["free"], tomograms=binned)
        # the wizard (and boxSize 0) give the coordinates' 32 voxels at 10 Å as 16 at 20 Å
        self.assertEqual(ExtractionBoxSizeWizard.boxSize(prot), 16)
        prot = self.launch(prot)
        subtomos = prot.subtomograms
        self.assertAlmostEqual(subtomos.getSamplingRate(), 20.0)
        # box 32 of the 10 Å coordinates is 16 voxels of the 20 Å tomograms
        self.assertEqual(subtomos.getDim(), (16, 16, 16))
        # each box is the slab of the binned tomogram around the position / 2
        binnedVolume = read_mrc(binned.Tomograms.getFirstItem().getFileName())
        for subtomo in subtomos.iterSubtomos():
            position = np.array(subtomo.getCoordinate3D().getPosition(BOTTOM_LEFT_CORNER)) / 2
            center = np.floor(position + 0.5)
            np.testing.assert_allclose(subtomogram_matrix(subtomo)[:3, 3],
                                       position - center, atol=1e-4)
            x, y, z = center.astype(int) - 8
            np.testing.assert_array_equal(read_mrc(subtomo.getFileName()),
                                          binnedVolume[z:z + 16, y:y + 16, x:x + 16])

    def test_extraction_names_the_missing_tsid(self):
        # a source set holding tomo_1 only, for coordinates on tomo_1 and tomo_2
        prot = self.newExtraction(self.coordinates["all"], tomograms=self.binned)
        errors = "\n".join(self.validationErrors(prot))
        self.assertIn("tomo_2", errors)
        self.assertNotIn("tomo_1,", errors)
        self.assertIn("no tomogram", errors)

    def test_apply_alignment_average_matches_the_template(self):
        extraction = self.extract(self.coordinates["free"], boxSize=31, doInvert=True)
        prot = self.align(extraction)
        template = self.phantom.templates[FREE_CLASS]
        average = read_mrc(prot.outputAverage.getFileName())
        self.assertAlmostEqual(prot.outputAverage.getSamplingRate(), 10.0)
        self.assertEqual(average.shape, template.shape)
        diameter = self.phantom.particle_info["diameter"][
            self.phantom.particles.group_ids == FREE_CLASS][0]
        z, y, x = np.indices(template.shape) - template.shape[0] // 2
        sphere = x ** 2 + y ** 2 + z ** 2 <= (diameter / 2) ** 2
        aligned_cc = _correlation(average[sphere], template[sphere])
        # measured 0.995 in the core round trip: neighbours reach into the sphere
        self.assertGreater(aligned_cc, 0.9)
        # the unaligned mean of the same boxes is much worse
        boxes = np.stack([read_mrc(s.getFileName())
                          for s in extraction.subtomograms.iterItems()])
        self.assertLess(_correlation(boxes.mean(axis=0)[sphere], template[sphere]),
                        aligned_cc - 0.1)
        outputs = prot.outputSubtomograms
        self.assertEqual(outputs.getSize(), extraction.subtomograms.getSize())
        self.assertFalse(outputs.hasAlignment())
        for subtomo in outputs.iterItems():
            np.testing.assert_allclose(subtomo.getTransform().getMatrix(), np.eye(4))
            self.assertTrue(os.path.exists(subtomo.getFileName()))
        # the outputs average to the average
        aligned = np.stack([read_mrc(s.getFileName()) for s in outputs.iterItems()])
        np.testing.assert_allclose(aligned.mean(axis=0), average, atol=1e-5)

    def test_apply_alignment_membrane_proteins_membrane_horizontal_protein_up(self):
        extraction = self.extract(self.coordinates["membrane"], doInvert=True)
        prot = self.align(extraction, interpolation=1)  # cubic
        average = read_mrc(prot.outputAverage.getFileName())
        n = average.shape[0]
        offsets = self.phantom.particle_info["offset"][
            self.phantom.particles.group_ids == MEMBRANE_CLASS]
        mid_plane = n // 2 - float(np.median(offsets))
        z, y, x = np.indices(average.shape) - n // 2
        radius = np.sqrt(x ** 2 + y ** 2)
        heights = np.arange(n)
        slab = np.abs(heights - mid_plane) <= 3.5
        for lo, hi in ((0, 3), (3, 6)):
            ring = (radius >= lo) & (radius < hi)
            column = np.array([average[k][ring[k]].mean() for k in range(n)])
            window = np.where(slab, column, 0.0)
            self.assertLess(abs((heights * window).sum() / window.sum() - mid_plane), 1.0)
        axis = np.array([average[k][(radius < 3)[k]].mean() for k in range(n)])
        above = axis[int(np.ceil(mid_plane + 3.5)):].sum()
        below = axis[:int(np.floor(mid_plane - 3.5))].sum()
        self.assertGreater(above, 2.0)
        self.assertGreater(above, 20 * below)


def _link(param, prot, output):
    """Point a protocol's pointer parameter at another protocol's output.

    (A Pointer passed to newProtocol would be wrapped in a second Pointer.)
    """
    param.set(prot)
    param.setExtended(output)
