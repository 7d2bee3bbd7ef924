"""The Celery app: broker is the same Redis as everything else."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "viewlb_site.settings")

app = Celery("viewlb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
