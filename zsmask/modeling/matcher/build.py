"""Registry of matchers (query <-> target assignment), selected by ``MODEL.ZSMASK.MATCHER``.

A matcher is an ``nn.Module`` whose ``forward(outputs, targets)`` returns, per image, a tuple
``(query_idx, target_idx)`` of int64 tensors. Methods add their own matcher (Split Matching,
negative-proposal selection, ...) by registering it under a short name; the meta-architecture
only calls :func:`build_matcher`.
"""
from typing import Callable, Optional, TypeVar

from detectron2.utils.registry import Registry

__all__ = ["MATCHER_REGISTRY", "register_matcher", "build_matcher"]

MATCHER_REGISTRY = Registry("ZSMASK_MATCHER")
MATCHER_REGISTRY.__doc__ = """
Matchers keyed by the short name used in ``cfg.MODEL.ZSMASK.MATCHER`` (e.g. "hungarian").
Each is called as ``matcher_cls(cfg)`` (detectron2 ``@configurable`` style) and returns an
``nn.Module``.
"""

_MatcherClass = TypeVar("_MatcherClass")


def register_matcher(name: str) -> Callable[[_MatcherClass], _MatcherClass]:
    """Class decorator: register a matcher in :data:`MATCHER_REGISTRY` under ``name``.

    detectron2's ``Registry.register`` always uses the class name; configs use short,
    lower-case names instead, so this registers the class under ``name``.
    """

    def deco(matcher_cls: _MatcherClass) -> _MatcherClass:
        MATCHER_REGISTRY._do_register(name, matcher_cls)
        return matcher_cls

    return deco


def build_matcher(cfg, name: Optional[str] = None):
    """Build the matcher registered as ``name`` (default ``cfg.MODEL.ZSMASK.MATCHER``).

    Raises:
        KeyError: if no matcher is registered under that name (the message lists those that are).
    """
    name = cfg.MODEL.ZSMASK.MATCHER if name is None else name
    if name not in MATCHER_REGISTRY:
        registered = ", ".join(sorted(n for n, _ in MATCHER_REGISTRY))
        raise KeyError(
            f"Unknown matcher {name!r} (cfg.MODEL.ZSMASK.MATCHER or a method's selector key); "
            f"registered matchers: {registered}"
        )
    return MATCHER_REGISTRY.get(name)(cfg)
