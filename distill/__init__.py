"""assay.distill: one LoRA adapter per question from probabilistic labels, evaluated and promoted.

The handful of names a caller needs.
"""

from .evaluate import evaluate, promote_if_better
from .train import TrainConfig, train_question, train_questions

__all__ = ["TrainConfig", "evaluate", "promote_if_better", "train_question", "train_questions"]
