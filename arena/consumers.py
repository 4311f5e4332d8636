"""WebSocket consumers. Thin: validate frames, call services, forward events as frames.

Before the vote nothing that identifies a contender is sent: sides are only "a" and "b".
"""
from __future__ import annotations

import json
import logging
import uuid

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.consumer import get_handler_name
from django.db import DatabaseError

from arena import metrics, roles
from arena.asyncdb import db_async
from arena.logs import battle_context
from arena.models import ArenaModel, GenerationStatus
from arena.selectors import battle_for_rater, battle_snapshot, current_generation_ids
from arena.services.battles import (
    BattleError, battle_group, battle_start, battle_start_named, battle_start_with_turn, group_for, prompt_check,
    turn_regenerate, turn_send, turn_stop, vote_and_reveal,
)
from workers.dispatch import enqueue
from workers.tasks import stream_contender

log = logging.getLogger(__name__)

FINAL_STATUSES = {GenerationStatus.DONE, GenerationStatus.FAILED, GenerationStatus.STOPPED}
MAX_PREVIEW_PROMPT_CHARS = 4000
MAX_FRAME_CHARS = 64_000


class JsonFramesConsumer(AsyncJsonWebsocketConsumer):
    """Text frames of JSON only: anything else gets an error frame instead of closing the socket."""

    gone = False

    async def dispatch(self, message):
        """Channels' dispatch without its database clean-up before every message.

        Channels closes stale database connections before each handler, through a hop to its one
        sync thread: for every frame and every delta of every socket of the process, though a
        delta touches no database. Every database call of these consumers goes through
        ``arena.asyncdb.db_async``, which cleans up before and after the call itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message):
        self.gone = True
        await super().websocket_disconnect(message)

    async def send_json(self, content, close=False):
        if self.gone:
            return  # the client left: late events have nobody to go to
        try:
            await super().send_json(content, close=close)
        except RuntimeError as exc:
            # The server closed the socket (the client went away) before this consumer heard of it.
            if "after sending 'websocket.close'" not in str(exc):
                raise
            self.gone = True

    async def refuse_revoked(self) -> None:
        """The user lost the role this socket was opened with: say so and close."""
        await self.send_json({"type": "error", "code": "forbidden",
                              "message": "Your account may no longer use this page. Sign in again."})
        await self.close(code=4403)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # Empty as well as binary: the base class raises on an empty text frame (a browser's ws.send("")).
        if not text_data or len(text_data) > MAX_FRAME_CHARS:
            await self.send_json({"type": "error", "message": "Frames must be JSON text under 64 KB."})
            return
        await super().receive(text_data=text_data, **kwargs)

    @classmethod
    async def decode_json(cls, text_data):
        try:
            return json.loads(text_data)
        except ValueError:
            return None  # receive_json answers a malformed frame like an unknown one


class BattleConsumer(JsonFramesConsumer):
    """The rater's battle: prompts in, ordered deltas out, vote, reveal.

    With ``named=True`` (routed as ``BattleConsumer.as_asgi(named=True)``) it serves the side-by-side
    named mode for viewers and admins instead: the user picks both contenders, the battle is stored
    as not anonymous, and everything else is the same flow.
    """

    named = False
    battle = None
    group = None
    ready_sent_for: tuple | None = None

    def __init__(self, *args, named: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.named = named

    async def connect(self):
        user = self.scope.get("user")
        if not user or not user.is_authenticated or not await db_async(roles.user_may)(user.pk, self._allowed()):
            await self.close(code=4403)
            return
        self.user = user
        self.seen_seq = {"a": 0, "b": 0}
        # Only these generations' events reach the client: a replaced answer's late deltas are dropped.
        self.following = {"a": None, "b": None}
        await self.accept()
        metrics.record_websocket_open(self)

    def _allowed(self) -> set[str]:
        return {roles.VIEWER, roles.ADMIN} if self.named else {roles.RATER, roles.ADMIN}

    async def _db(self, call, /, **kwargs):
        """One database call for an action, after checking in the same call that the user still
        has the role (see ``roles.user_may``)."""
        def guarded():
            if not roles.user_may(self.user.pk, self._allowed()):
                raise RoleRevoked
            return call(**kwargs)

        return await db_async(guarded)()

    async def disconnect(self, code):
        metrics.record_websocket_closed(self)
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        kind = content.get("type") if isinstance(content, dict) else None
        if not isinstance(kind, str):
            kind = None  # a list or an object as "type" would not even be a valid lookup key
        handler = {"new": self.on_new, "resume": self.on_resume, "prompt": self.on_prompt,
                   "vote": self.on_vote, "stop": self.on_stop, "regenerate": self.on_regenerate}.get(kind)
        if handler is None:
            await self.send_json({"type": "error", "message": "Unknown or malformed frame."})
            return
        try:
            with battle_context(self.battle.public_id if self.battle else None):
                await handler(content)
        except RoleRevoked:
            await self.refuse_revoked()
        except BattleError as exc:
            await self.send_json({"type": "error", "code": exc.code, "message": exc.message})
        except DatabaseError:
            # The database is down or restarting: the action wrote nothing (one transaction), so
            # the rater may simply try again; the socket stays open.
            log.exception("battle %s: database unavailable for a %r frame",
                          self.battle.public_id if self.battle else "-", kind)
            await self.send_json({"type": "error", "code": "unavailable",
                                  "message": "The arena cannot save that right now. Try again in a moment."})

    async def _join(self, group: str) -> None:
        if self.group and self.group != group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        self.group = group
        # Join before reading state: deltas after the snapshot arrive live, older ones are dropped.
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def _follow(self, battle) -> None:
        await self._join(battle_group(battle))
        self.battle = battle

    async def _refresh_following(self) -> None:
        self.following = await db_async(current_generation_ids)(battle=self.battle)

    async def _send_state(self, *, generations=None) -> None:
        if generations is None:
            state, self.following = await db_async(battle_snapshot)(battle=self.battle)
        else:
            state, self.following = battle_snapshot(battle=self.battle, generations=generations)  # no I/O
        self.seen_seq = {"a": 0, "b": 0}
        if state["turns"]:
            last = state["turns"][-1]
            for side in "ab":
                if last[side]["seq"] is not None:
                    self.seen_seq[side] = last[side]["seq"]
                elif last[side]["status"] in FINAL_STATUSES:
                    # The stored text is whole: a late delta of this answer adds nothing.
                    self.seen_seq[side] = float("inf")
        await self.send_json({"type": "state", **state})

    async def on_new(self, content, *, prompt: str | None = None):
        """Start a battle (with ``prompt``: and its first turn, in one step); returns the turn sent, if any."""
        # The new battle's group is joined before its row exists, so nothing it ever sends is missed.
        public_id = uuid.uuid4()
        previous = self.group
        await self.channel_layer.group_add(group_for(public_id), self.channel_name)
        sent = None
        try:
            if self.named:
                battle = await self._db(battle_start_named, rater=self.user, model_a_id=content.get("model_a"),
                                        model_b_id=content.get("model_b"), public_id=public_id)
            elif prompt is None:
                battle = await self._db(battle_start, rater=self.user, public_id=public_id)
            else:
                sent = await self._db(battle_start_with_turn, rater=self.user, prompt=prompt, public_id=public_id)
                battle = sent.turn.battle
        except BaseException:
            await self.channel_layer.group_discard(group_for(public_id), self.channel_name)
            raise
        if previous:
            await self.channel_layer.group_discard(previous, self.channel_name)
        self.group, self.battle = group_for(public_id), battle
        await self._send_state(generations=[])  # a battle just created has no answers to read yet
        return sent

    async def on_resume(self, content):
        try:
            public_id = uuid.UUID(str(content.get("battle")))
        except ValueError:
            raise BattleError("No such battle.", code="not_found") from None
        battle = await self._db(battle_for_rater, public_id=public_id, rater=self.user, anonymous=not self.named)
        if battle is None:
            raise BattleError("No such battle.", code="not_found")
        await self._follow(battle)
        await self._send_state()

    async def on_prompt(self, content):
        prompt_check(content.get("text"))  # a bad prompt starts no battle
        if self.battle is None:
            if self.named:
                raise BattleError("Pick two models first.", code="pick_models")
            sent = await self.on_new(content, prompt=content["text"])
        else:
            sent = await self._db(turn_send, battle=self.battle, rater=self.user, prompt=content.get("text"))
        self.following = {side: sent.generations.get(side) for side in ("a", "b")}
        self.seen_seq = {"a": 0, "b": 0}
        await self.send_json({"type": "turn", "index": sent.turn.index, "prompt": sent.turn.prompt})

    async def on_stop(self, content):
        stopped = 0
        if self.battle is not None:
            stopped = await self._db(turn_stop, battle=self.battle, rater=self.user)
        if not stopped:
            # A late stop (both answers already in, or nothing sent yet) is harmless: nothing changes.
            await self.send_json({"type": "notice", "message": "Nothing to stop."})

    async def on_regenerate(self, content):
        if self.battle is None:
            raise BattleError("There is nothing to regenerate yet: send a prompt first.", code="no_turn")
        await self._db(turn_regenerate, battle=self.battle, rater=self.user)
        # The "regenerated" frame comes from the battle group (see turn_regenerated), for every tab.

    async def on_vote(self, content):
        if self.battle is None:
            raise BattleError("There is no battle to vote on.", code="no_battle")
        revealed = await self._db(vote_and_reveal, battle=self.battle, rater=self.user, winner=content.get("winner"))
        await self.send_json({"type": "reveal", "winner": content.get("winner"), "sides": {
            r.side: {"name": r.display_name, "organisation": r.organisation, "preset": r.preset,
                     "ttft_ms": r.ttft_ms, "tpot_ms": r.tpot_ms} for r in revealed}})

    async def _is_followed(self, event) -> bool:
        side, generation = event.get("side"), event.get("generation")
        if side not in ("a", "b"):
            return False
        if generation is None or generation == self.following.get(side):
            return True
        # Perhaps a turn this connection has not heard of (sent from another tab): look again.
        if self.battle is not None:
            before = dict(self.following)
            await self._refresh_following()
            if self.following[side] == generation and before[side] != generation:
                self.seen_seq[side] = 0
                return True
        return False

    # Events from the workers, forwarded without anything that could identify a contender
    # (the generation id is only used here, to pick the events of the answers being shown).
    async def generation_delta(self, event):
        if not await self._is_followed(event):
            return
        side = event["side"]
        if event["seq"] <= self.seen_seq.get(side, 0):
            return  # already part of the snapshot this client received
        if event["seq"] > self.seen_seq.get(side, 0) + 1:
            # A batch was lost on the way (the channel layer drops over capacity): the snapshot has
            # all the text up to at least this batch, so send it instead of a gap.
            await self._send_state()
            return
        self.seen_seq[side] = event["seq"]
        await self.send_json({"type": "delta", "side": side, "seq": event["seq"], "text": event["text"]})

    async def generation_done(self, event):
        if await self._is_followed(event):
            await self.send_json({"type": "done", "side": event["side"]})

    async def generation_failed(self, event):
        if await self._is_followed(event):
            await self.send_json({"type": "failed", "side": event["side"], "message": event["message"]})

    async def generation_stopped(self, event):
        if await self._is_followed(event):
            await self.send_json({"type": "stopped", "side": event["side"]})

    async def turn_regenerated(self, event):
        self.following = {side: event["generations"].get(side) for side in ("a", "b")}
        self.seen_seq = {"a": 0, "b": 0}
        await self.send_json({"type": "regenerated", "index": event["index"]})

    async def battle_ready(self, event):
        complete = event.get("generations")
        if complete is not None and complete != self.following:
            await self._refresh_following()
            if complete != self.following:
                return  # those answers were replaced (regenerated) after they finished
        answers = tuple(sorted(self.following.items()))
        if answers == self.ready_sent_for:
            return  # both sides' workers announce it; once is enough
        self.ready_sent_for = answers
        await self.send_json({"type": "ready"})


class RoleRevoked(Exception):
    """The user lost the role this socket was opened with (or the account was disabled)."""


class ContenderPreviewConsumer(JsonFramesConsumer):
    """Admins stream one contender's answer live, to check a registration end to end."""

    async def connect(self):
        user = self.scope.get("user")
        if not user or not user.is_authenticated or not user.is_staff:
            await self.close(code=4403)
            return
        self.group = f"preview.{uuid.uuid4().hex}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        metrics.record_websocket_open(self)

    async def disconnect(self, code):
        metrics.record_websocket_closed(self)
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        if not isinstance(content, dict) or content.get("type") != "preview":
            await self.send_json({"type": "error", "message": 'Expected {"type": "preview", "contender": id, "prompt": text}.'})
            return
        if not await self._still_admin():
            await self.refuse_revoked()
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

    @db_async
    def _contender_exists(self, contender_id: int) -> bool:
        return ArenaModel.objects.filter(pk=contender_id).exists()

    @db_async
    def _still_admin(self) -> bool:
        return roles.user_may(self.scope["user"].pk, {roles.ADMIN})

    async def generation_delta(self, event):
        await self.send_json({"type": "delta", "side": event["side"], "seq": event["seq"], "text": event["text"]})

    async def generation_done(self, event):
        await self.send_json({"type": "done", "side": event["side"], "seq": event["seq"],
                              "finish_reason": event.get("finish_reason"), "output_tokens": event.get("output_tokens")})

    async def generation_failed(self, event):
        await self.send_json({"type": "failed", "side": event["side"], "message": event["message"]})
