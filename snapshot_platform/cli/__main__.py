"""``python -m snapshot_platform.cli``: the same as the ``snapshot-platform`` script."""

from snapshot_platform.cli import main

main()
