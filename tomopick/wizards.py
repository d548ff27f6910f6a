"""Wizards of tomopick's forms.

Each wizard is written next to the protocol it serves. pyworkflow only
collects Wizard classes *declared* in the plugin's ``wizards`` module (it
checks ``__module__``), so every wizard of the protocol modules is re-declared
here as a subclass with this module's name.
"""
from pyworkflow.wizard import Wizard

import tomopick.protocols as _protocols

for _module in list(vars(_protocols).values()):
    if getattr(_module, "__name__", "").startswith("tomopick.protocols.protocol_"):
        for _name, _obj in list(vars(_module).items()):
            if (isinstance(_obj, type) and issubclass(_obj, Wizard) and _obj is not Wizard
                    and _obj.__module__ == _module.__name__):
                globals()[_name] = type(_name, (_obj,), {"__module__": __name__,
                                                         "__doc__": _obj.__doc__})
