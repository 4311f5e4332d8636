"""The production channel layer's one-call group send, against a real Redis, beside the parent's."""
from __future__ import annotations

import asyncio
import logging
import os
import uuid

import pytest
from channels_redis.core import RedisChannelLayer

from arena.channel_layer import ArenaRedisChannelLayer

MESSAGE = {"type": "generation.delta", "side": "a", "seq": 7, "text": "héllo <b>wörld</b> ✓", "generation": 12,
           "raw": b"\x00\xffbytes", "nested": {"k": [1, 2.5, None, True]}, "long": "x" * 70000}


def redis_url() -> str:
    url = os.environ.get("REDIS_URL", "")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("REDIS_URL is not set: this test needs a real Redis (tests/run.py starts one)")
        pytest.skip("no Redis (run through tests/run.py)")
    return url


def layers(cls, **config):
    prefix = f"test-layer-{uuid.uuid4().hex[:8]}"
    return cls(hosts=[{"address": redis_url()}], prefix=prefix, **config)


async def stored(layer, key: str) -> list[bytes]:
    connection = layer.connection(0)
    return [member for member in await connection.zrange(layer.prefix + key, 0, -1)]


def test_one_call_group_send_stores_what_the_parent_stores_and_every_member_receives_it():
    async def scenario(cls):
        layer = layers(cls)
        local_a, local_b = await layer.new_channel(), await layer.new_channel()  # one process: one Redis key
        plain = "plain-consumer"
        for channel in (local_a, local_b, plain):
            await layer.group_add("battle.1", channel)
        await layer.group_send("battle.1", MESSAGE)
        raw_local = await stored(layer, layer.non_local_name(local_a))
        raw_plain = await stored(layer, plain)
        received = [await asyncio.wait_for(layer.receive(channel), 5) for channel in (local_a, local_b, plain)]
        await layer.flush()
        await layer.close_pools()
        return layer, (local_a, local_b), raw_local, raw_plain, received

    ours, (a, b), our_local, our_plain, our_received = asyncio.run(scenario(ArenaRedisChannelLayer))
    parent, (pa, pb), parent_local, parent_plain, parent_received = asyncio.run(scenario(RedisChannelLayer))
    assert ours.one_call_group_send()
    assert our_received == parent_received == [MESSAGE, MESSAGE, MESSAGE]
    # One stored message per key (the two local channels share theirs), the same bytes as the parent's
    # after the random prefix, once the channel names (random per layer) are put side by side.
    assert len(our_local) == len(our_plain) == len(parent_local) == len(parent_plain) == 1
    length = ours._serializer.random_prefix_length

    def normalised(raw: bytes, names: tuple[str, str], prefix: str) -> bytes:
        body = raw[length:]
        for index, name in enumerate(names):
            body = body.replace(name.encode(), f"channel-{index}".encode())
        return body.replace(prefix.encode(), b"PREFIX")

    assert normalised(our_local[0], (a, b), ours.client_prefix) == normalised(parent_local[0], (pa, pb),
                                                                              parent.client_prefix)
    assert our_plain[0][length:] == parent_plain[0][length:]


def test_a_full_channel_refuses_the_message_and_says_so_in_the_parents_words(caplog):
    async def scenario():
        layer = layers(ArenaRedisChannelLayer, capacity=2)
        channel = await layer.new_channel()
        await layer.group_add("battle.2", channel)
        with caplog.at_level(logging.INFO, logger="arena.channel_layer"):
            for seq in (1, 2, 3):
                await layer.group_send("battle.2", {"type": "generation.delta", "seq": seq})
        got = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(2)]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 0.3)
        await layer.flush()
        await layer.close_pools()
        return got

    got = asyncio.run(scenario())
    assert [m["seq"] for m in got] == [1, 2]
    assert "1 of 1 channels over capacity in group battle.2" in caplog.text


def test_a_member_past_the_group_expiry_is_dropped_and_gets_nothing():
    async def scenario():
        layer = layers(ArenaRedisChannelLayer, group_expiry=60)
        stale, fresh = "stale-consumer", "fresh-consumer"
        await layer.group_add("battle.3", fresh)
        connection = layer.connection(0)
        await connection.zadd(layer._group_key("battle.3"), {stale: 1})  # joined long ago, never refreshed
        await layer.group_send("battle.3", {"type": "generation.done", "seq": 4})
        members = await connection.zrange(layer._group_key("battle.3"), 0, -1)
        got = await asyncio.wait_for(layer.receive(fresh), 5)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(stale), 0.3)
        await layer.flush()
        await layer.close_pools()
        return members, got

    members, got = asyncio.run(scenario())
    assert members == [b"fresh-consumer"]
    assert got == {"type": "generation.done", "seq": 4}


def test_sends_go_on_after_redis_forgets_its_scripts():
    async def scenario():
        layer = layers(ArenaRedisChannelLayer)
        channel = await layer.new_channel()
        await layer.group_add("battle.4", channel)
        await layer.group_send("battle.4", {"type": "generation.delta", "seq": 1})
        await layer.connection(0).script_flush()  # as after a Redis restart
        await layer.group_send("battle.4", {"type": "generation.delta", "seq": 2})
        got = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(2)]
        await layer.flush()
        await layer.close_pools()
        return got

    assert [m["seq"] for m in asyncio.run(scenario())] == [1, 2]


def test_configurations_the_one_call_layout_does_not_cover_use_the_parents_group_send():
    async def scenario(**config):
        layer = layers(ArenaRedisChannelLayer, **config)
        channel = await layer.new_channel()
        await layer.group_add("battle.5", channel)
        await layer.group_send("battle.5", {"type": "generation.delta", "seq": 9})
        got = await asyncio.wait_for(layer.receive(channel), 5)
        await layer.flush()
        await layer.close_pools()
        return layer.one_call_group_send(), got

    for config in ({"symmetric_encryption_keys": ["a-secret-key"]}, {"channel_capacity": {"other.*": 10}}):
        one_call, got = asyncio.run(scenario(**config))
        assert not one_call
        assert got == {"type": "generation.delta", "seq": 9}


def test_many_sends_in_one_call_arrive_in_order_each_after_its_record():
    async def scenario():
        layer = layers(ArenaRedisChannelLayer)
        channels = [await layer.new_channel() for _ in range(2)]
        for n, channel in enumerate(channels):
            await layer.group_add(f"battle.m{n}", channel)
        connection = layer.connection(0)
        sends = []
        for seq in (1, 2, 3):
            for n in range(2):
                record = (f"{layer.prefix}:s{n}", f"{layer.prefix}:t{n}", seq, f"<{n}.{seq}>", 60)
                sends.append((f"battle.m{n}", {"type": "generation.delta", "seq": seq}, record if n == 0 else None))
        await layer.group_send_many(sends)
        got = {n: [await asyncio.wait_for(layer.receive(c), 5) for _ in range(3)] for n, c in enumerate(channels)}
        recorded = (await connection.get(f"{layer.prefix}:s0"), await connection.get(f"{layer.prefix}:t0"),
                    await connection.ttl(f"{layer.prefix}:t0"), await connection.exists(f"{layer.prefix}:t1"))
        await connection.delete(f"{layer.prefix}:s0", f"{layer.prefix}:t0")
        await layer.flush()
        await layer.close_pools()
        return got, recorded

    got, recorded = asyncio.run(scenario())
    assert {n: [m["seq"] for m in messages] for n, messages in got.items()} == {0: [1, 2, 3], 1: [1, 2, 3]}
    assert recorded[:2] == (b"3", b"<0.1><0.2><0.3>") and 0 < recorded[2] <= 60 and recorded[3] == 0


def test_sending_in_one_call_needs_the_one_call_layout():
    layer = layers(ArenaRedisChannelLayer, symmetric_encryption_keys=["k" * 32])
    assert not layer.one_call_group_send()
    with pytest.raises(RuntimeError, match="one-call layout"):
        asyncio.run(layer.group_send_many([("battle.6", {"type": "generation.delta"}, None)]))


async def command_calls(layer, *names: str) -> dict[str, int]:
    stats = await layer.connection(0).info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names}


def test_waiting_messages_are_taken_in_one_call_and_received_in_order():
    async def scenario():
        layer = layers(ArenaRedisChannelLayer)
        channels = [await layer.new_channel() for _ in range(2)]
        for channel in channels:
            await layer.group_add("battle.r", channel)
        for seq in range(1, 61):
            await layer.group_send("battle.r", {"type": "generation.delta", "seq": seq})
        before = await command_calls(layer, "zpopmin", "bzpopmin")
        got = [[(await asyncio.wait_for(layer.receive(c), 5))["seq"] for _ in range(60)] for c in channels]
        after = await command_calls(layer, "zpopmin", "bzpopmin")
        await layer.flush()
        await layer.close_pools()
        return got, {name: after[name] - before[name] for name in after}

    got, calls = asyncio.run(scenario())
    assert got == [list(range(1, 61))] * 2
    # Both channels share their process's key: 60 stored messages, one take, no blocking pop.
    assert calls == {"zpopmin": 1, "bzpopmin": 0}


def test_a_receiver_cancelled_while_messages_are_taken_loses_none_and_gets_none_twice():
    async def scenario():
        layer = layers(ArenaRedisChannelLayer)
        channel = await layer.new_channel()
        await layer.group_add("battle.c", channel)
        for seq in (1, 2, 3):
            await layer.group_send("battle.c", {"type": "generation.delta", "seq": seq})
        connection = layer.connection(0)
        real = connection.zpopmin

        async def slow_zpopmin(*args, **kwargs):
            await asyncio.sleep(0.2)
            return await real(*args, **kwargs)

        connection.zpopmin = slow_zpopmin
        waiting = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        got = [(await asyncio.wait_for(layer.receive(channel), 5))["seq"] for _ in range(3)]
        await layer.group_send("battle.c", {"type": "generation.delta", "seq": 4})
        got.append((await asyncio.wait_for(layer.receive(channel), 5))["seq"])
        leftover = await connection.zcard(layer.prefix + layer.non_local_name(channel))
        await layer.flush()
        await layer.close_pools()
        return got, leftover

    got, leftover = asyncio.run(scenario())
    assert got == [1, 2, 3, 4] and leftover == 0


def test_a_receive_left_waiting_by_an_ended_event_loop_does_not_hold_up_the_next_loop():
    layer = layers(ArenaRedisChannelLayer)

    async def abandoned() -> None:
        channel = await layer.new_channel()
        await layer.group_add("battle.l", channel)
        asyncio.ensure_future(layer.receive(channel))  # blocks: nothing waits
        await asyncio.sleep(0.1)
        # asyncio.run cancels the receive as this loop ends; the consumer never left its group

    asyncio.run(abandoned())

    async def next_loop():
        channel = await layer.new_channel()  # the next consumer of this process: the same Redis key
        await layer.group_add("battle.l2", channel)
        await layer.group_send("battle.l2", {"type": "generation.delta", "seq": 1})
        got = await asyncio.wait_for(layer.receive(channel), 10)
        await layer.flush()
        await layer.close_pools()
        return got

    assert asyncio.run(next_loop()) == {"type": "generation.delta", "seq": 1}
