"""Create one session, a teacher and N students with tokens; print them as JSON."""

import json
import secrets
import uuid

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand

from classroom.models import LessonSession, Token


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--students", type=int, required=True)

    def handle(self, *args, **options):
        n = options["students"]
        names = ["teacher"] + [f"bench{i:04d}" for i in range(1, n + 1)]
        users = User.objects.bulk_create([User(username=name) for name in names])
        tokens = [secrets.token_urlsafe(32) for _ in users]
        Token.objects.bulk_create(
            Token(key=key, user=user, role="teacher" if i == 0 else "student")
            for i, (user, key) in enumerate(zip(users, tokens, strict=True))
        )
        session = LessonSession.objects.create(
            id=str(uuid.uuid4()), status="paused", lesson_id="lesson-1"
        )
        self.stdout.write(
            json.dumps(
                {"session_id": session.id, "teacher_token": tokens[0], "student_tokens": tokens[1:]}
            )
        )
