"""`--name` becomes the Celery node name that tasks report as ``hostname``."""

import socket

from worker.runner import node_name


def test_bare_name_gets_this_host():
    assert node_name("laptop-7") == f"laptop-7@{socket.gethostname()}"


def test_full_node_name_is_kept_and_formats_expand():
    assert node_name("w1@rack-3") == "w1@rack-3"
    assert node_name("w1@%h") == f"w1@{socket.gethostname()}"
