"""Prefix-cache affinity for Ray Serve: a `RequestRouter` that sends a request to the replica
that already served the longest prefix of its prompt (whose engine holds that prefix's KV in
its prefix cache), unless that replica's queue is longer than the shortest by more than
`imbalanced_threshold`; then, and for prompts no replica has seen, the least loaded replica.

What a router knows of a prompt is the routing key the ingress passes as the request's first
argument: the prompt text, or a chat's message contents joined. The key is cut into blocks of
`block_chars` characters and each block is named by a hash chained over the blocks before it, as
the engine names its KV blocks, so "the longest served prefix" is a walk down the chain until a
block no replica served. The table keeps the `max_blocks` most recently used blocks. Each router
(one per ingress replica) keeps its own table: with one ingress, as `everett.ray` runs it, the
table sees every request.

Queue figures are Ray's own: the queue lengths the router probes and caches (each replica's
ongoing requests). KV figures are the replica's: its engine's counters, which it reports through
`record_routing_stats` (every 10 s by default); among equally queued replicas the one with the
emptier KV cache comes first.
"""

import random
from collections import OrderedDict
from typing import List, Optional

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica


def block_hashes(key: str, block_chars: int) -> List[int]:
    """The chained hashes of the whole blocks of `key`."""
    hashes, h = [], 0
    for start in range(0, len(key) - block_chars + 1, block_chars):
        h = hash((h, key[start:start + block_chars]))
        hashes.append(h)
    return hashes


def kv_used(replica: RunningReplica) -> float:
    """The share of the replica's KV cache in use, from its last routing stats (0 unknown)."""
    try:
        stats = replica.routing_stats or {}
        return stats.get("used_blocks", 0) / max(stats.get("capacity_blocks", 0), 1)
    except (AttributeError, TypeError):  # stats not reported yet, or of another shape
        return 0.0


class PrefixAffinityRouter(RequestRouter):
    """Longest served prefix first, the least loaded replica otherwise (see the module)."""

    def initialize_state(self, block_chars: int = 256, imbalanced_threshold: int = 32,
                         max_blocks: int = 100_000):
        self._block_chars = block_chars
        self._imbalanced_threshold = imbalanced_threshold
        self._max_blocks = max_blocks
        # block hash -> the replica that last served a prompt containing that block
        self._owner: "OrderedDict[int, ReplicaID]" = OrderedDict()

    def _key(self, pending_request: Optional[PendingRequest]) -> str:
        if pending_request is None or not pending_request.args:
            return ""
        key = pending_request.args[0]
        return key if isinstance(key, str) else ""

    def _affine(self, hashes: List[int], live: set) -> Optional[ReplicaID]:
        """The replica that served the longest prefix among `hashes`, if it is still live."""
        owner = None
        for h in hashes:
            r = self._owner.get(h)
            if r is None:
                break
            owner = r
        return owner if owner in live else None

    async def _queue_lens(self, replicas: List[RunningReplica]) -> dict:
        lens, unknown = {}, []
        for r in replicas:
            q = self._replica_queue_len_cache.get(r.replica_id)
            if q is None:
                unknown.append(r)
            else:
                lens[r.replica_id] = q
        if unknown:
            for r, q in await self._probe_queue_lens(unknown, 0):
                if q is not None:
                    lens[r.replica_id] = q
        return lens

    async def choose_replicas(
        self,
        candidate_replicas: List[RunningReplica],
        pending_request: Optional[PendingRequest] = None,
    ) -> List[List[RunningReplica]]:
        if not candidate_replicas:
            return []
        lens = await self._queue_lens(candidate_replicas)
        # Shuffled first, so that equally loaded replicas share the unrelated requests.
        shuffled = random.sample(candidate_replicas, len(candidate_replicas))
        by_load = sorted(shuffled, key=lambda r: (lens.get(r.replica_id, 1 << 30), kv_used(r)))
        hashes = block_hashes(self._key(pending_request), self._block_chars)
        owner = self._affine(hashes, {r.replica_id for r in candidate_replicas})
        if owner is not None:
            shortest = lens.get(by_load[0].replica_id, 0)
            if lens.get(owner, 1 << 30) - shortest <= self._imbalanced_threshold:
                first = [r for r in candidate_replicas if r.replica_id == owner]
                rest = [r for r in by_load if r.replica_id != owner]
                return [first, rest] if rest else [first]
        return [by_load]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID,
                          result) -> None:
        for h in block_hashes(self._key(pending_request), self._block_chars):
            self._owner[h] = replica_id
            self._owner.move_to_end(h)
        while len(self._owner) > self._max_blocks:
            self._owner.popitem(last=False)

    def on_replica_actor_died(self, replica_id: ReplicaID):
        super().on_replica_actor_died(replica_id)
        for h in [h for h, r in self._owner.items() if r == replica_id]:
            del self._owner[h]
