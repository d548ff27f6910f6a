"""File formats tomopick reads and writes.

MRC volumes (`mrc`), coordinate tables (`coordinates` dispatches by format:
CSV, RELION 5 STAR, Dynamo .tbl, IMOD .mod, CryoET Data Portal ndjson, PickET
yaml) and the vectorial picking points CSV (`points`). Every writer is atomic
(`atomic`: a temporary file renamed when complete).
"""
from .coordinates import read_coordinates, write_coordinates  # noqa: F401
from .mrc import (MappedVolume, MrcError, create_mrc, mrc_header_info, read_mrc,  # noqa: F401
                  write_mrc, write_mrc_slabs)
