"""Template matching: FLCF with a wedge-weighted template, coarse search, local refinement, threshold."""
from .correlate import Correlator, condition_templates, local_scores, pruned_rfftn, \
    rotate_templates
from .peaks import (effective_tests, gaussian_threshold, high_contrast_mask, local_maxima,
                    non_maximum_suppression)
from .search import MatchResult, match_template
from .template import crop_or_pad, prepare_template, template_box_size

__all__ = ["Correlator", "MatchResult", "condition_templates", "crop_or_pad",
           "effective_tests", "gaussian_threshold", "high_contrast_mask", "local_maxima",
           "local_scores", "match_template", "non_maximum_suppression", "prepare_template",
           "pruned_rfftn", "rotate_templates", "template_box_size"]
