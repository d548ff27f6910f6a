"""Headless tests of ProtTomoPickConsensus: votes, rescaling, input order, validation, summary."""
import os

import numpy as np
from tomo.constants import BOTTOM_LEFT_CORNER

from tomopick.convert import picks_from_coordinates
from tomopick.core.formats import write_coordinates
from tomopick.core.picks import Picks
from tomopick.core.rotations import euler_zxz_to_matrix, homogeneous
from tomopick.protocols import ProtTomoPickConsensus, ProtTomoPickImportCoordinates
from tomopick.tests.protocol_base import TomoPickProtocolTest

# Known particles (x, y, z voxels at 10 Å) in two 64 x 64 x 32 tomograms.
P = {"TS_01": np.array([[10., 12, 8], [30, 40, 16], [50, 20, 24], [20, 50, 10]]),
     "TS_02": np.array([[15., 15, 15], [45, 45, 20]])}
# Which particles each picking found (TS_01 / TS_02), with a small offset.
FOUND = {"A": ({0, 1, 2}, {0, 1}), "B": ({0, 1}, {0, 1}), "C": ({0, 3}, set())}
OFFSET = {"A": [0.5, 0, 0], "B": [-0.5, 0.5, 0], "C": [0, -0.5, 0.5]}
# Orientation of every particle, and each picking's error about x: A and B
# err by +-6 degrees, C not at all, so the mean of A, B, C (or A, B) is exact.
R_TRUE = {ts: euler_zxz_to_matrix(np.arange(len(p)) * 40.0 + 10, 50.0, -30.0)
          for ts, p in P.items()}
TILT_ERROR = {"A": 6.0, "B": -6.0, "C": 0.0}
GROUP = {"A": 2, "B": 2, "C": 3}


def _picked(name, scale=1.0):
    """A picking as a Picks table (voxels of 10 Å * scale)."""
    rows = [(ts, i) for k, ts in enumerate(("TS_01", "TS_02")) for i in sorted(FOUND[name][k])]
    error = euler_zxz_to_matrix(0.0, TILT_ERROR[name], 0.0)
    return Picks([ts for ts, _ in rows], [(P[ts][i] + OFFSET[name]) / scale for ts, i in rows],
                 group_ids=[GROUP[name]] * len(rows),
                 matrices=homogeneous(np.array([R_TRUE[ts][i] @ error for ts, i in rows])),
                 scores=np.full(len(rows), 0.5), voxel_size=10.0 * scale)


def _rows(coordinates):
    """(tsId, x, y, z, score) of every output coordinate, sorted."""
    return sorted((c.getTomoId(), *np.round(c.getPosition(BOTTOM_LEFT_CORNER), 6),
                   c.getScore()) for c in coordinates.iterCoordinates())


class TestPickingConsensus(TomoPickProtocolTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        small = dict(shape=(32, 64, 64), n_particles=3, n_vesicles=0, tilt_range=None,
                     ctf=False, snr=None, keep_clean=False)
        cls.tomoProt, _ = cls.simulatedTomograms(names=("TS_01", "TS_02"), **small)
        cls.binnedProt = cls.importTomograms(pattern="{TS}.mrc", binning=2)
        cls.coords = {name: cls._importCoordinates(name, _picked(name), cls.tomoProt)
                      for name in "ABC"}
        # every particle, picked once with exact orientations and once without any
        every = [(ts, i) for ts in ("TS_01", "TS_02") for i in range(len(P[ts]))]
        cls.coords["oriented"] = cls._importCoordinates("oriented", Picks(
            [ts for ts, _ in every], [P[ts][i] + [0.5, 0, 0] for ts, i in every],
            matrices=homogeneous(np.array([R_TRUE[ts][i] for ts, i in every])),
            voxel_size=10.0), cls.tomoProt)
        cls.coords["unoriented"] = cls._importCoordinates("unoriented", Picks(
            [ts for ts, _ in every], [P[ts][i] - [0.5, 0, 0] for ts, i in every],
            voxel_size=10.0), cls.tomoProt)
        # picking A again on the tomograms binned by 2 (20 Å): positions halved
        cls.coords["A20"] = cls._importCoordinates("A20", _picked("A", scale=2.0),
                                                   cls.binnedProt)

    @classmethod
    def _importCoordinates(cls, name, picks, tomoProt):
        folder = os.path.join(cls.dataDir, f"coords_{name}")
        os.makedirs(folder)
        write_coordinates(os.path.join(folder, "picks.csv"), picks, "csv")
        prot = cls.newProtocol(ProtTomoPickImportCoordinates, filesPath=folder,
                               filesPattern="picks.csv", boxSize=24)
        # a Pointer given to newProtocol would be wrapped in a second Pointer
        prot.inputTomograms.set(tomoProt)
        prot.inputTomograms.setExtended("Tomograms")
        return cls.launch(prot)

    def _consensus(self, names, **kwargs):
        prot = self.newProtocol(ProtTomoPickConsensus, **kwargs)
        for name in names:
            prot.inputCoordinates.append(self.pointer(self.coords[name], "coordinates"))
        return prot

    def _expected(self, particles, votes, offsets):
        """Rows for particles given as (tsId, index) with their members' offsets."""
        return sorted((ts, *np.round(P[ts][i] + np.mean(off, axis=0), 6), float(v))
                      for (ts, i), v, off in zip(particles, votes, offsets))

    def test_unoriented_input_leaves_the_oriented_inputs_orientation(self):
        # Scipion coordinates carry an identity matrix even without orientation:
        # averaged with it, a 50-degree-tilted particle would come out ~25 degrees off
        unoriented = picks_from_coordinates(self.coords["unoriented"].coordinates)
        self.assertIsNone(unoriented.matrices)
        self.assertIsNone(unoriented.scores)
        prot = self.launch(self._consensus(["oriented", "unoriented"], consensusRadius=3))
        picks = picks_from_coordinates(prot.consensusCoordinates)
        self.assertEqual(len(picks), 6)
        for ts in P:
            got = picks.for_tomogram(ts)
            for i, position in enumerate(P[ts]):
                j = int(np.argmin(np.linalg.norm(got.positions - position, axis=1)))
                self.assertLess(np.linalg.norm(got.positions[j] - position), 1e-6)
                R = got.matrices[j, :3, :3]
                cos = np.clip((np.trace(R.T @ R_TRUE[ts][i]) - 1) / 2, -1, 1)
                self.assertLess(np.degrees(np.arccos(cos)), 0.1, f"{ts} particle {i}")

    def test_and_keeps_what_every_picking_found_with_mean_positions(self):
        prot = self.launch(self._consensus("ABC", consensusRadius=3))
        out = prot.consensusCoordinates
        # only TS_01 particle 0 was picked by A, B and C; C picked nothing in TS_02
        self.assertEqual(_rows(out), self._expected(
            [("TS_01", 0)], [3], [[OFFSET["A"], OFFSET["B"], OFFSET["C"]]]))
        self.assertAlmostEqual(out.getSamplingRate(), self.coords["A"].coordinates
                               .getSamplingRate())
        self.assertEqual(out.getBoxSize(), 24)
        # orientation: the mean of R Rx(+6), R Rx(-6) and R is R; group ids disagree (2, 2, 3)
        picks = picks_from_coordinates(out)
        R = picks.matrices[0, :3, :3]
        angle = np.degrees(np.arccos(np.clip((np.trace(R.T @ R_TRUE["TS_01"][0]) - 1) / 2,
                                             -1, 1)))
        self.assertLess(angle, 0.1)
        self.assertEqual(picks.group_ids.tolist(), [0])
        coord = out.getFirstItem()
        self.assertEqual(coord._consensusVotes.get(), 3)
        self.assertAlmostEqual(coord._meanInputScore.get(), 0.5)
        self.assertEqual(out.getPrecedents().getSize(), 2)
        summary = "\n".join(prot.summary())
        self.assertIn("TS_02: inputs 2 / 2 / 0; consensus 0 of 2 particles", summary)
        self.assertIn("TS_01: inputs 3 / 2 / 2; consensus 1 of 4 particles; Jaccard 0.250",
                      summary)

    def test_or_and_exactly_k_count_votes_per_particle(self):
        either = self.launch(self._consensus("ABC", consensusRadius=3, consensus=1))
        a, b, c = OFFSET["A"], OFFSET["B"], OFFSET["C"]
        self.assertEqual(_rows(either.consensusCoordinates), self._expected(
            [("TS_01", 0), ("TS_01", 1), ("TS_01", 2), ("TS_01", 3), ("TS_02", 0), ("TS_02", 1)],
            [3, 2, 1, 1, 2, 2], [[a, b, c], [a, b], [a], [c], [a, b], [a, b]]))
        exactly_two = self.launch(self._consensus("ABC", consensusRadius=3, consensus=2,
                                                  mode=1))
        self.assertEqual(_rows(exactly_two.consensusCoordinates), self._expected(
            [("TS_01", 1), ("TS_02", 0), ("TS_02", 1)], [2, 2, 2], [[a, b], [a, b], [a, b]]))
        # A and B agree on group 2, and their +-6 degree errors cancel
        picks = picks_from_coordinates(exactly_two.consensusCoordinates)
        self.assertEqual(picks.group_ids.tolist(), [2, 2, 2])
        for tsId, matrix in zip(picks.tomo_ids, picks.matrices):
            errors = [np.trace(matrix[:3, :3].T @ R) for R in R_TRUE[tsId]]
            self.assertGreater(max(errors), 3 - 1e-6)      # cos(angle) ~ 1 for one particle

    def test_order_of_the_inputs_does_not_change_the_output(self):
        forward = self.launch(self._consensus("ABC", consensusRadius=3, consensus=2))
        backward = self.launch(self._consensus("CBA", consensusRadius=3, consensus=2))
        self.assertEqual(_rows(forward.consensusCoordinates),
                         _rows(backward.consensusCoordinates))
        self.assertEqual(len(_rows(forward.consensusCoordinates)), 4)

    def test_a_picking_at_another_sampling_rate_is_rescaled_to_the_first(self):
        prot = self.launch(self._consensus(["B", "A20"], consensusRadius=2))
        out = prot.consensusCoordinates
        self.assertAlmostEqual(out.getSamplingRate(), 10.0, places=3)
        # A20 holds A's picks at 20 Å: rescaled, they meet B's at A's positions
        a, b = OFFSET["A"], OFFSET["B"]
        self.assertEqual(_rows(out), self._expected(
            [("TS_01", 0), ("TS_01", 1), ("TS_02", 0), ("TS_02", 1)], [2] * 4, [[a, b]] * 4))

    def test_invalid_forms_name_the_offending_parameter(self):
        errors = self.validationErrors(self._consensus("A", consensusRadius=3))
        self.assertTrue(any("at least two" in e for e in errors), errors)
        errors = self.validationErrors(self._consensus("AB", consensusRadius=3, consensus=3))
        self.assertTrue(any("Consensus must be -1" in e and "(2)" in e for e in errors), errors)
        errors = self.validationErrors(self._consensus("AB", consensusRadius=0))
        self.assertTrue(any("radius" in e.lower() for e in errors), errors)

    def test_fast_reader_gives_what_scipion_bottom_left_positions_give(self):
        # convert reads coordinates with the origin offset computed once per
        # tomogram; it must equal Scipion's own per-coordinate conversion
        for name in ("A", "A20"):
            coords = self.coords[name].coordinates
            fast = picks_from_coordinates(coords)
            reference = [(c.getTomoId(), c.getPosition(BOTTOM_LEFT_CORNER))
                         for c in coords.iterCoordinates()]
            self.assertEqual(fast.tomo_ids.tolist(), [t for t, _ in reference])
            np.testing.assert_allclose(fast.positions, [p for _, p in reference], atol=1e-9)
