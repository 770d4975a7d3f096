"""Small shared utilities: the user cache folder and atomic directory creation."""
import contextlib
import os
import shutil
import tempfile

__all__ = ["cache_dir", "atomic_write_dir"]


def cache_dir() -> str:
    """``$ZSMASK_CACHE``, else ``$XDG_CACHE_HOME/zsmask``, else ``~/.cache/zsmask`` (created)."""
    path = os.environ.get("ZSMASK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "zsmask"
    )
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_write_dir(final_path: str):
    """Yield a temporary sibling folder and rename it to ``final_path`` on success, so readers
    never see a half-written folder; on error it is removed. If another process finished
    ``final_path`` first, its result is kept."""
    parent = os.path.dirname(os.path.abspath(final_path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        yield tmp
        try:
            os.rename(tmp, final_path)
        except OSError:
            if not os.path.isdir(final_path):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
