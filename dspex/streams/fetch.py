"""Taking what a confluent-kafka consumer has, without waiting for a full batch.

``Consumer.consume(n, timeout)`` returns only once it holds ``n`` messages or ``timeout`` passed,
so a reader asking for up to 1,000 records while they trickle in waits the whole timeout every
time: a job's final status or last scores were seen up to a poll interval late.
:func:`consume_ready` returns as soon as one message is there, with whatever else is already queued
behind it. Used by the readers that are not group members (the client's, the compacted-topic
reader); the consumer runtime keeps ``consume()`` (see ``ConsumerRuntime._fetch``).
"""

from __future__ import annotations

from confluent_kafka import Consumer, Message

__all__ = ["consume_ready"]


def consume_ready(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Up to ``max_messages``: the first within ``timeout`` s, the rest only if already queued."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    if max_messages <= 1:
        return [first]
    return [first, *consumer.consume(max_messages - 1, 0)]
