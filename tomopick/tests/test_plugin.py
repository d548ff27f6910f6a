"""The plugin as Scipion sees it: protocols, labels, GUI tree, wizards, templates."""
import configparser
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import tomopick
from pyworkflow import Config

SPEC_PROTOCOLS = {
    "ProtTomoPickImportTomograms": "import tomograms",
    "ProtTomoPickImportCoordinates": "import coordinates",
    "ProtTomoPickDenoise": "denoise tomogram",
    "ProtTomoPickVectorialPicking": "vectorial picking",
    "ProtTomoPickModelWorkflow": "model workflow",
    "ProtTomoPickPickET": "unsupervised picking (PickET)",
    "ProtTomoPickExtraction": "subtomogram extraction",
    "ProtTomoPickApplyAlignment": "apply alignment subtomo",
    "ProtTomoPickConsensus": "picking consensus",
    "ProtTomoPickTemplateMatching": "template matching",
    "ProtTomoPickManualPicking": "manual picking",
    "ProtTomoPickLearnedPicking": "learned picking",
    "ProtTomoPickInitialModel": "subtomogram initial model",
}


def test_every_spec_protocol_is_found_by_pyworkflow_with_its_label():
    protocols = Config.getDomain().getProtocols()
    for name, label in SPEC_PROTOCOLS.items():
        assert name in protocols, f"{name} not discovered"
        assert protocols[name]._label == label


def test_protocols_conf_lists_every_protocol():
    parser = configparser.ConfigParser()
    parser.optionxform = str
    parser.read(os.path.join(os.path.dirname(tomopick.__file__), "protocols.conf"))
    text = parser.get("PROTOCOLS", "Tomography")
    listed = set()

    def walk(nodes):
        for node in nodes:
            if node.get("tag") == "protocol":
                listed.add(node["value"])
            walk(node.get("children", []))
    walk(json.loads(text))
    assert set(SPEC_PROTOCOLS) <= listed


def test_box_size_wizards_are_found_by_pyworkflow():
    domain = Config.getDomain()
    protocols = domain.getProtocols()
    for name in ("ProtTomoPickModelWorkflow", "ProtTomoPickExtraction"):
        wizards = domain.findWizards(protocols[name](), "tkinter")
        assert "boxSize" in wizards, f"no box size wizard for {name}"


def test_workflow_templates_are_offered_by_the_plugin():
    plugin = Config.getDomain().getPlugins()["tomopick"]._pluginInstance
    names = sorted(t.name for t in plugin.getTemplates())
    assert names == ["directional", "non_directional", "picket"]


def test_import_tomopick_needs_no_display():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "QT_QPA_PLATFORM")}
    code = ("import tomopick, tomopick.protocols, tomopick.viewers, tomopick.wizards, sys; "
            "assert 'PyQt5.QtWidgets' not in sys.modules and 'napari' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_core_imports_without_scipion_and_writes_nothing(tmp_path):
    """Every tomopick.core module imports with numpy/scipy alone: no pyworkflow, no
    pwem, no SCIPION_* variables, nothing written to a clean HOME."""
    import pkgutil

    import tomopick.core
    modules = sorted(m.name for m in pkgutil.walk_packages(tomopick.core.__path__,
                                                           "tomopick.core."))
    assert len(modules) > 10
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", ""),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    code = ("import importlib, os, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pyworkflow', 'pwem', 'tomo'))\n"
            "assert not bad, bad[:5]\n"
            "assert not [k for k in os.environ if k.startswith('SCIPION_')]\n")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300,
                   cwd=str(tmp_path))
    assert list(home.iterdir()) == []


def test_plugin_class_is_loaded_when_scipion_asks_for_it():
    plugin = Config.getDomain().getPlugins()["tomopick"]
    assert isinstance(plugin._pluginInstance, tomopick.Plugin)
    assert "tomopick._plugin" in sys.modules
    # pyworkflow names runs and finds templates through the plugin's name and folder
    assert plugin._pluginInstance.getName() == "tomopick"
    assert plugin._pluginInstance.getPath() == os.path.dirname(tomopick.__file__)


def test_wizards_of_the_non_directional_forms():
    from tomo.objects import SetOfTomograms

    from tomopick import wizards
    from tomopick.core.formats import write_mrc
    domain = Config.getDomain()
    protocols = domain.getProtocols()
    for name, param in (("ProtTomoPickTemplateMatching", "boxSize"),
                        ("ProtTomoPickTemplateMatching", "angularSampling"),
                        ("ProtTomoPickInitialModel", "angularSampling"),
                        ("ProtTomoPickLearnedPicking", "boxSize")):
        assert param in domain.findWizards(protocols[name](), "tkinter"), (name, param)

    tm = protocols["ProtTomoPickTemplateMatching"]()
    tm.particleDiameter.set(300.0)
    tm.lowpass.set(30.0)
    # Crowther: degrees(30 / 300) = 5.7
    assert wizards.TemplateMatchingAngularSamplingWizard.angularSampling(tm) == 5.7
    tm.lowpass.set(0.0)
    assert wizards.TemplateMatchingAngularSamplingWizard.angularSampling(tm) == 0.0
    model = protocols["ProtTomoPickInitialModel"]()
    model.particleDiameter.set(300.0)
    model.lowpass.set(40.0)
    assert wizards.InitialModelAngularSamplingWizard.angularSampling(model) == 30.4

    with tempfile.TemporaryDirectory() as folder:
        # a 40^3 reference at 8.66 Å/voxel is 346 Å wide: 17.3 voxels at 20 Å -> 18
        path = os.path.join(folder, "ref.mrc")
        write_mrc(path, np.zeros((40, 40, 40), np.float32), 8.66)
        tm.referenceFile.set(path)
        tomograms = SetOfTomograms(filename=os.path.join(folder, "tomograms.sqlite"))
        assert wizards.TemplateMatchingBoxSizeWizard.boxSize(tm) == 0   # no tomograms yet
        tomograms.setSamplingRate(20.0)
        tm.inputTomograms.set(tomograms)
        assert wizards.TemplateMatchingBoxSizeWizard.boxSize(tm) == 18
