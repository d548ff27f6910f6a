"""Headless tests of ProtTomoPickImportCoordinates: every format onto the truth, errors.

The truth is a table of picks inside two tomograms; each format's file is
written from it, imported through pyworkflow, and the coordinates read back
from the output set with getPosition(BOTTOM_LEFT_CORNER) must land within
0.01 voxel (the formats store 4 decimals or float32).
"""
import os

import numpy as np
from scipy.spatial.transform import Rotation
from tomo.constants import BOTTOM_LEFT_CORNER
from tomo.objects import SetOfMeshes

from tomopick.convert import picks_from_coordinates
from tomopick.core.formats import write_coordinates, write_mrc
from tomopick.core.picks import Picks
from tomopick.core.rotations import homogeneous
from tomopick.protocols import ProtTomoPickImportCoordinates
from tomopick.tests.protocol_base import TomoPickProtocolTest

VOXEL = 10.0
SHAPES = {"TS_01": (48, 40, 24), "TS_02": (40, 48, 20)}  # (nx, ny, nz)
EXT = {"csv": "csv", "star": "star", "tbl": "tbl", "mod": "mod", "ndjson": "ndjson",
       "yaml": "yaml"}


def truth_picks(seed=0, per_tomogram=6):
    rng = np.random.default_rng(seed)
    tomo_ids, positions = [], []
    for tsId, shape in SHAPES.items():
        tomo_ids += [tsId] * per_tomogram
        positions.append(rng.uniform(1, np.array(shape) - 2, (per_tomogram, 3)))
    n = len(tomo_ids)
    rotations = Rotation.random(n, random_state=seed).as_matrix()
    return Picks(tomo_ids, np.concatenate(positions), rng.integers(1, 4, n),
                 homogeneous(rotations), rng.uniform(0, 1, n), VOXEL)


class TestImportCoordinates(TomoPickProtocolTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        tomoDir = os.path.join(cls.dataDir, "tomograms")
        os.makedirs(tomoDir)
        rng = np.random.default_rng(1)
        for tsId, (nx, ny, nz) in SHAPES.items():
            write_mrc(os.path.join(tomoDir, f"{tsId}.mrc"),
                      rng.normal(size=(nz, ny, nx)).astype(np.float32), VOXEL)
        cls.tomoProt = cls.importTomograms(pattern="{TS}.mrc", directory=tomoDir)
        cls.truth = truth_picks()

    # ------------------------------------------------------------ helpers
    def _writeFiles(self, fmt, name, picks=None, voxel=VOXEL):
        """Files of the truth in one format: one per tomogram where the format needs it."""
        picks = self.truth if picks is None else picks
        directory = os.path.join(self.dataDir, name)
        os.makedirs(directory, exist_ok=True)
        shapes = {t: tuple(np.array(s) * VOXEL / voxel) for t, s in SHAPES.items()}
        if fmt in ("mod", "ndjson", "yaml"):
            for tsId in SHAPES:
                write_coordinates(os.path.join(directory, f"{tsId}.{EXT[fmt]}"),
                                  picks.for_tomogram(tsId), fmt, voxel_size=voxel)
        else:
            write_coordinates(os.path.join(directory, f"picks.{EXT[fmt]}"), picks, fmt,
                              voxel_size=voxel, tomo_shapes=shapes)
        return directory

    def _newImport(self, directory, pattern="*", **kwargs):
        prot = self.newProtocol(ProtTomoPickImportCoordinates, filesPath=directory,
                                filesPattern=pattern, **kwargs)
        # a Pointer given to newProtocol would be wrapped in a second Pointer
        prot.inputTomograms.set(self.tomoProt)
        prot.inputTomograms.setExtended("Tomograms")
        return prot

    @staticmethod
    def _table(coordSet):
        """tsId -> [(position, rotation, group, score)] of an output set.

        Positions straight from getPosition(BOTTOM_LEFT_CORNER); rotations
        through convert.picks_from_coordinates, the one place that knows how
        tomopick's R is stored in a Coordinate3D.
        """
        picks = picks_from_coordinates(coordSet)
        matrices = picks.matrices if picks.has_orientations else \
            np.tile(np.eye(4), (len(picks), 1, 1))
        rows = {}
        for i, coord in enumerate(coordSet.iterCoordinates()):
            rows.setdefault(coord.getTomoId(), []).append(
                (np.array(coord.getPosition(BOTTOM_LEFT_CORNER)), matrices[i],
                 coord.getGroupId(), coord.getScore()))
        return rows

    def _assertLandsOnTruth(self, coordSet, oriented, grouped, scored, scale=1.0):
        rows = self._table(coordSet)
        self.assertEqual(sorted(rows), sorted(SHAPES))
        for tsId in SHAPES:
            truth = self.truth.for_tomogram(tsId)
            got = rows[tsId]
            self.assertEqual(len(got), len(truth))
            for i in range(len(truth)):
                # match each true pick to its nearest imported one (formats may reorder)
                dist = [np.linalg.norm(p - truth.positions[i] * scale) for p, *_ in got]
                j = int(np.argmin(dist))
                self.assertLess(dist[j], 0.01, f"{tsId} pick {i}")
                _, matrix, group, score = got[j]
                if oriented:
                    rel = matrix[:3, :3].T @ truth.matrices[i, :3, :3]
                    self.assertLess(np.degrees(Rotation.from_matrix(rel).magnitude()), 0.01)
                if grouped:
                    self.assertEqual(group, truth.group_ids[i])
                if scored:
                    self.assertAlmostEqual(score, truth.scores[i], places=5)

    # ------------------------------------------------------------ formats
    def test_every_format_lands_on_the_truth_in_bottom_left_voxels(self):
        carries = {"csv": (True, True, True), "star": (True, True, True),
                   "tbl": (True, True, True), "mod": (False, True, False),
                   "ndjson": (True, False, False), "yaml": (False, False, False)}
        for fmt, (oriented, grouped, scored) in carries.items():
            with self.subTest(fmt=fmt):
                directory = self._writeFiles(fmt, f"all_{fmt}")
                prot = self.launch(self._newImport(directory, f"*.{EXT[fmt]}"))
                self.assertEqual(prot.coordinates.getSize(), len(self.truth))
                self.assertAlmostEqual(prot.coordinates.getSamplingRate(), VOXEL)
                self._assertLandsOnTruth(prot.coordinates, oriented, grouped, scored)

    def test_explicit_format_and_ts_pattern_on_names_without_extension(self):
        directory = os.path.join(self.dataDir, "portal")
        os.makedirs(directory)
        for tsId in SHAPES:
            write_coordinates(os.path.join(directory, f"{tsId}_ribosome.json"),
                              self.truth.for_tomogram(tsId), "ndjson")
        prot = self.launch(self._newImport(directory, "{TS}_ribosome.json",
                                           importFrom=5))  # ndjson
        self._assertLandsOnTruth(prot.coordinates, True, False, False)

    def test_coordinates_at_another_sampling_rate_are_rescaled(self):
        fine = self.truth.rescaled(VOXEL / 2)
        directory = self._writeFiles("csv", "fine_csv", picks=fine, voxel=VOXEL / 2)
        prot = self.launch(self._newImport(directory, "*.csv", samplingRate=VOXEL / 2,
                                           boxSize=40))
        self._assertLandsOnTruth(prot.coordinates, True, True, True)
        self.assertEqual(prot.coordinates.getBoxSize(), 20)

    def test_meshes_output_keeps_groups_as_meshes(self):
        directory = self._writeFiles("tbl", "as_meshes")
        prot = self.launch(self._newImport(directory, "*.tbl", outputType=1))
        self.assertIsInstance(prot.meshes, SetOfMeshes)
        self.assertIsNone(getattr(prot, "coordinates", None))
        self._assertLandsOnTruth(prot.meshes, True, True, True)
        groups = {(t, g) for t, g in zip(self.truth.tomo_ids, self.truth.group_ids)}
        self.assertEqual(prot.meshes.getNumberOfMeshes(), len(groups))

    # ------------------------------------------------------------- errors
    def test_pattern_matching_nothing_is_a_validation_error(self):
        errors = self.validationErrors(self._newImport(self.dataDir, "nothing_*.star"))
        self.assertTrue(any("No files match" in e for e in errors), errors)

    def test_per_tomogram_file_named_after_no_tomogram_is_a_validation_error(self):
        directory = os.path.join(self.dataDir, "orphan")
        os.makedirs(directory)
        write_coordinates(os.path.join(directory, "mystery.mod"),
                          self.truth.for_tomogram("TS_01"), "mod")
        errors = self.validationErrors(self._newImport(directory, "*.mod"))
        self.assertTrue(any("mystery.mod" in e and "tsId" in e for e in errors), errors)

    def test_unknown_tsid_fails_naming_it_and_keeps_the_project_readable(self):
        before = self.launch(self._newImport(self._writeFiles("csv", "good_csv"), "*.csv"))
        bad = Picks.concatenate([self.truth, Picks(["TS_99"] * 2, [[1, 1, 1], [2, 2, 2]],
                                                   [1, 1], np.tile(np.eye(4), (2, 1, 1)),
                                                   [0.5, 0.5], VOXEL)])
        failed = self.launchExpectingFailure(
            self._newImport(self._writeFiles("csv", "unknown_ts", picks=bad), "*.csv"))
        self.assertIn("TS_99", failed.getErrorMessage())
        self.assertIn("2 coordinates", failed.getErrorMessage())
        self.assertIsNone(getattr(failed, "coordinates", None))
        # the project database still holds the earlier, complete output
        earlier = self.proj.getProtocol(before.getObjId())
        self.assertEqual(earlier.coordinates.getSize(), len(self.truth))

    def test_coordinates_outside_the_tomogram_fail_naming_tsid_count_and_position(self):
        outside = self.truth.rescaled(VOXEL / 3)  # as if the sampling rate were wrong
        outside.voxel_size = VOXEL
        directory = self._writeFiles("csv", "outside", picks=outside)
        failed = self.launchExpectingFailure(self._newImport(directory, "*.csv"))
        message = failed.getErrorMessage()
        self.assertRegex(message, r"\d+ of 6 coordinates lie outside tomogram TS_0[12]")
        self.assertRegex(message, r"the first at \(-?\d+\.\d, -?\d+\.\d, -?\d+\.\d\) voxels")
