"""tomopick's viewers and interactive picker (napari / Qt, imported lazily).

Scipion discovers the `Viewer` classes exposed here. Importing this package
loads no Qt: napari and Qt are imported only when a view or the picker opens.

- `picker`: `PickingSession` (picking logic, points CSV) and `pick_interactively`.
- `slice_viewer`: napari views built from arrays (tomograms with coordinates,
  meshes, galleries, averages, segmentations).
- `display`: the arrays those views show (contrast, montages, colours, arrows).
- `viewers`: the Scipion `TomoPickNapariViewer` (data), `TomoPickResultsViewer`
  ("Analyze results" of tomopick protocols) and subset registration.
"""
from .viewers import TomoPickNapariViewer, TomoPickResultsViewer  # noqa: F401
