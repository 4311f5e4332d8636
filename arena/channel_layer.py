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
far and its sequence number). ``group_send_recorded`` does that in the same script, before the
message is added: one round trip per batch instead of two, and no client can see a batch that is
not recorded yet.

Receiving is the parent's, unchanged.

Only the configuration that layout covers takes this path: one Redis host, msgpack without
encryption, no per-channel capacities. Anything else falls back to the parent's group send.
"""
from __future__ import annotations

import logging
import random
import time

import msgpack
from channels_redis.core import RedisChannelLayer
from channels_redis.serializers import MsgPackSerializer

logger = logging.getLogger(__name__)

# KEYS[1]: the group's key; KEYS[2], KEYS[3] (optional): a record's sequence-number and text keys.
# ARGV: message head (random prefix + packed map up to the last value), key prefix, now, oldest
# member time kept, message expiry (s), capacity per key; with a record: its seq, text, expiry (s).
_GROUP_SEND = """
local head, prefix = ARGV[1], ARGV[2]
local now, members_since = tonumber(ARGV[3]), tonumber(ARGV[4])
local expiry, capacity = tonumber(ARGV[5]), tonumber(ARGV[6])
if #KEYS == 3 then
  redis.call('SET', KEYS[2], ARGV[7], 'EX', ARGV[9])
  redis.call('APPEND', KEYS[3], ARGV[8])
  redis.call('EXPIRE', KEYS[3], ARGV[9])
end
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


class ArenaRedisChannelLayer(RedisChannelLayer):
    """``RedisChannelLayer`` whose ``group_send`` is one atomic Redis call (see the module)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._script = None

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
        await self._one_call_send(group, message, [], [])

    async def group_send_recorded(self, group, message, *, record: tuple[str, str, int, str, int]):
        """``group_send`` that first stores ``record`` = (seq key, text key, seq, text, expiry s) on
        the layer's Redis: the seq key set to seq, text appended to the text key, both expiring,
        in the same atomic call. Only where ``one_call_group_send()``."""
        if not self.one_call_group_send():
            raise RuntimeError("a recorded group send needs the one-call layout (see one_call_group_send)")
        seq_key, text_key, seq, text, ttl = record
        await self._one_call_send(group, message, [seq_key, text_key], [seq, text, ttl])

    async def _one_call_send(self, group, message, record_keys: list, record_args: list) -> None:
        assert self.require_valid_group_name(group), "Group name not valid"
        connection = self.connection(0)
        if self._script is None:
            self._script = connection.register_script(_GROUP_SEND)
        now = time.time()
        over_capacity, members = await self._script(
            keys=[self._group_key(group), *record_keys],
            args=[self.pack_head(message), self.prefix, now, int(now) - self.group_expiry, int(self.expiry),
                  self.capacity, *record_args],
            client=connection,
        )
        if over_capacity > 0:
            # The parent's wording: operators (and the bench) look for it in the logs.
            logger.info("%s of %s channels over capacity in group %s", over_capacity, members, group)
