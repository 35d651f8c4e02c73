"""Alerts to the operators (CONTRACT §7): what was raised, how each channel took it, what still holds.

Kept apart from `delivery.models` (which imports these names) so that the delivery log's module
stays one screenful; they are models all the same, below every stage (`delivery.alerts`).
"""

from __future__ import annotations

from django.db import models

from destinations.models import ConfigChange, Destination


class AlertEvent(models.TextChoices):
    CIRCUIT_OPENED = "circuit_opened", "Circuit opened"
    CIRCUIT_CLOSED = "circuit_closed", "Circuit closed"
    BACKLOG_STALE = "backlog_stale", "Backlog stale"


class AlertChannel(models.TextChoices):
    WEBHOOK = "webhook", "Webhook"
    EMAIL = "email", "Email"


class AlertSendStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # not yet taken, or waiting for its next try
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"  # gave up: still undelivered a day after it was raised


class AlertCondition(models.TextChoices):
    """What an episode follows: reminders come while it holds."""

    CIRCUIT_OPEN = "circuit_open", "Circuit open"
    BACKLOG_STALE = "backlog_stale", "Backlog stale"


class Alert(models.Model):
    """One alert raised: a circuit transition (one per change-log row), a stale backlog, or a reminder."""

    event = models.CharField(max_length=20, choices=AlertEvent.choices)
    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, related_name="alerts")
    # When the condition began (the transition's time, or when the backlog was found stale).
    at = models.DateTimeField()
    detail = models.TextField()
    is_reminder = models.BooleanField(default=False)
    # The circuit transition this alert tells of; unique, so a transition raises one alert however
    # many jobs see it. null: a stale backlog or a reminder, raised by an episode instead.
    config_change = models.OneToOneField(
        ConfigChange, null=True, blank=True, on_delete=models.SET_NULL, related_name="alert"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        reminder = " (reminder)" if self.is_reminder else ""
        when = f"{self.at:%Y-%m-%d %H:%M:%S}"
        return f"{self.get_event_display()}{reminder}: destination {self.destination_id} at {when}"


class AlertSend(models.Model):
    """One alert on one channel: whether it went out, how many tries, the last error, the next try."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="sends")
    channel = models.CharField(max_length=10, choices=AlertChannel.choices)
    status = models.CharField(max_length=10, choices=AlertSendStatus.choices,
                              default=AlertSendStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # When a job may take it next: a taken send is pushed past its deadline, so that one job at a
    # time holds it. null: sent or failed, never again.
    next_try_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["alert_id", "channel"]
        constraints = [
            models.UniqueConstraint(fields=["alert", "channel"], name="alert_send_once_per_channel"),
        ]
        indexes = [
            # The job's claim: pending sends whose next try is due.
            models.Index(fields=["next_try_at"], name="alert_send_due",
                         condition=models.Q(status="pending")),
        ]

    def __str__(self) -> str:
        return f"alert {self.alert_id} by {self.channel}: {self.status}"


class AlertEpisode(models.Model):
    """Per destination and condition: since when it holds, and when it was last told (reminders)."""

    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, related_name="+")
    condition = models.CharField(max_length=20, choices=AlertCondition.choices)
    # null: the condition does not hold; the next time it does raises a new alert (re-armed).
    started_at = models.DateTimeField(null=True, blank=True)
    # The latest alert or reminder of this episode; the next reminder is due REMIND_HOURS later.
    last_alerted_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["destination_id", "condition"]
        constraints = [
            models.UniqueConstraint(fields=["destination", "condition"], name="alert_episode_once"),
        ]

    def __str__(self) -> str:
        state = f"since {self.started_at:%Y-%m-%d %H:%M:%S}" if self.started_at else "not holding"
        return f"{self.get_condition_display()} for destination {self.destination_id}: {state}"
