"""Messages that carry library events into the Textual app."""

from __future__ import annotations

from textual.message import Message

from mlx_distill.events import Event


class EngineEvent(Message):
    """One event from the chat engine thread (posted with the thread-safe ``post_message``)."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event
