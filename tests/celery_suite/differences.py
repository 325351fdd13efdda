"""Cases of Celery's integration suite left out against ``idle-accel worker``, each with why.

Two kinds only:

- *out of process*: the case reads or changes the worker's in-process state
  (``worker_state``, signal receivers, ``caplog`` of the worker's logger,
  task classes registered in the test's app). Celery's suite runs its worker
  inside the test process; here the worker is a separate process, as a
  volunteer's is, so the case cannot observe it. Not a difference in what
  the worker does.
- *by design*: a deliberate setting of the project (``task_acks_late``, the
  ``cpu`` queue consumed beside ``celery``), documented in docs/architecture.md.

Anything else that fails is a regression of Celery semantics on the
idle-gated worker, and fails the build.
"""

from __future__ import annotations

OUT_OF_PROCESS = "out of process"
BY_DESIGN = "by design"

#: node id (relative to the suite's root) -> (kind, why)
LEFT_OUT: dict[str, tuple[str, str]] = {
    # t/integration/test_tasks.py
    "t/integration/test_tasks.py::test_class_based_tasks::test_class_based_task_retried":
        (OUT_OF_PROCESS, "the class-based task is registered in the test's app only "
                         "(celery_class_tasks), not in a separate worker's"),
    "t/integration/test_tasks.py::test_tasks::test_send_task_without_ignore_result_uses_task_ignore_result":
        (OUT_OF_PROCESS, "reads worker_state.successful_requests in the test process"),
    "t/integration/test_tasks.py::test_tasks::test_send_task_without_ignore_result_stores_result":
        (OUT_OF_PROCESS, "reads worker_state.successful_requests in the test process"),
    "t/integration/test_tasks.py::test_tasks::test_revoked_by_headers_simple_canvas":
        (OUT_OF_PROCESS, "clears worker_state.revoked_stamps in the test process between "
                         "rounds; a separate worker keeps the first round's revocation"),
    "t/integration/test_tasks.py::test_trace_log_arguments::test_task_success":
        (OUT_OF_PROCESS, "captures the worker's log records with caplog"),
    "t/integration/test_tasks.py::test_trace_log_arguments::test_task_failed":
        (OUT_OF_PROCESS, "captures the worker's log records with caplog"),
    "t/integration/test_tasks.py::test_task_redis_result_backend::test_retry_preserves_ignore_result_false":
        (OUT_OF_PROCESS, "reads worker_state.successful_requests in the test process"),
    "t/integration/test_tasks.py::test_task_redis_result_backend::test_retry_preserves_ignore_result_true":
        (OUT_OF_PROCESS, "reads worker_state.successful_requests in the test process"),
    "t/integration/test_tasks.py::test_task_replacement::test_replaced_task_nesting_level_0":
        (OUT_OF_PROCESS, "a task_received receiver connected in the test process"),
    "t/integration/test_tasks.py::test_task_replacement::test_replaced_task_nesting_level_1":
        (OUT_OF_PROCESS, "a task_received receiver connected in the test process"),
    "t/integration/test_tasks.py::test_task_replacement::test_replaced_task_nesting_chain":
        (OUT_OF_PROCESS, "a task_received receiver connected in the test process"),
    "t/integration/test_tasks.py::test_signal_bound_method_receivers::test_each_instance_receives":
        (OUT_OF_PROCESS, "signal receivers connected in the test process"),
    "t/integration/test_tasks.py::test_signal_bound_method_receivers::test_disconnect_leaves_other_instance_connected":
        (OUT_OF_PROCESS, "signal receivers connected in the test process"),
    "t/integration/test_tasks.py::test_signal_bound_method_receivers::test_other_instance_receives_after_garbage_collection":
        (OUT_OF_PROCESS, "signal receivers connected in the test process"),
    # t/integration/test_inspect.py
    "t/integration/test_inspect.py::test_Inspect::test_active_queues":
        (BY_DESIGN, "the worker consumes its own cpu queue beside the suite's celery queue "
                    "(links and chord bodies it sends go to its default queue, cpu)"),
    "t/integration/test_inspect.py::test_Inspect::test_active":
        (BY_DESIGN, "task_acks_late: a running task is not yet acknowledged"),
    "t/integration/test_inspect.py::test_Inspect::test_query_task":
        (BY_DESIGN, "task_acks_late: a running task is not yet acknowledged"),
    "t/integration/test_inspect.py::test_Inspect::test_stats":
        (OUT_OF_PROCESS, "expects the worker's pid to be the test process's own"),
    "t/integration/test_inspect.py::test_Inspect::test_hello_stamps_received_revoked_ids_locally":
        (OUT_OF_PROCESS, "reads and changes worker_state in the test process"),
    "t/integration/test_inspect.py::test_Inspect::test_conf":
        (OUT_OF_PROCESS, "expects the test app's configuration (worker_hijack_root_logger) "
                         "in the worker; a separate worker has the project's own"),
    # t/integration/test_canvas.py (outside the default targets; run it by name)
    "t/integration/test_canvas.py::test_stamping_mechanism::test_task_received_has_access_to_stamps":
        (OUT_OF_PROCESS, "a task_received receiver connected in the test process"),
    "t/integration/test_canvas.py::test_stamping_mechanism::test_linking_stamped_sig":
        (OUT_OF_PROCESS, "a task_received receiver connected in the test process"),
    "t/integration/test_canvas.py::test_stamping_mechanism::test_err_linking_stamped_sig":
        (OUT_OF_PROCESS, "a task_received receiver connected in the test process"),
}
