"""Headless directional picking: vectorial picking (points file) -> model workflow.

The tomogram is a simulated phantom with a spherical and an ellipsoidal
vesicle. "User clicks" are points of the truth vesicles with 1 voxel rms
in-slice error (z exact: users click on a z-slice).
"""
import os

import numpy as np
import pytest

from tomopick.convert import picks_from_coordinates
from tomopick.core.simulate import vesicle_normals, vesicle_surface_points
from tomopick.core.rotations import angle_between
from tomopick.protocols import ProtTomoPickModelWorkflow, ProtTomoPickVectorialPicking
from tomopick.convert import INTERIOR_ATTR, MODEL_TYPE_ATTR
from tomopick.tests.protocol_base import TomoPickProtocolTest

VESICLE, ELLIPSOID, BROKEN, FILAMENT = 1, 2, 3, 4


def clicks(vesicle, n, seed):
    rng = np.random.default_rng(seed)
    points, _ = vesicle_surface_points(vesicle, n, rng)
    points[:, :2] += rng.normal(0, 1 / np.sqrt(2), (n, 2))
    return points


def write_csv(path, rows, header=True):
    with open(path, "w") as handle:
        if header:
            handle.write("tomoId,modelId,x,y,z,role\n")
        for row in rows:
            handle.write(",".join(str(v) for v in row) + "\n")
    return path


def ellipsoid_distance(vesicle, points):
    """First-order distance (voxels) of points to a truth vesicle's mid-surface."""
    c, a, R = (np.asarray(vesicle[k], dtype=float) for k in ("center", "semi_axes", "rotation"))
    q = (points - c) @ R
    f = np.sqrt(((q / a) ** 2).sum(1))
    return np.abs((f - 1) * f / np.sqrt(((q / a ** 2) ** 2).sum(1)))


class TestDirectionalPicking(TomoPickProtocolTest):

    @classmethod
    def make(cls, protClass, **kwargs):
        """newProtocol, with (protocol, output) tuples wired as pointers.

        A Pointer passed to newProtocol ends up wrapped in another Pointer,
        so pointer parameters are set after creation.
        """
        pointers = {k: v for k, v in kwargs.items() if isinstance(v, tuple)}
        prot = cls.newProtocol(protClass, **{k: v for k, v in kwargs.items() if k not in pointers})
        for name, (source, output) in pointers.items():
            getattr(prot, name).set(source)
            getattr(prot, name).setExtended(output)
        return prot

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.importProt, phantoms = cls.simulatedTomograms(
            names=("tomo_1",), shape=(64, 96, 96), n_particles=0, n_vesicles=2,
            proteins_per_vesicle=0, tilt_range=None, ctf=False)
        cls.sphere, cls.ellipsoid = phantoms["tomo_1"].vesicles
        assert np.allclose(cls.sphere["semi_axes"], cls.sphere["semi_axes"][0])
        sphere_rows = [("tomo_1", VESICLE, *p, "point") for p in clicks(cls.sphere, 25, 1)]
        sphere_rows.append(("tomo_1", VESICLE, *cls.sphere["center"], "interior"))
        # a "vesicle" of five points on one plane: cannot be fitted
        flat = np.array(cls.sphere["center"]) + [[0, 0, 0], [5, 0, 0], [0, 5, 0], [5, 5, 0],
                                                 [2, 7, 0]]
        broken_rows = [("tomo_1", BROKEN, *p, "point") for p in flat]
        cls.pointsVesicles = write_csv(os.path.join(cls.dataDir, "vesicles.csv"),
                                       sphere_rows + broken_rows)
        # second picking session: an ellipsoidal vesicle, no header, role omitted
        cls.pointsEllipsoid = write_csv(
            os.path.join(cls.dataDir, "ellipsoid.csv"),
            [("tomo_1", ELLIPSOID, *p) for p in clicks(cls.ellipsoid, 40, 2)], header=False)
        axis = np.column_stack([np.linspace(10, 80, 6), np.full(6, 12.0), np.full(6, 8.0)])
        cls.filamentAxis = axis
        cls.pointsFilament = write_csv(os.path.join(cls.dataDir, "filament.csv"),
                                       [("tomo_1", FILAMENT, *p, "point") for p in axis])

        tomos = (cls.importProt, "Tomograms")
        cls.pick1 = cls.launch(cls.make(ProtTomoPickVectorialPicking, inputTomograms=tomos,
                                        boxSize=24, modelType=1,
                                        pointsFile=cls.pointsVesicles))
        cls.pick2 = cls.launch(cls.make(ProtTomoPickVectorialPicking, inputTomograms=tomos,
                                        boxSize=24, modelType=2,
                                        inputMeshes=(cls.pick1, "meshes"),
                                        pointsFile=cls.pointsEllipsoid))
        cls.workflow = cls.launch(cls.make(ProtTomoPickModelWorkflow,
                                           inputMeshes=(cls.pick2, "meshes"),
                                           boxSize=24, cropping=4.0, meshParameter=3.0))

    # ------------------------------------------------------ vectorial picking
    def test_meshes_hold_one_point_per_click_with_model_type_and_interior(self):
        meshes = self.pick1.meshes
        self.assertEqual(meshes.getSize(), 25 + 5)
        self.assertEqual(meshes.getNumberOfMeshes(), 2)
        self.assertEqual(meshes.getBoxSize(), 24)
        self.assertAlmostEqual(meshes.getSamplingRate(),
                               self.importProt.Tomograms.getSamplingRate(), places=4)
        self.assertEqual(meshes.getPrecedents().getSize(), 1)
        picks = picks_from_coordinates(meshes)
        self.assertEqual(sorted(set(picks.group_ids.tolist())), [VESICLE, BROKEN])
        vesicle = picks.positions[picks.group_ids == VESICLE]
        np.testing.assert_allclose(vesicle, clicks(self.sphere, 25, 1), atol=1e-2)
        for coord in meshes.iterCoordinates():
            self.assertEqual(getattr(coord, MODEL_TYPE_ATTR).get(), "Vesicle")
            interior = getattr(coord, INTERIOR_ATTR).get()
            if coord.getGroupId() == VESICLE:
                np.testing.assert_allclose([float(v) for v in interior.split()],
                                           self.sphere["center"], atol=1e-2)
            else:
                self.assertEqual(interior, "")

    def test_modifying_meshes_keeps_previous_models_and_adds_new_ones(self):
        meshes = self.pick2.meshes
        self.assertEqual(meshes.getSize(), 25 + 5 + 40)
        types = {}
        for coord in meshes.iterCoordinates():
            types.setdefault(coord.getGroupId(), set()).add(getattr(coord, MODEL_TYPE_ATTR).get())
        self.assertEqual(types, {VESICLE: {"Vesicle"}, BROKEN: {"Vesicle"},
                                 ELLIPSOID: {"Ellipsoidal vesicle"}})

    def test_unknown_tsid_and_points_outside_are_named(self):
        bad = write_csv(os.path.join(self.dataDir, "bad.csv"),
                        [("tomo_9", 1, 10, 10, 10, "point"),
                         ("tomo_1", 7, 10, 10, 200, "point"),
                         ("tomo_1", 7, 10, 10, 10, "interior")])
        prot = self.make(ProtTomoPickVectorialPicking,
                         inputTomograms=(self.importProt, "Tomograms"),
                         pointsFile=bad)
        errors = " ".join(self.validationErrors(prot))
        self.assertIn("tomo_9", errors)
        self.assertIn("model 7", errors)
        self.assertIn("200", errors)
        bad_role = write_csv(os.path.join(self.dataDir, "bad_role.csv"),
                             [("tomo_1", 1, 10, 10, 10, "centre")])
        prot = self.make(ProtTomoPickVectorialPicking,
                         inputTomograms=(self.importProt, "Tomograms"),
                         pointsFile=bad_role)
        self.assertIn("centre", " ".join(self.validationErrors(prot)))

    def test_without_points_file_the_picker_runs_as_an_interactive_step(self):
        prot = self.make(ProtTomoPickVectorialPicking,
                         inputTomograms=(self.importProt, "Tomograms"))
        self.assertEqual(self.validationErrors(prot), [])
        prot._insertAllSteps()
        self.assertEqual([s.funcName.get() for s in prot._steps], ["pickInteractivelyStep"])
        self.assertTrue(prot._steps[0].isInteractive())

    # ---------------------------------------------------------- model workflow
    def _workflowPicks(self):
        return picks_from_coordinates(self.workflow.coordinates)

    def test_vesicle_particles_lie_on_the_sphere_with_outward_normals(self):
        picks = self._workflowPicks()
        self.assertEqual(self.workflow.coordinates.getBoxSize(), 24)
        vesicle = picks.subset(picks.group_ids == VESICLE)
        radius = self.sphere["semi_axes"][0]
        radial = np.linalg.norm(vesicle.positions - self.sphere["center"], axis=1)
        distance = np.abs(radial - radius)
        self.assertLess(distance.max(), 1.0)
        # spacing 4 voxels on a radius-13 sphere: ~ 4 pi r^2 / (0.866/0.89^2 * 16) points
        self.assertGreater(len(vesicle), 100)
        err = angle_between(vesicle.matrices[:, :3, 2],
                            vesicle_normals(self.sphere, vesicle.positions))
        self.assertLess(np.median(err), 3.0)
        self.assertLess(err.max(), 10.0)

    def test_other_plugins_read_the_outward_normals(self):
        """scipion-em-tomo's normalFromMatrix (tomoviz, reliontomo, dynamo, emantomo read
        the same M) sees every vesicle particle's z-axis as the outward normal."""
        from tomo.constants import BOTTOM_LEFT_CORNER
        from tomo.utils import normalFromMatrix

        from tomopick.convert import MATRIX_CONVENTION, MATRIX_CONVENTION_ATTR
        coords = self.workflow.coordinates
        self.assertEqual(getattr(coords, MATRIX_CONVENTION_ATTR).get(), MATRIX_CONVENTION)
        positions, normals = [], []
        for coord in coords.iterCoordinates():
            if coord.getGroupId() == VESICLE:
                positions.append(coord.getPosition(BOTTOM_LEFT_CORNER))
                normals.append(normalFromMatrix(coord.getMatrix()))
        positions = np.array(positions)
        self.assertGreater(len(positions), 100)
        err = angle_between(np.array(normals), vesicle_normals(self.sphere, positions))
        print("MEASURE normals", np.median(err), err.max(), len(err))
        self.assertLess(np.median(err), 3.0)
        self.assertLess(err.max(), 10.0)   # none points inward

    def test_ellipsoid_particles_within_1p5_voxels_and_normals_outward(self):
        picks = self._workflowPicks()
        ell = picks.subset(picks.group_ids == ELLIPSOID)
        self.assertGreater(len(ell), 50)
        self.assertLess(ellipsoid_distance(self.ellipsoid, ell.positions).max(), 1.5)
        err = angle_between(ell.matrices[:, :3, 2], vesicle_normals(self.ellipsoid, ell.positions))
        self.assertLess(np.median(err), 5.0)

    def test_degenerate_model_goes_to_failed_meshes_and_others_survive(self):
        picks = self._workflowPicks()
        self.assertEqual(sorted(set(picks.group_ids.tolist())), [VESICLE, ELLIPSOID])
        failed = self.workflow.failedMeshes
        self.assertIsNotNone(failed)
        self.assertEqual(failed.getSize(), 5)
        self.assertEqual({c.getGroupId() for c in failed.iterCoordinates()}, {BROKEN})
        log = open(self.workflow.getLogPaths()[0]).read()
        self.assertIn("model 3", log)
        self.assertIn("coplanar", log)

    def test_filament_particles_every_dz_along_the_axis(self):
        pick = self.launch(self.make(
            ProtTomoPickVectorialPicking, inputTomograms=(self.importProt, "Tomograms"),
            modelType=4, pointsFile=self.pointsFilament))
        workflow = self.launch(self.make(ProtTomoPickModelWorkflow, inputMeshes=(pick, "meshes"),
                                         dz=5.0, dphi=20.0))
        self.assertIsNone(workflow.failedMeshes)
        picks = picks_from_coordinates(workflow.coordinates)
        steps = np.linalg.norm(np.diff(picks.positions, axis=0), axis=1)
        np.testing.assert_allclose(steps, 5.0, rtol=0.05)
        z_axes = picks.matrices[:, :3, 2]
        np.testing.assert_allclose(z_axes, np.tile([1.0, 0, 0], (len(picks), 1)), atol=1e-3)
        turn = angle_between(picks.matrices[:-1, :3, 0], picks.matrices[1:, :3, 0])
        np.testing.assert_allclose(turn, 20.0, atol=0.5)

    def test_surface_by_levels_particles_on_the_membrane_pointing_away_from_interior(self):
        # one side of the spherical vesicle clicked on 5 z-slices, marker outside:
        # the normals must point inward (towards the vesicle centre)
        rng = np.random.default_rng(5)
        center, radius = np.asarray(self.sphere["center"]), self.sphere["semi_axes"][0]
        rows = []
        for z in np.round(np.linspace(center[2] - 0.7 * radius, center[2] + 0.7 * radius, 5)):
            rho = np.sqrt(radius ** 2 - (z - center[2]) ** 2)
            angle = np.radians(rng.uniform(-60, 60, 8))
            xy = center[:2] + rho * np.column_stack([np.cos(angle), np.sin(angle)])
            xy += rng.normal(0, 1 / np.sqrt(2), xy.shape)
            rows += [("tomo_1", 5, x, y, z, "point") for x, y in xy]
        rows.append(("tomo_1", 5, *(center + [radius + 8, 0, 0]), "interior"))
        path = write_csv(os.path.join(self.dataDir, "surface.csv"), rows)
        pick = self.launch(self.make(
            ProtTomoPickVectorialPicking, inputTomograms=(self.importProt, "Tomograms"),
            modelType=3, pointsFile=path))
        workflow = self.launch(self.make(ProtTomoPickModelWorkflow, inputMeshes=(pick, "meshes"),
                                         cropping=3.0, meshParameter=2.0))
        picks = picks_from_coordinates(workflow.coordinates)
        self.assertGreater(len(picks), 20)
        self.assertEqual(set(picks.group_ids.tolist()), {5})
        distance = np.abs(np.linalg.norm(picks.positions - center, axis=1) - radius)
        self.assertLess(distance.max(), 1.5)
        inward = center - picks.positions
        err = angle_between(picks.matrices[:, :3, 2], inward)
        # noise-limited on this small (r ~ 13 voxel) vesicle: ~7 degrees median
        self.assertLess(np.median(err), 12.0)
        self.assertLess(np.percentile(err, 95), 45.0)

    def test_forced_general_model_returns_the_clicks_and_wizard_reads_box_size(self):
        from tomopick.protocols.protocol_model_workflow import \
            ProtTomoPickModelWorkflowBoxSizeWizard
        prot = self.make(ProtTomoPickModelWorkflow, inputMeshes=(self.pick1, "meshes"),
                         useModelTypeAsPicked=False, modelType=0)
        self.assertEqual(prot.boxSize.get(), 32)
        self.assertEqual(ProtTomoPickModelWorkflowBoxSizeWizard.boxSize(prot), 24)
        workflow = self.launch(prot)
        self.assertIsNone(workflow.failedMeshes)
        picks = picks_from_coordinates(workflow.coordinates)
        vesicle = picks.subset(picks.group_ids == VESICLE)
        np.testing.assert_allclose(vesicle.positions, clicks(self.sphere, 25, 1), atol=1e-2)
        err = angle_between(vesicle.matrices[:, :3, 2],
                            vesicle_normals(self.sphere, vesicle.positions))
        # local PCA over 8 noisy neighbours on a radius-13 vesicle
        self.assertLess(np.median(err), 20.0)


def test_points_saved_by_the_interactive_picker_read_back_unchanged(tmp_path):
    """Both modes share one path: the picker's CSV is what the protocol reads."""
    from tomopick.core.formats.points import read_points_csv as read_points_file
    from tomopick.viewers.picker import PickingSession
    path = tmp_path / "points.csv"
    session = PickingSession(path, tomo_ids=["TS_1", "TS_2"], model_type="Vesicle")
    for p in [(10, 11, 12), (13.5, 14, 15), (16, 17, 18.25)]:
        session.add_point("TS_1", p)
    session.set_interior("TS_1", (12, 13, 14))
    session.new_model("TS_1")
    session.add_point("TS_1", (1, 2, 3))
    session.add_point("TS_2", (4, 5, 6))
    rows = read_points_file(str(path))
    assert rows == [(t, m, float(x), float(y), float(z), r) for t, m, x, y, z, r in session.rows()]
    assert [r[5] for r in rows].count("interior") == 1


def test_points_file_without_header_with_comments_and_default_role(tmp_path):
    from tomopick.core.formats.points import read_points_csv as read_points_file
    path = tmp_path / "p.csv"
    path.write_text("# my vesicle\nTS_1,3,1,2,3\nTS_1,3,4,5,6,interior\n\n")
    assert read_points_file(str(path)) == [("TS_1", 3, 1.0, 2.0, 3.0, "point"),
                                          ("TS_1", 3, 4.0, 5.0, 6.0, "interior")]
    path.write_text("tomoId,x,y,z\nTS_1,1,2,3\n")
    with pytest.raises(ValueError, match="modelId"):
        read_points_file(str(path))
    path.write_text("TS_1,3,1,two,3\n")
    with pytest.raises(ValueError, match="line 1"):
        read_points_file(str(path))
