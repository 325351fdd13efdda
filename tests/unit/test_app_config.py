"""The Celery configuration the design rests on, built from settings."""

from __future__ import annotations

import importlib
import sys

import pytest

from compute.app import celery_config, create_app
from compute.errors import ConfigError
from compute.settings import Settings


def test_json_only_late_acks_and_one_task_per_process():
    conf = create_app(Settings.load(broker_url="redis://h:1/0")).conf

    assert conf.accept_content == ["json"]
    assert conf.result_accept_content == ["json"]
    assert conf.task_serializer == conf.result_serializer == conf.event_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_send_task_events and conf.task_send_sent_event


def test_named_queues_and_routes():
    conf = create_app(Settings.load()).conf

    assert [queue.name for queue in conf.task_queues] == ["cpu", "gpu", "emergency"]
    assert conf.task_default_queue == "cpu"
    app = create_app(Settings.load())
    assert app.amqp.router.route({}, "compute.diag.burn")["queue"].name == "cpu"


def test_redis_transport_options_follow_settings():
    settings = Settings.load(visibility_timeout=90, unacked_restore_interval=2.5,
                             unacked_restore_throttle=3, result_expires=600)
    config = celery_config(settings)

    assert config["broker_transport_options"] == {
        "visibility_timeout": 90, "unacked_restore_interval": 2.5, "unacked_restore_throttle": 3}
    assert config["result_expires"] == 600


def test_amqp_broker_gets_no_redis_transport_options():
    settings = Settings.load(broker_url="amqp://h//", result_backend="redis://h/1")

    assert celery_config(settings)["broker_transport_options"] == {}


def test_quorum_queues_are_declared_alike_everywhere_and_sends_are_confirmed():
    settings = Settings.load(broker_url="amqp://h//", result_backend="redis://h/1",
                             queue_type="quorum")
    config = celery_config(settings)
    app = create_app(settings)

    assert {queue.name: queue.queue_arguments for queue in config["task_queues"]} == {
        name: {"x-queue-type": "quorum"} for name in ("cpu", "gpu", "emergency")}
    made = app.amqp.queues["cpu.ram16@eu-west"]  # a tier or region, on demand
    assert made.queue_arguments == {"x-queue-type": "quorum"}
    assert config["broker_transport_options"] == {"confirm_publish": True}
    classic = celery_config(Settings.load(broker_url="amqp://h//", result_backend="redis://h/1"))
    assert all(queue.queue_arguments is None for queue in classic["task_queues"])
    app.close()


def test_send_replicas_on_rabbitmq_are_refused_with_the_reason():
    with pytest.raises(ConfigError, match="IDLE_ACCEL_SEND_REPLICAS is for a Redis broker"):
        Settings.load(broker_url="amqp://h//", result_backend="redis://h/1", send_replicas=1)


def test_quorum_queues_on_redis_are_refused_with_the_reason():
    with pytest.raises(ConfigError, match="IDLE_ACCEL_QUEUE_TYPE=quorum needs a RabbitMQ"):
        Settings.load(broker_url="redis://h/0", queue_type="quorum")


def test_on_amqp_a_vanished_worker_is_noticed_within_a_visibility_timeout():
    amqp = celery_config(Settings.load(broker_url="amqp://h//", result_backend="redis://h/1",
                                       visibility_timeout=30))
    redis = celery_config(Settings.load(broker_url="redis://h/0"))

    assert amqp["broker_heartbeat"] == 15.0 and "broker_heartbeat" not in redis
    # an AMQP ack cannot outlive its channel: end local copies of what the broker requeues
    assert amqp["worker_cancel_long_running_tasks_on_connection_loss"] is True
    assert redis["worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert amqp["broker_channel_error_retry"] is True  # consumer_timeout: reconnect, not exit


def test_module_app_reads_the_environment_on_first_use_not_at_import(monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", "sqs://")
    sys.modules.pop("compute.app", None)
    module = importlib.import_module("compute.app")  # importing alone reads nothing

    with pytest.raises(ConfigError, match="CELERY_BROKER_URL"):
        _ = module.app

    monkeypatch.setenv("CELERY_BROKER_URL", "redis://from-env:6379/3")
    assert module.app.conf.broker_url == "redis://from-env:6379/3"
    assert module.app is module.app  # built once
    sys.modules.pop("compute.app", None)
