"""Team side of Idle Accelerator: the Celery app, its settings, queues and task modules."""
