"""Every public function and class of tomopick.core shows its use in a doctest.

The public API of a module is its ``__all__``, or else the functions and
classes it defines without a leading underscore; a name re-exported by a
package is checked where it is defined. Exceptions and dataclasses (result
containers) are exempt. The doctests themselves run with ``--doctest-modules``
(pytest.ini); this test makes sure they exist.
"""
import dataclasses
import importlib
import inspect
import pkgutil

import tomopick.core

def _public(module):
    if hasattr(module, "__all__"):
        names = module.__all__
    else:
        names = [n for n in vars(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if obj.__module__ != module.__name__:      # re-exported: checked where defined
            continue
        if inspect.isclass(obj) and (issubclass(obj, BaseException)
                                     or dataclasses.is_dataclass(obj)):
            continue
        yield name, obj


def _has_example(obj):
    doc = inspect.getdoc(obj) or ""
    _, found, examples = doc.partition("Examples\n--------\n")
    return bool(found) and ">>>" in examples


def test_every_public_core_function_has_a_runnable_example():
    modules = [info.name for info in pkgutil.walk_packages(tomopick.core.__path__,
                                                            "tomopick.core.")]
    checked, missing = 0, []
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name, obj in _public(module):
            checked += 1
            if not _has_example(obj):
                missing.append(f"{module_name}.{name}")
    assert checked > 100, f"only {checked} public functions found: is the walk broken?"
    assert not missing, (f"{len(missing)} public core functions/classes have no Examples "
                         "section with a doctest (>>>):\n  " + "\n  ".join(missing))
