"""argparse value types shared by the command-line tools (demo, benchmark, analysis, export)."""
import argparse
from typing import Tuple

__all__ = ["non_negative_int", "positive_int", "vocabulary_arg"]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def vocabulary_arg(text: str) -> Tuple[str, ...]:
    """``--vocabulary``: comma-separated names or a text file with one per line (see
    :func:`zsmask.predictor.parse_vocabulary`), with its error message kept."""
    from ..predictor import parse_vocabulary
    from ..modeling.clip import VocabularyError

    try:
        return parse_vocabulary(text)
    except VocabularyError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
