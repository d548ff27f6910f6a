"""Edge-preserving denoising of tomograms: edge-enhancing diffusion and Beltrami flow.

- `flows`: the filters on arrays (`eed`, `beltrami_flow`, `denoise`), their
  parameter checks and time-step bounds.
- `kernels`: the numerics: one explicit step of either scheme on a padded
  tile (the schemes are described there).
- `plan`: how an iteration sweeps the volume: z-slabs, (y, x) tiles with
  halos, threads and reused buffers; the result does not depend on it.
- `files`: an MRC file denoised into another, streaming.
"""
from .files import denoise_file
from .flows import (BFLOW_EMBEDDING, BFLOW_MAX_TIME_STEP, EED_MAX_TIME_STEP, METHODS,
                    DenoiseWarning, beltrami_flow, check_volume, clamp_time_step, denoise, eed)
from .kernels import AUTO_K_QUANTILE, WEICKERT_C4

__all__ = ["AUTO_K_QUANTILE", "BFLOW_EMBEDDING", "BFLOW_MAX_TIME_STEP", "DenoiseWarning",
           "EED_MAX_TIME_STEP", "METHODS", "WEICKERT_C4", "beltrami_flow", "check_volume",
           "clamp_time_step", "denoise", "denoise_file", "eed"]
