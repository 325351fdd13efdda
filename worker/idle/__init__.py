"""Owner-idle detection: one small module per signal, one backend per OS.

signals (``input``, ``lock``, ``cpu``, ``gpu``, ``memory``, ``battery``,
``exclusive``, ``hostfile``) -> ``sampler.Reading`` -> ``worker.policy`` ->
owner state with reasons. ``backend.current`` is this OS's backend
(``_linux``, ``_windows`` or ``_macos``), picked once at import.
"""
