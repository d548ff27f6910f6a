"""File formats tomopick reads and writes.

MRC volumes (`mrc`) and coordinate tables: CSV, RELION 5 STAR, Dynamo .tbl,
IMOD .mod, CryoET Data Portal ndjson, PickET yaml (`coordinates` dispatches by
format).
"""
from .mrc import MrcError, create_mrc, mrc_header_info, read_mrc, write_mrc

try:  # the coordinate formats land separately from the MRC layer
    from .coordinates import read_coordinates, write_coordinates  # noqa: F401
except ImportError:  # pragma: no cover
    pass
