"""Partitions coming and going for a consumer runtime, and the commits of those it owns.

A layer of :class:`~dspex.streams.consumer.ConsumerRuntime` (see :mod:`dspex.streams.consumer_base`):
the rebalance callbacks run on the consumer's thread and hand their work to the event loop;
revoked partitions' handlers get ``drain_timeout`` to finish before their offsets are committed,
lost ones none; a member stuck out of its group is replaced by a new one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from dspex.errors import KafkaError
from dspex.observability import metrics
from dspex.streams.consumer_base import CANCEL_GRACE_S, RuntimeBase, show_partitions
from dspex.streams.flow import TopicPartitionKey
from dspex.streams.serde import message_position

__all__ = ["RebalancingRuntime"]

# One logger for the whole runtime, whichever of its modules writes the line.
logger = logging.getLogger("dspex.streams.consumer")


class RebalancingRuntime(RuntimeBase):
    """A consumer runtime's group membership: assignment, revocation, rejoining, commits."""

    # ----------------------------------------------------------------- commits

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval)
            await self._commit(asynchronous=True)

    async def _commit(self, *, asynchronous: bool) -> None:
        offsets = self._tracker.pending_commits()
        if not offsets:
            return
        if self._on_commit is not None:
            self._on_commit(dict(offsets))
        self._tracker.mark_committed(offsets)
        await self._kafka(self._commit_owned, offsets, asynchronous)

    def _commit_owned(self, offsets: Mapping[TopicPartitionKey, int], asynchronous: bool) -> None:
        # Filtered here, on the consumer's thread, so that a partition revoked after the offsets
        # were computed is never committed by its former owner.
        owned = [TopicPartition(t, p, off) for (t, p), off in offsets.items() if (t, p) in self._assigned]
        if owned and self._consumer is not None:
            self._commit_partitions(owned, asynchronous)

    def _commit_partitions(self, partitions: list[TopicPartition], asynchronous: bool) -> None:
        if self._consumer is None:
            return
        try:
            if asynchronous:
                self._consumer.commit(offsets=partitions, asynchronous=True)
            else:
                self._consumer.commit(offsets=partitions, asynchronous=False)
            self.stats.commits += 1
        except KafkaException as exc:
            self.stats.commit_failures += 1
            logger.warning(
                "commit of %s failed in group %s: %s", show_partitions(partitions), self.group_id, exc
            )

    # ----------------------------------------------------------------- rebalances

    def _open(self) -> None:
        try:
            self._generation += 1
            statistics = functools.partial(self._statistics, self._generation)
            self._consumer = Consumer({**self._consumer_config, "stats_cb": statistics})
            self._consumer.subscribe(
                self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
        except KafkaException as exc:
            raise KafkaError(f"could not start a consumer for {self.topics}: {exc}") from exc

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self._consumer:
            return  # a replaced consumer closing (see _rejoin); confluent-kafka (un)assigns for it
        # Assign explicitly (cooperative protocol) so that the new partitions can be paused
        # before a single message of theirs is fetched.
        consumer.incremental_assign(partitions)
        tps = {(tp.topic, tp.partition) for tp in partitions}
        if self._on_loop(self._adopt(tps), default=False) and partitions:
            consumer.pause(partitions)
            self._paused |= tps
            self._report_partitions()
        elif partitions:
            # librdkafka keeps a partition's pause across revoke/lost and a later assign to the
            # same member, while _release forgot it: a partition paused when the group lost it
            # (e.g. a broker restart under load) would come back paused for good.
            consumer.resume(partitions)
        logger.info("group %s: assigned %s", self.group_id, show_partitions(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self._consumer:
            return
        tps = {(tp.topic, tp.partition) for tp in partitions}
        offsets = self._on_loop(self._release(tps, lost=False), default={})
        if offsets:
            self._commit_partitions([TopicPartition(t, p, off) for (t, p), off in offsets.items()], False)
        logger.info("group %s: revoked %s", self.group_id, show_partitions(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self._consumer:
            return
        tps = {(tp.topic, tp.partition) for tp in partitions}
        self._on_loop(self._release(tps, lost=True), default={})
        logger.warning(
            "group %s: lost %s without a chance to commit", self.group_id, show_partitions(partitions)
        )

    async def _finish_or_cancel(self, tasks: list[asyncio.Task[None]], timeout: float) -> None:
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            self.stats.cancelled += len(pending)
            logger.warning("cancelled %s handlers still running after %.1f s", len(pending), timeout)
            await asyncio.wait(pending, timeout=CANCEL_GRACE_S)

    async def _release(self, tps: set[TopicPartitionKey], *, lost: bool) -> dict[TopicPartitionKey, int]:
        """Give up ``tps``: drain their handlers (unless lost), return what may be committed."""
        self.stats.rebalances += 1
        self._assigned -= tps
        self._paused -= tps
        self._backlog.drop(lambda message: message_position(message)[:2] in tps)
        tasks = [task for task, tp in self._running.items() if tp in tps]
        await self._finish_or_cancel(tasks, 0 if lost else self.drain_timeout)
        offsets = (
            {} if lost else {tp: off for tp in tps if (off := self._tracker.committable(tp)) is not None}
        )
        if offsets and self._on_commit is not None:
            self._on_commit(dict(offsets))
        self._tracker.forget(tps)
        metrics.consumer_rebalanced(self.group_id)
        self._report_partitions()
        return offsets

    async def _adopt(self, tps: set[TopicPartitionKey]) -> bool:
        """Take ``tps`` on; returns whether they must be paused right away."""
        self.stats.rebalances += 1
        self._assigned |= tps
        if self._assignment_seen is not None and tps:
            self._assignment_seen.set()
        metrics.consumer_rebalanced(self.group_id)
        self._report_partitions()
        return self._watermarks.paused or self._held

    async def _rejoin(self) -> None:
        # Whatever the stuck member held is given up as lost (uncommitted work is read again by the
        # next owner); the old consumer is closed on a thread of its own, since a stuck one may
        # block in close(), and its late callbacks are ignored (they name a consumer not ours).
        self._rejoin_requested = False
        self.stats.rejoins += 1
        if self._assigned:
            await self._release(set(self._assigned), lost=True)
        stale = await self._kafka(self._detach)
        if stale is not None:
            closer = threading.Thread(
                target=_close_quietly, args=(stale, self.group_id), name="dspex-consumer-close", daemon=True
            )
            closer.start()
        await self._kafka(self._open)
        logger.warning("group %s: joined again as a new member", self.group_id)


def _close_quietly(consumer: Consumer, group_id: str) -> None:
    try:
        consumer.close()
    except (KafkaException, RuntimeError) as exc:
        logger.warning("closing the replaced consumer of group %s failed: %s", group_id, exc)
