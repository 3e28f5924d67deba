"""assay.labeling.model: the label model, `combine` (votes -> labels) and the run's diagnostics."""

from .analysis import VoteAnalysis
from .combine import METHODS, CombineResult, combine
from .label_model import DawidSkene

__all__ = ["METHODS", "CombineResult", "DawidSkene", "VoteAnalysis", "combine"]
