from django.apps import AppConfig


class BalancerConfig(AppConfig):
    name = "balancer"
    verbose_name = "Load balancer"

    def ready(self):
        from . import checks, signals  # noqa: F401  (registers the checks, connects the audit receivers)
