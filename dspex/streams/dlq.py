"""Setting a consumed message aside: the DeadLetter record and why it was written.

A dead letter carries the original key, value and headers byte for byte, where the message was
(topic, partition, offset), the error, and a reason code: the decoder's verdict for a
SchemaError, the handler's own for a PoisonMessageError, ``security_policy`` for a
SecurityPolicyError, and ``handler_error`` for any other exception.

    >>> await dead_letter(producer, "dspex.dlq", message, exc, worker_id="w1")  # doctest: +SKIP
"""

from __future__ import annotations

import logging

from confluent_kafka import Message

from dspex.errors import KafkaError, PoisonMessageError, SchemaError, SecurityPolicyError
from dspex.schemas import (
    DLQ_REASON_HANDLER_ERROR,
    DLQ_REASON_SECURITY_POLICY,
    DeadLetter,
    schema_error_reason,
)
from dspex.streams.producer import AsyncProducer
from dspex.streams.serde import message_position, record_headers, to_record

__all__ = ["dead_letter", "reason_for"]

logger = logging.getLogger(__name__)


def reason_for(exc: BaseException) -> str:
    """The DeadLetter reason code for an exception raised while handling a message."""
    if isinstance(exc, SchemaError):
        return schema_error_reason(exc)
    if isinstance(exc, PoisonMessageError):
        return exc.reason
    if isinstance(exc, SecurityPolicyError):
        return DLQ_REASON_SECURITY_POLICY
    return DLQ_REASON_HANDLER_ERROR


async def dead_letter(
    producer: AsyncProducer,
    dlq_topic: str,
    message: Message,
    exc: BaseException,
    *,
    worker_id: str,
    group: str | None = None,
) -> DeadLetter:
    """Write ``message`` to ``dlq_topic`` (keyed by its original key); returns once acknowledged.

    Raises KafkaError when the DLQ write fails: the caller must then not count the message done.
    """
    topic, partition, offset = message_position(message)
    where = f"{topic}[{partition}]@{offset}"
    reason = reason_for(exc)
    if reason == DLQ_REASON_HANDLER_ERROR:
        logger.error("handler failed on %s; dead-lettering it", where, exc_info=exc)
    else:
        logger.warning("dead-lettering %s (%s): %s", where, reason, exc)
    letter = DeadLetter.build(
        topic=topic,
        partition=partition,
        offset=offset,
        key=message.key(),
        value=message.value(),
        headers=record_headers(message),
        error=exc,
        reason=reason,
        worker_id=worker_id,
        consumer_group=group,
    )
    try:
        await producer.produce_record(dlq_topic, to_record(letter, role="dlq"))
    except KafkaError as dlq_exc:
        raise KafkaError(
            f"could not dead-letter {where} to {dlq_topic}: {dlq_exc}", topic=dlq_topic
        ) from dlq_exc
    return letter
