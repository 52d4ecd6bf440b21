from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = [migrations.swappable_dependency(settings.AUTH_USER_MODEL)]

    operations = [
        migrations.CreateModel(
            name="Token",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("key", models.CharField(max_length=64, unique=True)),
                ("role", models.CharField(default="student", max_length=16)),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=models.deletion.CASCADE, to=settings.AUTH_USER_MODEL
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="LessonSession",
            fields=[
                ("id", models.CharField(max_length=36, primary_key=True, serialize=False)),
                ("rev", models.IntegerField(default=0)),
                ("status", models.CharField(default="idle", max_length=16)),
                ("lesson_id", models.CharField(max_length=36, null=True)),
                ("anchor_server_ms", models.BigIntegerField(default=0)),
                ("anchor_position_ms", models.BigIntegerField(default=0)),
                ("attention_on", models.BooleanField(default=False)),
            ],
        ),
        migrations.CreateModel(
            name="Event",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("stream", models.CharField(max_length=64)),
                ("seq", models.BigIntegerField()),
                ("kind", models.CharField(max_length=32)),
                ("t_ms", models.BigIntegerField()),
                ("data", models.JSONField(default=dict)),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=models.deletion.CASCADE, to=settings.AUTH_USER_MODEL
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("user", "stream", "seq"), name="event_once")
                ]
            },
        ),
    ]
