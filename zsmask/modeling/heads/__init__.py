"""Heads that turn decoder outputs into predictions (the open-vocabulary classifier, AlignZeg's
class indicator, ...)."""
from .class_indicator import ClassIndicatorHead
from .vocabulary_classifier import VocabularyClassifier

__all__ = ["ClassIndicatorHead", "VocabularyClassifier"]
