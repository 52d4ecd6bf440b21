from django.urls import path

from classroom.consumers import ClassroomConsumer

websocket_urlpatterns = [path("ws/session/<str:session_id>/", ClassroomConsumer.as_asgi())]
