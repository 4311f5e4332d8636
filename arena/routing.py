from django.urls import path

from arena import consumers

websocket_urlpatterns = [
    path("ws/battle/", consumers.BattleConsumer.as_asgi()),
    path("ws/battle/named/", consumers.BattleConsumer.as_asgi(named=True)),
    path("ws/admin/preview/", consumers.ContenderPreviewConsumer.as_asgi()),
]
