"""No HTTP views: the peer is benchmarked on its WebSocket fan-out only."""

urlpatterns: list[object] = []
