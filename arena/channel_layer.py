"""The Redis channel layer of the production topology: a group send in one round trip, batched receives.

``channels_redis.core.RedisChannelLayer.group_send`` costs four Redis round trips per message
(expire members, read members, expire each member's old messages, then add the message). Every
batch of every streamed answer is one group send, so this class does the same work in one Lua
script: the members are read, mapped to their Redis keys (all channels of one process share a key)
and sent to, with the same expiry, capacity and ``__asgi_channel__`` addressing, atomically.

The message is packed once in Python with ``__asgi_channel__`` as its last entry; the script
appends that entry's value (the list of the key's member channels, packed by Redis's own msgpack
library), so what lands on each key is byte for byte what the parent class would have stored
(apart from the random prefix every message gets).

Receiving: the parent takes one message per four round trips (restore the backup queue, block
for one message, back it up, clear the backup). All of one web process's WebSockets share one
Redis key, so under load many messages wait there: a receive here moves up to
``RECEIVE_BATCH`` of them to the backup queue and returns them in one script, keeps them in
order in memory, and clears the backup once they are held. When nothing waits, the parent's
blocking receive runs as before. Cancellation is as safe as the parent's: a batch taken but
not yet held stays in the backup queue and is restored by the next receive.

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

# KEYS[1]: the group's key. ARGV: message head (random prefix + packed map up to the last value),
# key prefix, now, oldest member time kept, message expiry (s), capacity per key.
_GROUP_SEND = """
local head, prefix = ARGV[1], ARGV[2]
local now, members_since = tonumber(ARGV[3]), tonumber(ARGV[4])
local expiry, capacity = tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, members_since)
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
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
    redis.call('ZADD', key, now, head .. cmsgpack.pack(channels_of[key]))
    redis.call('EXPIRE', key, expiry)
  else
    over_capacity = over_capacity + 1
  end
end
return {over_capacity, #members}
"""


# KEYS[1]: the channel's queue, KEYS[2]: its backup queue. ARGV[1]: most messages to take.
_RECEIVE_BATCH = """
local backed_up = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = #backed_up, 1, -2 do
  redis.call('ZADD', KEYS[1], backed_up[i], backed_up[i - 1])
end
redis.call('DEL', KEYS[2])
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[1]))
local members = {}
for i = 1, #popped, 2 do
  redis.call('ZADD', KEYS[2], popped[i + 1], popped[i])
  members[#members + 1] = popped[i]
end
return members
"""

RECEIVE_BATCH = 200


class ArenaRedisChannelLayer(RedisChannelLayer):
    """``RedisChannelLayer`` with a one-call ``group_send`` and batched receives (see the module)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._script = None
        self._receive_script = None
        self._held: dict[str, deque] = {}  # channel key -> (channel, message) taken from Redis, in order

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
        assert self.require_valid_group_name(group), "Group name not valid"
        connection = self.connection(0)
        if self._script is None:
            self._script = connection.register_script(_GROUP_SEND)
        now = time.time()
        over_capacity, members = await self._script(
            keys=[self._group_key(group)],
            args=[self.pack_head(message), self.prefix, now, int(now) - self.group_expiry, int(self.expiry),
                  self.capacity],
            client=connection,
        )
        if over_capacity > 0:
            # The parent's wording: operators (and the bench) look for it in the logs.
            logger.info("%s of %s channels over capacity in group %s", over_capacity, members, group)

    async def receive_single(self, channel):
        if self.ring_size != 1:
            return await super().receive_single(channel)
        assert self.require_valid_channel_name(channel, receive=True), "Channel name invalid"
        channel_key = self.prefix + channel
        held = self._held.get(channel_key)
        if held:
            return held.popleft()
        if await self._take_batch(channel, channel_key):
            return self._held[channel_key].popleft()
        return await super().receive_single(channel)  # nothing waiting: block for the next one

    async def _take_batch(self, channel: str, channel_key: str) -> bool:
        """Move up to RECEIVE_BATCH waiting messages into memory; False when none waited."""
        connection = self.connection(0)
        if self._receive_script is None:
            self._receive_script = connection.register_script(_RECEIVE_BATCH)
        backup = self._backup_channel_name(channel_key)
        await self.receive_clean_locks.acquire(channel_key)
        try:
            contents = await self._receive_script(keys=[channel_key, backup], args=[RECEIVE_BATCH],
                                                  client=connection)
        except BaseException:
            self.receive_clean_locks.release(channel_key)  # what was taken is still in the backup queue
            raise
        if not contents:
            self.receive_clean_locks.release(channel_key)
            return False
        held = self._held.setdefault(channel_key, deque())
        for content in contents:  # no await from here to the cleaner: taken and held at once
            message = self.deserialize(content)
            target = message.pop("__asgi_channel__", channel)
            held.append((target, message))
        cleaner = asyncio.ensure_future(connection.delete(backup))
        self.receive_cleaners.append(cleaner)

        def cleaned(task) -> None:
            self.receive_cleaners.remove(task)
            self.receive_clean_locks.release(channel_key)

        cleaner.add_done_callback(cleaned)
        return True

    async def flush(self):
        self._held.clear()
        await super().flush()
