"""ASGI entry served by daphne: HTTP to Django, WebSockets to the classroom consumer."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peer_site.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from classroom.auth import TokenAuthMiddleware  # noqa: E402
from classroom.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # No AllowedHostsOriginValidator: it refuses connections without an Origin header,
        # and headset engines send none (the box accepts them too, checking browsers' Origin).
        "websocket": TokenAuthMiddleware(URLRouter(websocket_urlpatterns)),
    }
)
