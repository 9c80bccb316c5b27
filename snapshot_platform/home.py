"""The platform's home folder on local disk: ``$SNAPSHOT_PLATFORM_HOME``, default ``~/.snapshot_platform``.

Defaults live under it: snapshot storage (``storage/``), the demo's source database
(``demo/production.sqlite``), the demo's Dagster home (``dagster_home/``) and MLflow store.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "SNAPSHOT_PLATFORM_HOME"


def platform_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or "~/.snapshot_platform").expanduser().resolve()
