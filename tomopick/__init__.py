"""tomopick: native cryo-ET particle picking for Scipion.

Import tomograms, denoise (EED, Beltrami flow), pick (vectorial picking with
the model workflow, unsupervised PickET picking), extract subtomograms, apply
their alignment and average, and take a consensus of several pickings — with
numpy, scipy and scikit-learn only.
"""
import os

from . import environment as _environment

# pyworkflow reads its environment once, on first import: fill in what is unset first
_environment.set_defaults()

import pwem  # noqa: E402

__version__ = "0.1.0"
_logo = None
_references = ["Arvindekar2025", "Weickert1999"]


class Plugin(pwem.Plugin):
    """tomopick needs no external binaries: every algorithm runs in Python."""
    _url = "https://github.com/tomopick/scipion-em-tomopick"

    @classmethod
    def _defineVariables(cls):
        pass

    @classmethod
    def defineBinaries(cls, env):
        pass

    def getPluginTemplateDir(self):
        # saved workflows live in tomopick/workflows (SPEC layout), not templates/
        return os.path.join(os.path.dirname(__file__), "workflows")
