"""The consumer's Kafka side: fetch, cut micro-batches, pause for backpressure, follow rebalances, commit.

Runs on the Kafka thread only, except the rebalance listener, which kafka-python calls on its IO thread:
it fences revoked partitions at once (``Ownership.revoke`` waits for a write in progress) and queues the
event; the Kafka thread then drops the revoked partitions' pending messages and recovers each newly
assigned partition from its files (``files.recover_partition``) before fetching from it.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from .config import StreamConfig
from .files import Ownership, recover_partition
from .step import Segment

log = logging.getLogger("assay.stream")


class _Rebalance(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread: fences revoked partitions, queues events for the Kafka thread."""

    def __init__(self, ownership: Ownership, events: collections.deque) -> None:
        self.ownership, self.events = ownership, events

    def on_partitions_revoked(self, revoked) -> None:
        self.ownership.revoke(revoked)  # waits for a write in progress; then nothing more is written
        self.events.append(("revoked", set(revoked)))

    def on_partitions_assigned(self, assigned) -> None:
        self.events.append(("assigned", set(assigned)))


class Poller:
    """One consumer-group member's view of its partitions: what is fetched, cut, written and committed."""

    def __init__(self, config: StreamConfig, ownership: Ownership) -> None:
        self.config, self.ownership = config, ownership
        self.events: collections.deque = collections.deque()
        self.pending: dict[TopicPartition, list] = {}  # fetched, not yet cut into a batch
        self.pending_since = 0.0
        self.next_start: dict[TopicPartition, int] = {}  # where the next batch of a partition starts
        self.written: dict[TopicPartition, int] = {}  # committed (files on disk) up to here
        self.ends: dict[TopicPartition, int] = {}  # --until-end: stop offsets
        self.at_end: set[TopicPartition] = set()
        self.paused = False  # backpressure
        self.first_message_at: float | None = None
        self.consumer = KafkaConsumer(
            bootstrap_servers=config.bootstrap, group_id=config.group,
            client_id=f"assay-{socket.gethostname()}-{os.getpid()}", enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=config.batch_records,
            session_timeout_ms=int(config.session_timeout_s * 1000),
            heartbeat_interval_ms=int(config.session_timeout_s * 300))

    def start(self) -> None:
        """Join the group; with ``until_end``, take the end offsets of every partition first."""
        self.consumer.subscribe([self.config.topic], listener=_Rebalance(self.ownership, self.events))
        if self.config.until_end:
            self.ends = self._end_offsets()

    def _end_offsets(self) -> dict[TopicPartition, int]:
        topic = self.config.topic
        deadline = time.monotonic() + 30
        while not (partitions := self.consumer.partitions_for_topic(topic)):
            if time.monotonic() > deadline:
                raise KafkaError(f"topic {topic!r} not found on the broker after 30 s; create it or check --topic")
            self.consumer.poll(timeout_ms=200, max_records=1)  # nothing is kept: positions reset on assignment
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = self.consumer.end_offsets(tps)
        log.info("%s: --until-end: stopping at end offsets %s", topic,
                 ", ".join(f"p{tp.partition}={ends[tp]:,}" for tp in tps))
        return ends

    # ---- fetching ---------------------------------------------------------------------------------
    def poll(self) -> None:
        """Fetch up to the room left in the pending batch; apply rebalance events first."""
        room = max(1, self.config.batch_records - self._pending_count())
        polled = self.consumer.poll(timeout_ms=self._poll_timeout_ms(), max_records=room)
        self._apply_rebalance(polled)
        self._add(polled)

    def _pending_count(self) -> int:
        return sum(map(len, self.pending.values()))

    def _poll_timeout_ms(self) -> int:
        if self.paused:
            return 50
        if self.pending:
            left = self.config.batch_seconds - (time.monotonic() - self.pending_since)
            return int(1000 * min(max(left, 0.0), 0.2))
        return 200

    def set_backpressure(self, full: bool) -> None:
        """Pause every owned partition while ``full``; resume (except those at their end) when no longer."""
        owned = list(self.ownership.owned())
        if full and not self.paused:
            self.consumer.pause(*owned)
        elif not full and self.paused:
            self.consumer.resume(*[tp for tp in owned if tp not in self.at_end])
        self.paused = full

    def _apply_rebalance(self, polled: dict) -> None:
        """Handle the listener's events in order: drop revoked work, recover newly assigned partitions."""
        while self.events:
            kind, partitions = self.events.popleft()
            for tp in partitions:
                self.pending.pop(tp, None)
                polled.pop(tp, None)  # re-read from the recovered position
                if kind == "revoked":
                    self.next_start.pop(tp, None)
                    self.written.pop(tp, None)
                    self.at_end.discard(tp)
                else:
                    self._recover(tp)
        if not self.pending:
            self.pending_since = 0.0

    def _recover(self, tp: TopicPartition) -> None:
        committed = self._committed(tp)
        position, removed = recover_partition(self.config.output, self.config.dead_letter_folder, tp.topic,
                                              tp.partition, committed)
        self.consumer.seek(tp, position)
        self.next_start[tp] = self.written[tp] = position
        self.ownership.grant(tp)
        if position != committed:
            self.commit({tp: position})
        # kafka-python keeps a partition's paused flag across a rebalance when the partition stays assigned;
        # a resume while it was revoked skipped it, so set it here from this poller's own state.
        if tp in self.ends and position >= self.ends[tp]:
            self.at_end.add(tp)
        if tp in self.at_end or self.paused:
            self.consumer.pause(tp)
        else:
            self.consumer.resume(tp)
        log.info("%s p%d: assigned; committed offset %s, resuming at %s (after the files already written); "
                 "%d stale file(s) removed", tp.topic, tp.partition, f"{committed:,}", f"{position:,}", len(removed))

    def _committed(self, tp: TopicPartition) -> int:
        committed = self.consumer.committed(tp)
        return self.consumer.beginning_offsets([tp])[tp] if committed is None else committed

    def _add(self, polled: dict) -> None:
        for tp, messages in polled.items():
            if tp in self.ends:
                end = self.ends[tp]
                if messages and messages[-1].offset >= end:
                    messages = [m for m in messages if m.offset < end]
                    self.at_end.add(tp)
                    self.consumer.pause(tp)
            if messages:
                self.first_message_at = self.first_message_at or time.perf_counter()
                if not self.pending:
                    self.pending_since = time.monotonic()
                self.pending.setdefault(tp, []).extend(messages)

    # ---- batches and commits ----------------------------------------------------------------------
    def batch_ready(self) -> bool:
        """Whether the pending messages make a micro-batch: full (``batch_records``) or old (``batch_seconds``)."""
        if not self.pending:
            return False
        full = self._pending_count() >= self.config.batch_records
        return full or time.monotonic() - self.pending_since >= self.config.batch_seconds

    def cut(self) -> list[Segment]:
        """The pending messages of the owned partitions as one micro-batch (one segment per partition)."""
        owned = self.ownership.owned()
        segments = []
        for tp, messages in self.pending.items():
            if tp in owned:
                end = messages[-1].offset + 1
                segments.append(Segment(tp, owned[tp], self.next_start[tp], end, messages))
                self.next_start[tp] = end
        self.pending, self.pending_since = {}, 0.0
        return segments

    def commit_written(self, segments: list[Segment]) -> None:
        """Commit the ends of written segments whose partitions are still owned under the same epoch."""
        self.commit({s.partition: s.end for s in segments if self.ownership.owns(s.partition, s.epoch)})

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets``; a failed commit is logged (recovery resumes after the files anyway)."""
        if not offsets:
            return
        try:
            self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
        except KafkaError as error:  # the files are on disk; recovery resumes after them anyway
            log.warning("%s: offset commit failed (%s); the written files are kept and skipped on restart",
                        self.config.topic, error)
        for tp, offset in offsets.items():
            self.written[tp] = max(self.written.get(tp, 0), offset)

    def lags(self) -> dict[int, int]:
        """Messages not yet written per owned partition (high watermark minus the written position)."""
        lags = {}
        for tp in self.ownership.owned():
            high = self.consumer.highwater(tp)
            if high is not None and tp in self.written:
                lags[tp.partition] = max(high - self.written[tp], 0)
        return lags

    def own_work_done(self) -> bool:
        """Nothing pending and every owned partition cut up to its end offset (``until_end``)."""
        owned = self.ownership.owned()
        return not self.pending and all(self.next_start.get(tp, 0) >= self.ends.get(tp, 0) for tp in owned)

    def group_done(self) -> bool:
        """Whether the group's committed offsets reached the end offsets on every partition."""
        return all(self._committed(tp) >= end for tp, end in self.ends.items())

    def close(self) -> None:
        """Leave the group without committing anything more."""
        self.consumer.close(autocommit=False)
