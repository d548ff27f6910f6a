"""tomopick's viewers and interactive picker (napari / Qt, imported lazily).

Scipion discovers the `Viewer` classes exposed here. Importing this package
loads no Qt: napari and Qt are imported only when a view or the picker opens.

- `picker`: `PickingSession` (picking logic, points CSV) and `pick_interactively`.
- `slice_viewer`: napari views built from arrays (tomograms with coordinates,
  meshes, galleries, averages, segmentations).
- `display`: the arrays those views show (contrast, montages, colours, arrows).
- `scipion_viewers`: the Scipion `TomoPickNapariViewer` (data) and
  `TomoPickResultsViewer` ("Analyze results" of tomopick protocols, found
  through pyworkflow's plugin registry: nothing here imports tomopick.protocols).
- `view_spec`: the view spec a Scipion viewer writes for `launch` (JSON and
  arrays, coordinates rescaled to voxels of their tomogram).
- `subsets`: subsets of coordinates saved in a view, registered as outputs
  of the producing protocol (after the view closes, under a lock).
"""
from .scipion_viewers import TomoPickNapariViewer, TomoPickResultsViewer  # noqa: F401
