from django.apps import AppConfig


class BalancerConfig(AppConfig):
    name = "balancer"
    verbose_name = "Load balancer"

    def ready(self):
        from . import signals  # noqa: F401  (connects the audit receivers)
