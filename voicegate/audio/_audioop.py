"""The one place that imports ``audioop`` (stdlib up to 3.12, the ``audioop-lts`` package from 3.13).

Owns: importing audioop with its DeprecationWarning silenced, so the rest of the package (and tests
run with ``-W error``) never sees it. ``audioop`` is ``None`` where neither is installed; callers
then use the numpy tables of :mod:`voicegate.audio._g711_tables`.
Must not import any other voicegate module.
"""

from __future__ import annotations

import warnings
from types import ModuleType

audioop: ModuleType | None
with warnings.catch_warnings():
    # Python 3.11/3.12 warn on import ("'audioop' is deprecated and slated for removal in 3.13").
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop as _audioop
    except ImportError:  # pragma: no cover - only without audioop-lts on >= 3.13
        audioop = None
    else:
        audioop = _audioop
