"""A local cluster on one machine: a private redis-server and worker processes.

Used by ``idle-accel demo`` and by the integration tests, so both run the
same real parts the same way.
"""
