"""Orientations as the rest of Scipion reads and writes them (SPEC "Orientation").

Scipion objects store M with f'(r) = f(M r) (f the reference, f' the
particle): the particle's z-axis is ``tomo.utils.normalFromMatrix(M)`` and
xmipptomo's apply alignment computes out(r) = in(inv(M) r), r about the box
centre. These tests check tomopick's outputs with those definitions, written
here from the documented conventions and not taken from tomopick, and feed
tomopick matrices made the way scipion-em-reliontomo and scipion-em-dynamo
make them.

The phantom is drawn here: asymmetric particles (an ellipsoid elongated along
the particle z-axis plus a satellite blob at +5 voxels on that axis), noise
free, at sub-voxel positions with random orientations, so an aligned particle
can be compared with the same particle drawn at the box centre along +z.
"""
import os

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from tomopick.core.formats import read_mrc, write_mrc
from tomopick.core.formats.csv_table import write_csv
from tomopick.core.picks import Picks
from tomopick.core.rotations import angle_between, homogeneous
from tomopick.tests.protocol_base import TomoPickProtocolTest

VOXEL = 10.0
SHAPE = (64, 64, 64)            # z, y, x
BOX = 24
CENTRES = np.array([[16, 16, 16], [48, 16, 16], [16, 48, 16], [48, 48, 16],
                    [16, 16, 48], [48, 16, 48], [16, 48, 48], [48, 48, 48]], float)


def particle(points):
    """Density of the particle at points given in its own frame (x, y, z voxels)."""
    x, y, z = np.moveaxis(points, -1, 0)
    body = np.exp(-(x ** 2 + y ** 2) / (2 * 1.5 ** 2) - z ** 2 / (2 * 3.0 ** 2))
    tip = 0.6 * np.exp(-(x ** 2 + y ** 2 + (z - 5.0) ** 2) / (2 * 1.2 ** 2))
    return body + tip


def draw(shape, positions, rotations):
    """Volume [z, y, x] with a particle at each position (x, y, z), z-axis R @ (0, 0, 1)."""
    zz, yy, xx = np.indices(shape, dtype=float)
    grid = np.stack([xx, yy, zz], -1)
    volume = np.zeros(shape)
    for c, R in zip(positions, rotations):
        volume += particle((grid - c) @ R)      # the particle frame of r is R^T (r - c)
    return volume.astype(np.float32)


def reference():
    """The particle drawn at the box centre with its z-axis along +z."""
    return draw((BOX,) * 3, [np.full(3, BOX // 2, float)], [np.eye(3)])


def xmipp_apply_alignment(box, M):
    """out(r) = in(inv(M) r), r (x, y, z) about the box centre (index n // 2), as
    xmipptomo applies a Scipion transform; cubic B-spline interpolation."""
    inverse = np.linalg.inv(M)
    A = inverse[:3, :3][::-1, ::-1]             # (x, y, z) -> [z, y, x]
    centre = np.array(box.shape) // 2
    offset = centre + inverse[:3, 3][::-1] - A @ centre
    return ndimage.affine_transform(box, A, offset, order=3, mode="grid-constant")


def moments(volume):
    """Centroid (x, y, z) and principal axis of a positive density."""
    w = np.clip(volume, 0, None).astype(float)
    zz, yy, xx = np.indices(volume.shape, dtype=float)
    coords = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], 1)
    weights = w.ravel() / w.sum()
    centroid = weights @ coords
    d = coords - centroid
    cov = (d * weights[:, None]).T @ d
    return centroid, np.linalg.eigh(cov)[1][:, -1]


def correlation(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def relion_angles_of(rotations):
    """RELION 5 (rot, tilt, psi): intrinsic ZYZ Euler angles, degrees, of the rotation
    that turns the particle onto the reference: ``Rotation.from_euler('ZYZ', angles)
    .inv()`` is the particle's frame in the tomogram (RELION's matrix A of the angles
    is ``Rotation.from_euler('ZYZ', angles).as_matrix().T``; the CryoET Data Portal
    converts RELION angles the same way)."""
    return Rotation.from_matrix(rotations).inv().as_euler("ZYZ", degrees=True)


def reliontomo_matrix(rot, tilt, psi, shift_angst=(0.0, 0.0, 0.0), sampling=VOXEL):
    """The matrix scipion-em-reliontomo builds from a particle row (convertBase.
    genTransformMatrix): euler_matrix(-rot, -tilt, -psi, 'szyz') with the origin
    shift negated, inverted; its coordinates are then given it with
    ``setMatrix(N, convention=TR_RELION)``."""
    from pwem.convert.transformations import euler_matrix
    N = euler_matrix(*np.radians([-rot, -tilt, -psi]), axes="szyz")
    N[:3, 3] = -np.asarray(shift_angst, float) / sampling
    return np.linalg.inv(N)


class TestScipionConvention(TomoPickProtocolTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        from tomopick.protocols import ProtTomoPickImportCoordinates
        rng = np.random.default_rng(12)
        cls.positions = CENTRES + rng.uniform(-0.5, 0.5, CENTRES.shape)
        cls.rotations = Rotation.random(len(CENTRES), random_state=3).as_matrix()
        cls.axes = cls.rotations[:, :, 2]
        write_mrc(os.path.join(cls.dataDir, "tomo_1.mrc"),
                  draw(SHAPE, cls.positions, cls.rotations), VOXEL)
        cls.tomoProt = cls.importTomograms(pattern="tomo_1.mrc", samplingRate=VOXEL)
        cls.tomograms = cls.tomoProt.Tomograms
        path = os.path.join(cls.dataDir, "truth.csv")
        write_csv(path, Picks("tomo_1", cls.positions, matrices=homogeneous(cls.rotations),
                              voxel_size=VOXEL))
        prot = cls.newProtocol(ProtTomoPickImportCoordinates, filesPath=path, filesPattern="",
                               importFrom=1, boxSize=BOX)
        prot.inputTomograms.set(cls.tomoProt)
        prot.inputTomograms.setExtended("Tomograms")
        cls.importProt = cls.launch(prot)
        cls.extraction = cls.extract(cls.importProt, "coordinates")
        cls.reference = reference()

    # ------------------------------------------------------------- helpers
    @classmethod
    def extract(cls, prot, output):
        from tomopick.protocols import ProtTomoPickExtraction
        extraction = cls.newProtocol(ProtTomoPickExtraction, boxSize=BOX)
        extraction.inputCoordinates.set(prot)
        extraction.inputCoordinates.setExtended(output)
        return cls.launch(extraction)

    @classmethod
    def align(cls, prot, output):
        from tomopick.protocols import ProtTomoPickApplyAlignment
        align = cls.newProtocol(ProtTomoPickApplyAlignment, interpolation=1)
        align.inputSubtomograms.set(prot)
        align.inputSubtomograms.setExtended(output)
        return cls.launch(align)

    @classmethod
    def register(cls, prot, name, emset):
        """Make a set written here an output of ``prot`` (as viewers register subsets)."""
        emset.write()
        prot._defineOutputs(**{name: emset})
        cls.proj._storeProtocol(prot)

    def truthRow(self, position):
        row = int(np.argmin(np.linalg.norm(self.positions - position, axis=1)))
        self.assertLess(np.linalg.norm(self.positions[row] - position), 1e-3)
        return row

    def assertCentredAlongZ(self, volume, centroid_tol=0.1, axis_tol=2.0, label=""):
        want_centroid, want_axis = moments(self.reference)
        centroid, axis = moments(volume)
        self.assertLess(np.abs(centroid - want_centroid).max(), centroid_tol,
                        f"{label}: centroid {centroid} vs {want_centroid}")
        self.assertLess(min(angle_between(axis, want_axis), angle_between(-axis, want_axis)),
                        axis_tol, label)
        self.assertGreater(correlation(volume, self.reference), 0.98, label)
        print("MEASURE", label, np.abs(centroid - want_centroid).max(), min(angle_between(axis, want_axis), angle_between(-axis, want_axis)), correlation(volume, self.reference))

    # --------------------------------------------------------------- tests
    def test_coordinates_and_subtomograms_carry_scipions_matrix(self):
        from tomo.utils import normalFromMatrix

        from tomopick.convert import legacy_convention
        coords = self.importProt.coordinates
        self.assertFalse(legacy_convention(coords))
        for coord in coords.iterCoordinates():
            from tomo.constants import BOTTOM_LEFT_CORNER
            row = self.truthRow(np.array(coord.getPosition(BOTTOM_LEFT_CORNER)))
            self.assertLess(angle_between(normalFromMatrix(coord.getMatrix()), self.axes[row]),
                            1e-4)
        subtomos = self.extraction.subtomograms
        self.assertFalse(legacy_convention(subtomos))
        for subtomo in subtomos.iterSubtomos():
            from tomo.constants import BOTTOM_LEFT_CORNER
            row = self.truthRow(np.array(subtomo.getCoordinate3D().getPosition(BOTTOM_LEFT_CORNER)))
            M = subtomo.getTransform().getMatrix()
            self.assertLess(angle_between(normalFromMatrix(M), self.axes[row]), 1e-4)

    def test_xmipp_apply_alignment_centres_tomopicks_subtomograms_along_z(self):
        subtomos = self.extraction.subtomograms
        self.assertEqual(subtomos.getSize(), len(CENTRES))
        errors = []
        for subtomo in subtomos.iterSubtomos():
            box = read_mrc(subtomo.getFileName())
            aligned = xmipp_apply_alignment(box, subtomo.getTransform().getMatrix())
            self.assertCentredAlongZ(aligned, label=f"subtomogram {subtomo.getObjId()}")
            errors.append(np.abs(moments(aligned)[0] - moments(self.reference)[0]).max())
        # before the fix: 0.7-1.4 voxels off and the axis ~54 degrees away
        self.assertLess(max(errors), 0.1)

    def test_relion5_star_imported_as_reliontomo_does_is_averaged_along_z(self):
        import pandas as pd
        import starfile
        from tomo.constants import SCIPION, TR_RELION
        from tomo.objects import Coordinate3D, SetOfCoordinates3D

        # a RELION 5 particles file: centred coordinates in Å, angles from scipy
        rot, tilt, psi = relion_angles_of(self.rotations).T
        centred = (self.positions - np.array(SHAPE[::-1]) / 2) * VOXEL
        star = os.path.join(self.dataDir, "particles.star")
        starfile.write({"particles": pd.DataFrame({
            "rlnTomoName": ["tomo_1"] * len(rot),
            "rlnCenteredCoordinateXAngst": centred[:, 0],
            "rlnCenteredCoordinateYAngst": centred[:, 1],
            "rlnCenteredCoordinateZAngst": centred[:, 2],
            "rlnAngleRot": rot, "rlnAngleTilt": tilt, "rlnAnglePsi": psi})}, star,
            float_format="%.6f")
        # read as scipion-em-reliontomo's RELION 5 importer does: centred Å / sampling
        # as Scipion-origin coordinates, matrix with convention TR_RELION
        table = starfile.read(star)
        tomogram = self.tomograms.getFirstItem()
        coords = SetOfCoordinates3D.create(self.dataDir, template="relion%s.sqlite")
        coords.setPrecedents(self.tomograms)
        coords.setSamplingRate(VOXEL)
        coords.setBoxSize(BOX)
        for _, row in table.iterrows():
            coord = Coordinate3D()
            coord.setVolume(tomogram)
            coord.setPosition(*(row[f"rlnCenteredCoordinate{a}Angst"] / VOXEL for a in "XYZ"),
                              SCIPION)
            coord.setMatrix(reliontomo_matrix(row["rlnAngleRot"], row["rlnAngleTilt"],
                                              row["rlnAnglePsi"]), convention=TR_RELION)
            coords.append(coord)
        self.register(self.tomoProt, "relionCoordinates", coords)
        extraction = self.extract(self.tomoProt, "relionCoordinates")
        average = read_mrc(self.align(extraction, "subtomograms").outputAverage.getFileName())
        # before the fix the average had its axis ~53 degrees from +z
        self.assertCentredAlongZ(average, label="RELION import average")

    def test_dynamo_made_subtomograms_name_the_tomogram_path(self):
        """scipion-em-dynamo's volume name is the tomogram's path; files may be stacks."""
        from tomo.objects import SetOfSubTomograms, SubTomogram
        from pwem.objects import Transform

        source = list(self.extraction.subtomograms.iterSubtomos())
        stack = os.path.join(self.dataDir, "dynamo_particles.mrc")
        write_mrc(stack, np.concatenate([read_mrc(s.getFileName()) for s in source]), VOXEL)
        subtomos = SetOfSubTomograms.create(self.dataDir, template="dynamo%s.sqlite")
        subtomos.setSamplingRate(VOXEL)
        tomoPath = self.tomograms.getFirstItem().getFileName()
        for index, s in enumerate(source, start=1):
            subtomo = SubTomogram()
            subtomo.setLocation(index, stack)
            subtomo.setSamplingRate(VOXEL)
            subtomo.setVolName(tomoPath)
            subtomo.setTransform(Transform(s.getTransform().getMatrix()))
            subtomos.append(subtomo)
        self.register(self.tomoProt, "dynamoSubtomograms", subtomos)
        aligned = self.align(self.tomoProt, "dynamoSubtomograms")
        self.assertEqual(aligned.outputSubtomograms.getSize(), len(source))
        self.assertCentredAlongZ(read_mrc(aligned.outputAverage.getFileName()),
                                 label="Dynamo-made subtomograms")

    def test_sets_of_tomopick_0_1_are_read_as_before(self):
        """0.1.x stored the inverse of Scipion's M and no marker: same picks, same average."""
        from tomo.objects import SetOfCoordinates3D, SetOfSubTomograms
        from pwem.objects import Transform

        from tomopick.convert import (MATRIX_CONVENTION_ATTR, legacy_convention,
                                      picks_from_coordinates, subtomogram_groups)
        new = self.importProt.coordinates
        old = SetOfCoordinates3D.create(self.importProt._getPath(), template="old%s.sqlite")
        old.copyInfo(new)
        self.assertIsNone(getattr(old, MATRIX_CONVENTION_ATTR, None))
        for coord in new.iterCoordinates():
            copy = coord.clone()
            copy.setMatrix(np.linalg.inv(coord.getMatrix()))   # written the 0.1.x way
            old.append(copy)
        self.register(self.importProt, "oldCoordinates", old)
        old = self.importProt.oldCoordinates
        self.assertTrue(legacy_convention(old))
        got, want = picks_from_coordinates(old), picks_from_coordinates(new)
        np.testing.assert_allclose(got.matrices, want.matrices, atol=1e-9)
        for row, matrix in zip(map(self.truthRow, got.positions), got.matrices):
            np.testing.assert_allclose(matrix[:3, :3], self.rotations[row], atol=1e-6)
        # extracted now: a marked set, centred along z by the others' definition
        for subtomo in self.extract(self.importProt, "oldCoordinates").subtomograms:
            aligned = xmipp_apply_alignment(read_mrc(subtomo.getFileName()),
                                            subtomo.getTransform().getMatrix())
            self.assertCentredAlongZ(aligned, label="extracted from a 0.1.x set")
        # subtomograms written by 0.1.x extraction: aligned as before
        newSub = self.extraction.subtomograms
        oldSub = SetOfSubTomograms.create(self.extraction._getPath(), template="old%s.sqlite")
        oldSub.copyInfo(newSub)
        getattr(oldSub, MATRIX_CONVENTION_ATTR).set(None)    # copyInfo copied the marker
        for subtomo in newSub.iterSubtomos():
            copy = subtomo.clone()
            copy.setTransform(Transform(np.linalg.inv(subtomo.getTransform().getMatrix())))
            oldSub.append(copy)
        self.register(self.extraction, "oldSubtomograms", oldSub)
        self.assertTrue(legacy_convention(self.extraction.oldSubtomograms))
        groups = subtomogram_groups(self.extraction.oldSubtomograms)
        for (_, _, _, got), (_, _, _, want) in zip(groups["tomo_1"],
                                                   subtomogram_groups(newSub)["tomo_1"]):
            np.testing.assert_allclose(got, want, atol=1e-9)
        average = read_mrc(self.align(self.extraction, "oldSubtomograms")
                           .outputAverage.getFileName())
        self.assertCentredAlongZ(average, label="0.1.x subtomograms")
