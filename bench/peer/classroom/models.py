"""The peer's data: headset tokens, lesson sessions (state + rev) and interaction events."""

from django.conf import settings
from django.db import models


class Token(models.Model):
    key = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    role = models.CharField(max_length=16, default="student")


class LessonSession(models.Model):
    id = models.CharField(max_length=36, primary_key=True)
    rev = models.IntegerField(default=0)
    status = models.CharField(max_length=16, default="idle")
    lesson_id = models.CharField(max_length=36, null=True)
    anchor_server_ms = models.BigIntegerField(default=0)
    anchor_position_ms = models.BigIntegerField(default=0)
    attention_on = models.BooleanField(default=False)


class Event(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    stream = models.CharField(max_length=64)
    seq = models.BigIntegerField()
    kind = models.CharField(max_length=32)
    t_ms = models.BigIntegerField()
    data = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "stream", "seq"], name="event_once")
        ]
