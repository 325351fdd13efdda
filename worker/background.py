"""A named daemon thread that runs until asked to stop: the shape of every worker-side loop."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Background:
    """Runs ``target(stop)`` on a daemon thread; ``stop()`` sets the event and joins."""

    def __init__(self, name: str, target: Callable[[threading.Event], None]) -> None:
        self.name = name
        self._target = target
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self.stopping.clear()
            self._thread = threading.Thread(target=self._target, args=(self.stopping,),
                                            name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            if self._thread is not threading.current_thread():
                self._thread.join(timeout)
            self._thread = None
