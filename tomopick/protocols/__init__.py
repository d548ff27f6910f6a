"""tomopick's Scipion protocols: one module per protocol (``protocol_*.py``).

Every module is imported here so that pyworkflow finds the protocol classes
(the project database stores class names and looks them up in this package).
"""
import importlib
import logging
import pkgutil

_logger = logging.getLogger(__name__)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)
                      if m.name.startswith("protocol_")):
    try:
        _mod = importlib.import_module(f"{__name__}.{_module}")
    except Exception:  # one broken module must not hide every other protocol
        _logger.exception("tomopick: cannot import %s", _module)
        continue
    for _name, _obj in vars(_mod).items():
        if _name.startswith("ProtTomoPick") and isinstance(_obj, type):
            globals()[_name] = _obj
