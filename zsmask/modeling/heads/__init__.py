"""Heads that turn decoder outputs into predictions (the open-vocabulary classifier, ...)."""
from .vocabulary_classifier import VocabularyClassifier

__all__ = ["VocabularyClassifier"]
