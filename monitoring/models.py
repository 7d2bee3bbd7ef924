"""Health events: every change of a real server's published state.

The last check result of each server lives in Redis (`Keys.health_detail`),
not here: one row per check would grow by 250 rows a second at 500 servers.
Servers are referred to by their snapshot id ("<pool>/<server>"), not by a
foreign key: the checker follows the published snapshot, and an event must
outlive the server it describes.
"""
from django.db import models

STATE_CHOICES = [(s, s) for s in ("up", "down", "drain", "disabled")]


class HealthEvent(models.Model):
    server_id = models.CharField(max_length=210, db_index=True)
    pool = models.CharField(max_length=100, db_index=True)
    server_name = models.CharField(max_length=100)
    from_state = models.CharField(max_length=10, choices=STATE_CHOICES)
    to_state = models.CharField(max_length=10, choices=STATE_CHOICES)
    reason = models.CharField(max_length=300, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["pool", "-at"]), models.Index(fields=["server_id", "-at"])]

    def __str__(self):
        return f"{self.server_id}: {self.from_state} -> {self.to_state} ({self.reason})"

    @property
    def is_worse(self) -> bool:
        """True when the server lost clients (for the timeline's colour)."""
        order = ["up", "drain", "down", "disabled"]
        return order.index(self.to_state) > order.index(self.from_state)
