"""Run a contender's generation and publish it to a channel-layer group."""
from __future__ import annotations

import logging

from arena.dbpool import release_connection
from arena.models import ArenaModel
from workers.backends import BackendError, Delta, Finish, Message, get_adapter
from workers.concurrency import server_slot
from workers.streaming import DeltaPublisher

log = logging.getLogger(__name__)


def conversation_for(contender: ArenaModel, turns: list[tuple[str, str]]) -> list[Message]:
    """The message history one side sees: its system prompt, then alternating turns."""
    messages = [Message("system", contender.system_prompt)] if contender.system_prompt else []
    messages.extend(Message(role, content) for role, content in turns)
    return messages


def contender_stream_to_group(*, contender_id: int, prompt: str, group: str, side: str) -> None:
    contender = ArenaModel.objects.select_related("server", "preset").get(pk=contender_id)
    server = contender.server
    release_connection()  # nothing more to read: the stream needs no database connection
    publisher = DeltaPublisher(group=group, side=side)
    try:
        with server_slot(server_id=server.pk, limit=server.max_concurrency,
                         lease_s=server.deadline_s + 30, wait_s=server.deadline_s):
            for item in get_adapter(server.kind).stream(
                contender.endpoint(), conversation_for(contender, [("user", prompt)]), contender.preset.params()
            ):
                if isinstance(item, Delta):
                    if publisher.add(item.text):
                        publisher.pace()
                elif isinstance(item, Finish):
                    publisher.finish(finish_reason=item.finish_reason, output_tokens=item.output_tokens)
    except BackendError as exc:
        log.warning("stream for group %s side %s failed: %s", group, side, exc.code or "error")
        publisher.fail(message="The model could not answer.")
