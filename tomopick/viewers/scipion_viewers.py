"""Scipion viewers: open tomopick's napari views from the project window.

`TomoPickNapariViewer` handles tomograms, coordinates, meshes, subtomograms,
averages and segmentations. It writes a view spec (`view_spec.write_view_spec`)
and runs `tomopick.viewers.launch` in its own process, because the project
window runs Tk and napari needs Qt's event loop. Subsets of coordinates the
user saves there are registered, when the viewer process ends, as new outputs
of the protocol that made the coordinates (`subsets.register_saved_subsets`).
`TomoPickResultsViewer` is "Analyze results" of every tomopick protocol; it
finds them by their module through pyworkflow's plugin registry (this package
imports nothing from tomopick.protocols).

Nothing here imports Qt: the module is loaded when Scipion discovers viewers.
"""
import os
import subprocess
import sys
import threading

import pyworkflow.viewer as pwviewer
from tomo.objects import (AverageSubTomogram, SetOfCoordinates3D, SetOfMeshes,
                          SetOfSubTomograms, SetOfTomograms, SetOfTomoMasks)

from .subsets import register_saved_subsets
from .view_spec import write_view_spec


def _python():
    return os.environ.get("SCIPION_PYTHON") or sys.executable


class TomoPickNapariViewer(pwviewer.Viewer):
    """Slice views (Z/X/Y, contrast) of tomograms with coordinates and
    orientations, meshes with their fitted models, subtomogram galleries,
    averages (orthogonal sections) and segmentations, in napari."""
    _label = "tomopick napari viewer"
    _name = "tomopick napari viewer"
    _environments = [pwviewer.DESKTOP_TKINTER]
    _targets = [SetOfTomograms, SetOfCoordinates3D, SetOfMeshes, SetOfSubTomograms,
                AverageSubTomogram, SetOfTomoMasks]

    subsetThread = None  # registers the saved subsets once the viewer process ends

    def _visualize(self, obj, **kwargs):
        protocol = self.protocol
        base = protocol._getTmpPath() if protocol is not None else os.path.abspath("tomopick-view")
        directory = os.path.join(base, f"napari_{type(obj).__name__}_{obj.getObjId()}")
        result_dir = os.path.join(directory, "subsets")
        subsets = (isinstance(obj, SetOfCoordinates3D) and not isinstance(obj, SetOfMeshes)
                   and protocol is not None)
        project = self.getProject()
        if subsets:
            # subsets saved in an earlier session whose Scipion GUI closed before
            # its viewer did: register them before the new spec clears the folder
            register_saved_subsets(protocol, obj, result_dir, project)
        spec_path = write_view_spec(obj, directory, protocol)
        process = subprocess.Popen([_python(), "-m", "tomopick.viewers.launch", spec_path])
        if subsets:
            # register saved subsets once the viewer closes, without blocking the Tk window
            def wait_and_register():
                process.wait()
                register_saved_subsets(protocol, obj, result_dir, project)

            self.subsetThread = threading.Thread(target=wait_and_register, daemon=True)
            self.subsetThread.start()
        return []


def _tomopick_protocols():
    """tomopick's protocol classes, as pyworkflow discovered them (viewers do not
    import tomopick.protocols; none when discovery fails)."""
    try:
        from pyworkflow import Config
        protocols = Config.getDomain().getProtocols()
    except Exception:  # discovery of the data viewers must survive a broken protocol
        return []
    return [c for _, c in sorted(protocols.items()) if c.__module__.startswith("tomopick.")]


class _ProtocolTargets:
    """``_targets`` looked up when pyworkflow asks, not at import: a protocol
    module may import tomopick.viewers while tomopick.protocols is still loading."""

    def __get__(self, instance, owner):
        return _tomopick_protocols()


#: Outputs opened by "Analyze results", most specific first (a SetOfMeshes is
#: a SetOfCoordinates3D and a SetOfTomoMasks a SetOfTomograms).
_OUTPUT_TYPES = (SetOfMeshes, SetOfCoordinates3D, SetOfTomoMasks, AverageSubTomogram,
                 SetOfSubTomograms, SetOfTomograms)


class TomoPickResultsViewer(TomoPickNapariViewer):
    """"Analyze results" of a tomopick protocol: its outputs in napari, one window each."""
    _label = "tomopick results"
    _name = "tomopick results"
    _targets = _ProtocolTargets()

    def _visualize(self, obj, **kwargs):
        outputs = [out for _, out in obj.iterOutputAttributes()
                   if isinstance(out, _OUTPUT_TYPES)]
        # the picking outputs first: what the user wants to check after a run
        outputs.sort(key=lambda out: next(i for i, t in enumerate(_OUTPUT_TYPES)
                                          if isinstance(out, t)))
        for output in outputs[:3]:
            TomoPickNapariViewer._visualize(self, output)
        return []
