"""Base class for headless protocol tests: a project, simulated tomograms, launching.

Protocol tests run through pyworkflow exactly as a user's workflow does: they
create protocols with ``cls.newProtocol``, wire inputs with pointers, and
launch them as subprocesses with ``cls.launch``.
"""
import os
import tempfile

from pyworkflow.object import Pointer
from pyworkflow.tests import BaseTest, setupTestProject




class TomoPickProtocolTest(BaseTest):
    """A pyworkflow test case with its own project (named after the class)."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.dataDir = tempfile.mkdtemp(prefix=f"{cls.__name__}-data-")

    # ----------------------------------------------------------------- data
    @classmethod
    def simulate(cls, name="tomo_1", **kwargs):
        """Simulate a phantom and save it under the class's data folder.

        Returns
        -------
        phantom : simulate.Phantom
        mrcPath : str
        """
        kwargs.setdefault("seed", 0)
        from tomopick.core import simulate
        phantom = simulate.simulate_tomogram(**kwargs)
        phantom.save(cls.dataDir, name)
        return phantom, os.path.join(cls.dataDir, f"{name}.mrc")

    @classmethod
    def importTomograms(cls, pattern="*.mrc", samplingRate=0, directory=None, **kwargs):
        """Run ProtTomoPickImportTomograms on files of a directory."""
        from tomopick.protocols import ProtTomoPickImportTomograms
        prot = cls.newProtocol(ProtTomoPickImportTomograms,
                               filesPath=directory or cls.dataDir, filesPattern=pattern,
                               samplingRate=samplingRate, **kwargs)
        return cls.launch(prot)

    @classmethod
    def simulatedTomograms(cls, names=("tomo_1",), **kwargs):
        """Simulate one phantom per name (seeds 0, 1, ...) and import them.

        Returns
        -------
        importProt : ProtTomoPickImportTomograms
            Already run; ``importProt.Tomograms`` is the SetOfTomograms.
        phantoms : dict of str -> simulate.Phantom
            The ground truth of each tsId.
        """
        phantoms = {}
        for seed, name in enumerate(names):
            phantoms[name], _ = cls.simulate(name, **dict(kwargs, seed=kwargs.get("seed", 0) + seed))
        pattern = "{TS}.mrc" if len(names) > 1 else f"{names[0]}.mrc"
        return cls.importTomograms(pattern=pattern), phantoms

    @classmethod
    def newProtocol(cls, protocolClass, **kwargs):
        """A new protocol of the project; pointer arguments are wired after creation.

        ``project.newProtocol`` would wrap a Pointer given as a value inside a
        second pointer that loses its extended part (the output name), so
        pointers (or lists of them, for multi-pointers) are set here instead.
        """
        pointers = {name: value for name, value in kwargs.items()
                    if isinstance(value, Pointer)
                    or (isinstance(value, (list, tuple)) and value
                        and all(isinstance(v, Pointer) for v in value))}
        prot = super().newProtocol(protocolClass,
                                   **{k: v for k, v in kwargs.items() if k not in pointers})
        for name, value in pointers.items():
            attr = getattr(prot, name)
            if isinstance(value, Pointer):
                attr.set(value.getObjValue())
                attr.setExtended(value.getExtended())
            else:
                for pointer in value:
                    attr.append(pointer)
        return prot

    # ------------------------------------------------------------- running
    @classmethod
    def launch(cls, prot, wait=True):
        """Launch a protocol, waiting for it; raise with its error if it fails."""
        cls.proj.launchProtocol(prot, wait=wait)
        if prot.isFailed():
            raise AssertionError(f"{prot.getRunName()} failed: {prot.getErrorMessage()}")
        if wait and not prot.isFinished():
            raise AssertionError(f"{prot.getRunName()} did not finish: {prot.getStatus()}")
        return prot

    @classmethod
    def launchExpectingFailure(cls, prot):
        """Launch a protocol that must fail; return it (failed) for its error message."""
        cls.proj.launchProtocol(prot, wait=True)
        prot = cls.proj.getProtocol(prot.getObjId())
        assert prot.isFailed(), f"{prot.getRunName()} was expected to fail but is {prot.getStatus()}"
        return prot

    @staticmethod
    def registeredOutputs(prot):
        """Names of the outputs a protocol registered (pyworkflow's own ``_...`` left out)."""
        return [name for name, _ in prot.iterOutputAttributes() if not name.startswith("_")]

    @staticmethod
    def pointer(prot, output):
        """A pointer to a protocol's output, for a protocol parameter."""
        return Pointer(prot, extended=output)

    @classmethod
    def validationErrors(cls, prot):
        """The messages the protocol's _validate gives (empty when valid)."""
        return prot.validate()
