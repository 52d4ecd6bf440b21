"""The post/redirect/get steps every form page shares: read a field, run the action the
form's `op` names, and redirect back with its message (a domain error becomes the message)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from vrlms_edge.errors import AppError
from vrlms_edge.web.pages.guard import Page, redirect

# One form action: does its domain call and says what it did ("alice disabled").
Action = Callable[[Page], Awaitable[str]]


def field(p: Page, name: str) -> str:
    return str(p.form.get(name, "")).strip()


def optional(p: Page, name: str) -> str | None:
    return field(p, name) or None


def flash(request: web.Request) -> dict[str, str | None]:
    """The message a redirect carried, for the page's template."""
    return {"ok": request.query.get("ok"), "error": request.query.get("error")}


async def apply(back: str, p: Page, action: Action) -> web.Response:
    try:
        message = await action(p)
    except AppError as err:
        return redirect(back, error=err.message)
    return redirect(back, ok=message)


async def dispatch(back: str, p: Page, actions: Mapping[str, Action]) -> web.Response:
    """Apply the action the form field `op` names; an unknown `op` is a message too."""
    action = actions.get(field(p, "op"))
    if action is None:
        return redirect(back, error="unknown action")
    return await apply(back, p, action)
