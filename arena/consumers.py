"""WebSocket consumers. Thin: validate frames, call services, forward events as frames."""
from __future__ import annotations

import uuid

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from arena.models import ArenaModel
from workers.dispatch import enqueue
from workers.tasks import stream_contender

MAX_PREVIEW_PROMPT_CHARS = 4000


class ContenderPreviewConsumer(AsyncJsonWebsocketConsumer):
    """Admins stream one contender's answer live, to check a registration end to end."""

    async def connect(self):
        user = self.scope.get("user")
        if not user or not user.is_authenticated or not user.is_staff:
            await self.close(code=4403)
            return
        self.group = f"preview.{uuid.uuid4().hex}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict) or content.get("type") != "preview":
            await self.send_json({"type": "error", "message": 'Expected {"type": "preview", "contender": id, "prompt": text}.'})
            return
        prompt, contender_id = content.get("prompt"), content.get("contender")
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PREVIEW_PROMPT_CHARS:
            await self.send_json({"type": "error",
                                  "message": f"The prompt must be 1 to {MAX_PREVIEW_PROMPT_CHARS} characters."})
            return
        if not isinstance(contender_id, int) or not await self._contender_exists(contender_id):
            await self.send_json({"type": "error", "message": "No such contender."})
            return
        enqueue(stream_contender, contender_id, prompt, self.group, "a")
        await self.send_json({"type": "started"})

    @database_sync_to_async
    def _contender_exists(self, contender_id: int) -> bool:
        return ArenaModel.objects.filter(pk=contender_id).exists()

    async def generation_delta(self, event):
        await self.send_json({"type": "delta", "side": event["side"], "seq": event["seq"], "text": event["text"]})

    async def generation_done(self, event):
        await self.send_json({"type": "done", "side": event["side"], "seq": event["seq"],
                              "finish_reason": event.get("finish_reason"), "output_tokens": event.get("output_tokens")})

    async def generation_failed(self, event):
        await self.send_json({"type": "failed", "side": event["side"], "message": event["message"]})
