"""What one streamed batch costs on the channel layer: ours vs channels_redis's own, same Redis, same run.

Starts a throwaway Redis (the test runner's class). For each layer (channels_redis.core.RedisChannelLayer,
then arena.channel_layer.ArenaRedisChannelLayer, alternating over --rounds), it adds --members
process-local channels (one web process's WebSockets) to --groups battle groups, sends --messages
delta-sized events round-robin over the groups, one at a time as a worker's publisher does, then
receives them all as the web process does. Prints per phase: messages/s, this process's CPU per
message, Redis commands per message (INFO commandstats), and checks every message arrived once, in
order per channel.

    .venv/bin/python bench/channel_layer.py [--messages 5000] [--groups 50] [--rounds 2]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

from _topology import exit_status, say  # noqa: E402

TEXT = "a batch of a few tokens, " * 3


async def commands(layer) -> int:
    stats = await layer.connection(0).info("commandstats")
    return sum(int(value.get("calls", 0)) for key, value in stats.items() if key.startswith("cmdstat_")
               and key not in ("cmdstat_info",))


async def one_round(cls, url: str, messages: int, groups: int) -> dict:
    layer = cls(hosts=[{"address": url}], prefix=f"bench-{uuid.uuid4().hex[:8]}", capacity=messages + 10)
    channels = [await layer.new_channel() for _ in range(groups)]
    for index, channel in enumerate(channels):
        await layer.group_add(f"battle.{index}", channel)
    result = {}
    before, cpu, wall = await commands(layer), time.process_time(), time.perf_counter()
    for seq in range(messages):
        index = seq % groups
        await layer.group_send(f"battle.{index}", {"type": "generation.delta", "side": "a", "seq": seq // groups + 1,
                                                   "text": TEXT, "generation": index})
    result["send"] = (messages / (time.perf_counter() - wall), (time.process_time() - cpu) / messages * 1e6,
                      (await commands(layer) - before - 1) / messages)
    got: dict[int, list[int]] = {index: [] for index in range(groups)}

    async def drain(index: int, channel: str) -> None:
        while len(got[index]) < messages // groups + (1 if index < messages % groups else 0):
            got[index].append((await layer.receive(channel))["seq"])

    before, cpu, wall = await commands(layer), time.process_time(), time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(drain(i, c) for i, c in enumerate(channels))), 120)
    result["receive"] = (messages / (time.perf_counter() - wall), (time.process_time() - cpu) / messages * 1e6,
                         (await commands(layer) - before - 1) / messages)
    result["ok"] = all(seqs == list(range(1, len(seqs) + 1)) for seqs in got.values()) and \
        sum(len(seqs) for seqs in got.values()) == messages
    await layer.flush()
    await layer.close_pools()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--groups", type=int, default=50, help="battle groups, one local channel each")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.messages < args.groups or args.groups < 1 or args.rounds < 1:
        parser.error("--messages must be at least --groups, and both --groups and --rounds at least 1")

    from channels_redis.core import RedisChannelLayer

    from arena.channel_layer import ArenaRedisChannelLayer
    from tests.run import Redis

    import tempfile

    redis = Redis(Path(tempfile.mkdtemp(prefix="arena-bench-layer-")))
    url = redis.start()
    if not url:
        say("Redis is required (see the warning above)")
        return 2
    layers = [("channels_redis RedisChannelLayer", RedisChannelLayer), ("ArenaRedisChannelLayer", ArenaRedisChannelLayer)]
    runs: dict[str, list[dict]] = {label: [] for label, _ in layers}
    try:
        for _round in range(args.rounds):
            for label, cls in layers:
                runs[label].append(asyncio.run(one_round(cls, url, args.messages, args.groups)))
    finally:
        redis.stop()
    print(f"Channel layer, one process, loopback Redis: {args.messages} delta events over {args.groups} groups "
          f"(one local channel each), sent one at a time, then received; median of {args.rounds} round(s).")
    header = f"{'layer':<34}{'phase':<9}{'msg/s':>9}{'CPU us/msg':>12}{'Redis cmds/msg':>16}"
    print(header)
    print("-" * len(header))
    ok = True
    for label, _cls in layers:
        for phase in ("send", "receive"):
            rows = [run[phase] for run in runs[label]]
            rate, cpu, cmds = (statistics.median(values) for values in zip(*rows))
            print(f"{label:<34}{phase:<9}{rate:>9.0f}{cpu:>12.0f}{cmds:>16.2f}")
        ok = ok and all(run["ok"] for run in runs[label])
    print("CPU: this process (the sender's or receiver's Python), per message; Redis cmds: every command Redis ran, "
          "those inside a script included.")
    print(f"Every message received once, in order per channel: {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(exit_status(main))
