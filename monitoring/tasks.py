"""Celery tasks: thin wrappers around `monitoring.checker`.

One beat entry runs `dispatch_due_checks` every tick (CELERY_BEAT_SCHEDULE in
settings); it fans out `run_checks` with server ids only. Both expire, so a
worker that was stopped does not wake up to a pile of outdated checks.
"""
from celery import shared_task

from . import checker


@shared_task(ignore_result=True)
def dispatch_due_checks() -> int:
    def send(server_ids, due_times, expires):
        run_checks.apply_async((server_ids, due_times), expires=expires)

    return checker.dispatch(send)


@shared_task(ignore_result=True)
def run_checks(server_ids: list[str], due_times: list[float] | None = None) -> int:
    return len(checker.check(server_ids, due_times))
