"""``python -m worker.cli`` is ``idle-accel``."""

from worker.cli import main

main()
