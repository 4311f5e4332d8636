"""WebSocket consumers. Thin: validate frames, call services, forward events as frames.

Before the vote nothing that identifies a contender is sent: sides are only "a" and "b".
"""
from __future__ import annotations

import uuid

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from arena import roles
from arena.models import ArenaModel
from arena.selectors import battle_for_rater, battle_state
from arena.services.battles import (
    BattleError, battle_group, battle_reveal, battle_start, prompt_check, turn_submit,
    vote_cast,
)
from workers.dispatch import enqueue
from workers.tasks import stream_contender

MAX_PREVIEW_PROMPT_CHARS = 4000
MAX_FRAME_CHARS = 64_000


class BattleConsumer(AsyncJsonWebsocketConsumer):
    """The rater's battle: prompts in, ordered deltas out, vote, reveal."""

    battle = None
    group = None

    async def connect(self):
        user = self.scope.get("user")
        if not user or not user.is_authenticated or not await database_sync_to_async(self._may_rate)(user):
            await self.close(code=4403)
            return
        self.user = user
        self.seen_seq = {"a": 0, "b": 0}
        await self.accept()

    @staticmethod
    def _may_rate(user) -> bool:
        return bool(roles.user_roles(user) & {roles.RATER, roles.ADMIN})

    async def disconnect(self, code):
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if text_data is None or len(text_data) > MAX_FRAME_CHARS:
            await self.send_json({"type": "error", "message": "Frames must be JSON text under 64 KB."})
            return
        await super().receive(text_data=text_data, **kwargs)

    @classmethod
    async def decode_json(cls, text_data):
        import json

        try:
            return json.loads(text_data)
        except ValueError:
            return None

    async def receive_json(self, content, **kwargs):
        kind = content.get("type") if isinstance(content, dict) else None
        handler = {"new": self.on_new, "resume": self.on_resume, "prompt": self.on_prompt,
                   "vote": self.on_vote}.get(kind)
        if handler is None:
            await self.send_json({"type": "error", "message": "Unknown or malformed frame."})
            return
        try:
            await handler(content)
        except BattleError as exc:
            await self.send_json({"type": "error", "code": exc.code, "message": exc.message})

    async def _follow(self, battle) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        self.battle = battle
        self.group = battle_group(battle)
        # Join before reading state: deltas after the snapshot arrive live, older ones are dropped.
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def _send_state(self) -> None:
        state = await database_sync_to_async(battle_state)(battle=self.battle)
        self.seen_seq = {"a": 0, "b": 0}
        if state["turns"]:
            last = state["turns"][-1]
            for side in "ab":
                if last[side]["seq"] is not None:
                    self.seen_seq[side] = last[side]["seq"]
        await self.send_json({"type": "state", **state})

    async def on_new(self, content):
        battle = await database_sync_to_async(battle_start)(rater=self.user)
        await self._follow(battle)
        await self._send_state()

    async def on_resume(self, content):
        try:
            public_id = uuid.UUID(str(content.get("battle")))
        except ValueError:
            raise BattleError("No such battle.", code="not_found") from None
        battle = await database_sync_to_async(battle_for_rater)(public_id=public_id, rater=self.user)
        if battle is None:
            raise BattleError("No such battle.", code="not_found")
        await self._follow(battle)
        await self._send_state()

    async def on_prompt(self, content):
        prompt_check(content.get("text"))  # a bad prompt starts no battle
        if self.battle is None:
            await self.on_new(content)
        turn = await database_sync_to_async(turn_submit)(battle=self.battle, rater=self.user,
                                                         prompt=content.get("text"))
        self.seen_seq = {"a": 0, "b": 0}
        await self.send_json({"type": "turn", "index": turn.index, "prompt": turn.prompt})

    async def on_vote(self, content):
        if self.battle is None:
            raise BattleError("There is no battle to vote on.", code="no_battle")
        await database_sync_to_async(vote_cast)(battle=self.battle, rater=self.user, winner=content.get("winner"))
        revealed = await database_sync_to_async(battle_reveal)(battle=self.battle, rater=self.user)
        await self.send_json({"type": "reveal", "winner": content.get("winner"), "sides": {
            r.side: {"name": r.display_name, "organisation": r.organisation, "preset": r.preset,
                     "ttft_ms": r.ttft_ms, "tpot_ms": r.tpot_ms} for r in revealed}})

    # Events from the workers, forwarded without anything that could identify a contender.
    async def generation_delta(self, event):
        side = event["side"]
        if event["seq"] <= self.seen_seq.get(side, 0):
            return  # already part of the snapshot this client received
        self.seen_seq[side] = event["seq"]
        await self.send_json({"type": "delta", "side": side, "seq": event["seq"], "text": event["text"]})

    async def generation_done(self, event):
        await self.send_json({"type": "done", "side": event["side"]})

    async def generation_failed(self, event):
        await self.send_json({"type": "failed", "side": event["side"], "message": event["message"]})

    async def battle_ready(self, event):
        await self.send_json({"type": "ready"})


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
