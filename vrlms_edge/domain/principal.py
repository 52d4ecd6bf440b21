"""Who is calling: the authenticated user (and device) behind a token."""

from __future__ import annotations

from dataclasses import dataclass

from vrlms_edge.store.models import Role


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    org_id: str
    role: Role
    nickname: str
    display_name: str
    token_id: str
    # Primary key (devices.id) of the headset this token was issued to, if any.
    device_pk: str | None = None
    # Dashboard cookie sessions carry a CSRF token that every form and API write must echo.
    csrf_token: str | None = None

    @property
    def is_staff(self) -> bool:
        return self.role in (Role.teacher, Role.admin)
