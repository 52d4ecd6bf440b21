"""Token authentication for WebSockets (`?token=`), the custom-middleware pattern of the
Channels docs: the token row is looked up once per connection."""

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware

from classroom.models import Token


@database_sync_to_async
def token_owner(key: str) -> Token | None:
    return Token.objects.select_related("user").filter(key=key).first()


class TokenAuthMiddleware(BaseMiddleware):
    async def __call__(self, scope, receive, send):
        query = parse_qs(scope.get("query_string", b"").decode())
        key = (query.get("token") or [""])[0]
        scope["token"] = await token_owner(key) if key else None
        return await super().__call__(scope, receive, send)
