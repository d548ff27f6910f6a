"""The Scipion plugin class, loaded only when Scipion (or the CLI) asks for it.

`tomopick.Plugin` is resolved lazily (`tomopick.__getattr__`), so importing
`tomopick.core` needs numpy and scipy alone: no environment variables are
set, no pwem is imported and nothing is written.
"""
import os

from . import environment

# pyworkflow reads its environment once, on first import: fill in what is unset first
environment.set_defaults()

import pwem  # noqa: E402


class Plugin(pwem.Plugin):
    """tomopick needs no external binaries: every algorithm runs in Python."""
    # pyworkflow names the plugin, and finds its folder, by the class's module
    __module__ = "tomopick"
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
