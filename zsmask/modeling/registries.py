"""Looking up config-selected parts in detectron2 registries, with one error message style."""
from detectron2.utils.registry import Registry

__all__ = ["get_registered"]


def get_registered(registry: Registry, name: str, what: str, config_key: str):
    """``registry.get(name)``; a KeyError naming ``config_key`` and every registered name when
    ``name`` is unknown (``what`` says what kind of part it is, e.g. "pseudo labeler")."""
    if name not in registry:
        registered = ", ".join(sorted(n for n, _ in registry))
        raise KeyError(f"Unknown {what} {name!r} in {config_key}; registered: {registered}")
    return registry.get(name)
