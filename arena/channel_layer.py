"""The Redis channel layer of the production topology, with a group send in one round trip.

``channels_redis.core.RedisChannelLayer.group_send`` costs four Redis round trips per message
(expire members, read members, expire each member's old messages, then add the message). Every
batch of every streamed answer is one group send, so this class does the same work in one Lua
script: the members are read, mapped to their Redis keys (all channels of one process share a key)
and sent to, with the same expiry, capacity and ``__asgi_channel__`` addressing, atomically.

The message is packed once in Python with ``__asgi_channel__`` as its last entry; the script
appends that entry's value (the list of the key's member channels, packed by Redis's own msgpack
library), so what lands on each key is byte for byte what the parent class would have stored
(apart from the random prefix every message gets).

A streamed batch is also recorded for reconnecting clients (``workers.partials``: the text so
far and its sequence number). ``group_send_many`` does that in the same script, before the
message is added: one round trip per batch instead of two, and no client can see a batch that is
not recorded yet. It also sends several messages (to any groups, each with or without a record)
in one call: a worker process coalesces the batches of all its streams that are due at the same
moment (see ``workers.streaming``).

Receiving: the parent takes one message per four round trips (restore the backup queue, block
for one message, back it up, clear the backup), and every WebSocket of a web process shares one
Redis key, so under load many messages wait there. A receive here first takes up to
``RECEIVE_BATCH`` waiting messages with one ZPOPMIN and holds them in memory, in order; only when
none waits does the parent's blocking receive run. The take runs as a task of its own that the
receiver only waits for (shielded): a receiver cancelled meanwhile loses nothing, the messages
land in memory for the next receive. No lock is held across calls, so a consumer left behind by
an event loop that ended cannot hold up the next loop's receives.

Only the configuration that layout covers takes this path: one Redis host, msgpack without
encryption, no per-channel capacities. Anything else falls back to the parent's group send.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque

import msgpack
from channels_redis.core import RedisChannelLayer
from channels_redis.serializers import MsgPackSerializer

logger = logging.getLogger(__name__)

RECEIVE_BATCH = 200  # most waiting messages one receive takes from Redis

# ARGV[1..5]: key prefix, now, oldest member time kept, message expiry (s), capacity per key. Then
# per message: its head (random prefix + packed map up to the last value) and "1" when a record
# follows (its seq, text, expiry in s) or "0". KEYS per message: the group's key, then with a
# record its sequence-number and text keys. Returns over-capacity keys and members per message.
# A channel's queue is ordered by score (the send time): the messages of one call get increasing
# scores, SCORE_STEP apart, and the next call starts after the last of them (see group_send_many).
SCORE_STEP = 1e-6
_GROUP_SEND = """
local prefix = ARGV[1]
local now, members_since = tonumber(ARGV[2]), tonumber(ARGV[3])
local expiry, capacity = tonumber(ARGV[4]), tonumber(ARGV[5])
local result = {}
local k, a = 1, 6
local score = now
while a <= #ARGV do
  local head, recorded, group_key = ARGV[a], ARGV[a + 1] == '1', KEYS[k]
  k, a = k + 1, a + 2
  if recorded then
    redis.call('SET', KEYS[k], ARGV[a], 'EX', ARGV[a + 2])
    redis.call('APPEND', KEYS[k + 1], ARGV[a + 1])
    redis.call('EXPIRE', KEYS[k + 1], ARGV[a + 2])
    k, a = k + 2, a + 3
  end
  redis.call('ZREMRANGEBYSCORE', group_key, 0, members_since)
  local members = redis.call('ZRANGE', group_key, 0, -1)
  local channels_of, keys = {}, {}
  for _, channel in ipairs(members) do
    local bang = string.find(channel, '!', 1, true)
    local key = prefix .. (bang and string.sub(channel, 1, bang) or channel)
    if channels_of[key] == nil then
      channels_of[key] = {}
      keys[#keys + 1] = key
    end
    local list = channels_of[key]
    list[#list + 1] = channel
  end
  local over_capacity = 0
  for _, key in ipairs(keys) do
    redis.call('ZREMRANGEBYSCORE', key, 0, math.floor(now) - expiry)
    if redis.call('ZCOUNT', key, '-inf', '+inf') < capacity then
      redis.call('ZADD', key, score, head .. cmsgpack.pack(channels_of[key]))
      redis.call('EXPIRE', key, expiry)
    else
      over_capacity = over_capacity + 1
    end
  end
  result[#result + 1] = over_capacity
  result[#result + 1] = #members
  score = score + %s
end
return result
""" % repr(SCORE_STEP)


class ArenaRedisChannelLayer(RedisChannelLayer):
    """``RedisChannelLayer`` whose ``group_send`` is one atomic Redis call (see the module)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._script = None
        self._next_score = 0.0
        self._held: dict[str, deque] = {}  # channel key -> (channel, message) taken from Redis, in order
        self._taking: dict[str, asyncio.Task] = {}  # channel key -> the take under way

    def one_call_group_send(self) -> bool:
        """Whether this configuration takes the one-call path (otherwise the parent's is used)."""
        serializer = self._serializer
        return (self.ring_size == 1 and isinstance(serializer, MsgPackSerializer) and serializer.crypter is None
                and not self.channel_capacity)

    def pack_head(self, message: dict) -> bytes:
        """The stored form of ``message`` up to the value of its last entry, ``__asgi_channel__``."""
        body = {key: value for key, value in message.items() if key != "__asgi_channel__"}
        body["__asgi_channel__"] = None
        packed = msgpack.packb(body, use_bin_type=True)
        assert packed.endswith(b"\xc0")  # None packs to this one byte, the very last
        length = self._serializer.random_prefix_length
        prefix = random.getrandbits(8 * length).to_bytes(length, "big") if length > 0 else b""
        return prefix + packed[:-1]

    async def group_send(self, group, message):
        if not self.one_call_group_send():
            return await super().group_send(group, message)
        await self.group_send_many([(group, message, None)])

    async def group_send_many(self, sends: list[tuple[str, dict, tuple | None]]) -> None:
        """Each (group, message, record) in order, all in one atomic Redis call.

        ``record``: None, or (seq key, text key, seq, text, expiry s) stored on the layer's Redis
        before its message is added: the seq key set to seq, text appended to the text key, both
        expiring. Only where ``one_call_group_send()``.
        """
        if not self.one_call_group_send():
            raise RuntimeError("sending in one call needs the one-call layout (see one_call_group_send)")
        keys, args = [], []
        for group, message, record in sends:
            assert self.require_valid_group_name(group), "Group name not valid"
            keys.append(self._group_key(group))
            args += [self.pack_head(message), "0" if record is None else "1"]
            if record is not None:
                seq_key, text_key, seq, text, ttl = record
                keys += [seq_key, text_key]
                args += [seq, text, ttl]
        if not sends:
            return
        connection = self.connection(0)
        if self._script is None:
            self._script = connection.register_script(_GROUP_SEND)
        # The next call's messages come after this one's, even on a clock that has not moved on.
        now = max(time.time(), self._next_score)
        self._next_score = now + len(sends) * SCORE_STEP
        counts = await self._script(keys=keys, args=[self.prefix, now, int(now) - self.group_expiry, int(self.expiry),
                                                     self.capacity, *args], client=connection)
        for (group, _message, _record), over_capacity, members in zip(sends, counts[::2], counts[1::2]):
            if over_capacity > 0:
                # The parent's wording: operators (and the bench) look for it in the logs.
                logger.info("%s of %s channels over capacity in group %s", over_capacity, members, group)

    async def receive_single(self, channel):
        if self.ring_size != 1:
            return await super().receive_single(channel)
        assert self.require_valid_channel_name(channel, receive=True), "Channel name invalid"
        channel_key = self.prefix + channel
        if not self._held.get(channel_key):
            loop = asyncio.get_running_loop()
            task = self._taking.get(channel_key)
            if task is None or task.get_loop() is not loop:
                task = self._taking[channel_key] = loop.create_task(self._take(channel, channel_key))
            await asyncio.shield(task)
        held = self._held.get(channel_key)
        if held:
            return held.popleft()
        return await super().receive_single(channel)  # nothing waiting: block for the next one

    async def _take(self, channel: str, channel_key: str) -> None:
        """Move up to RECEIVE_BATCH waiting messages of ``channel_key`` into memory, in order."""
        try:
            popped = await self.connection(0).zpopmin(channel_key, RECEIVE_BATCH)
            if popped:
                held = self._held.setdefault(channel_key, deque())
                for content, _score in popped:
                    message = self.deserialize(content)
                    held.append((message.pop("__asgi_channel__", channel), message))
        finally:
            if self._taking.get(channel_key) is asyncio.current_task():
                del self._taking[channel_key]

    async def flush(self):
        self._held.clear()
        self._taking.clear()
        await super().flush()
