"""tomopick: native cryo-ET particle picking for Scipion.

Import tomograms, denoise (EED, Beltrami flow), pick (vectorial picking with
the model workflow, unsupervised PickET picking), extract subtomograms, apply
their alignment and average, and take a consensus of several pickings — with
numpy, scipy and scikit-learn only.

Importing this package (or ``tomopick.core``) loads nothing of Scipion:
``Plugin``, which pyworkflow asks for when it discovers the plugin, is loaded
on first access together with the environment defaults (`tomopick._plugin`).
"""
__version__ = "0.2.0"
_logo = None
_references = ["Arvindekar2025", "Weickert1999"]


def __getattr__(name):
    if name == "Plugin":
        from ._plugin import Plugin
        globals()["Plugin"] = Plugin
        return Plugin
    raise AttributeError(f"module 'tomopick' has no attribute {name!r}")
