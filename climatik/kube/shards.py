"""Sharding on shard Leases: N replicas of a controller split its keys (policies) by consistent hashing, hand the
keys of a replica that is gone to the others, and never let two replicas act on one key at once.

Each replica (a *member*) holds one coordination.k8s.io/v1 Lease of its own, named after the group and its
identity and labelled with the group. Every `retry_period` it runs a *round*: list the group's Leases, work out the
live members (the *view*), switch to it, and renew its own Lease, which also says which members it has switched
to (its *acknowledgement*). A key belongs to the live member with the highest rendezvous hash of (member, key)
(highest random weight hashing): a member that joins takes keys only from the others, one that leaves gives its
keys only to the others, and every member that sees the same members computes the same owner without talking.

A member acts on a key (`owns`, `hold`) only while all of these hold:

* its Lease is valid on its own clock: `leaseDurationSeconds` after the start of its last successful round (the
  argument of climatik.kube.leader: nobody counts it gone before that, because they count from when they saw its
  last renewal);
* the key hashes to it among the members it sees;
* every other live member it sees has acknowledged it, in this incarnation (a random *epoch* chosen when it
  joins). A member acknowledges a newcomer only once it has switched to a view that includes it and the
  reconciles it had in flight on keys it lost have finished.

Why that means one owner at a time: take members A and B that both act on key K. If each sees the other, they
compute the owner among views that hold both, and a view that differs only by members the other has not yet
seen gives K to A only if no such member outranks A for K; the member that outranks A waits for A's
acknowledgement, which A gives only after it has switched away from K. If A does not see B, A's last list was
read before B's Lease existed, so B (which lists after creating its Lease) sees A and waits for A's
acknowledgement. A member declared gone by the others (its Lease unchanged for its duration on their clocks) has
stopped acting by then; when it comes back it joins with a new epoch and waits for acknowledgements again.
Acknowledgements name the epoch, so an old one never counts for a new incarnation. As with any lease without
fencing, a write sent just before the lease ran out may reach the server after a successor started; the
controllers' writes are compare-and-swap on resourceVersion, so such a write fails or is seen.

A member that stops leaves: it stops acting, waits for its reconciles in flight, and deletes its Lease, so the
others take its keys at their next round. A member that dies is counted gone `leaseDurationSeconds` after the
others last saw its Lease change (about the duration plus a round), and they then delete its Lease, so that a
replica joining later does not wait on it (one that joins before may wait up to a duration for a Lease it
cannot yet tell from a live one). A member that comes back after its Lease was deleted joins again.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Gauge

from climatik.clock import Clock, SystemClock
from climatik.kube.client import KubeClient, ResourceClient
from climatik.kube.errors import AlreadyExistsError, ConflictError, KubeError, NotFoundError
from climatik.kube.leader import LeaseConfig

log = structlog.get_logger(__name__)

GROUP_LABEL = "climatik.io/shard-group"
EPOCH_ANNOTATION = "climatik.io/shard-epoch"
ACKED_ANNOTATION = "climatik.io/shard-acknowledged"

#: How a reconcile asks to act on a key: a context manager that yields whether this replica owns it.
Hold = Callable[[str], contextlib.AbstractContextManager[bool]]
#: How a write asks to act on several keys at once: a context manager that yields those this replica owns.
HoldAll = Callable[[Iterable[str]], contextlib.AbstractContextManager[frozenset[str]]]


@contextlib.contextmanager
def sole_replica(_key: str) -> Iterator[bool]:
    """The `Hold` of an unsharded process: it owns every key."""
    yield True


def rank(member: str, key: str) -> int:
    """The rendezvous weight of `key` on `member` (stable across processes and versions)."""
    digest = hashlib.blake2b(f"{member}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def namespace_of(key: str) -> str:
    """The namespace of a `namespace/name` key (the key itself when it has none): keys that move together."""
    return key.split("/", 1)[0] if "/" in key else key


def owner_of(key: str, members: Iterable[str]) -> str | None:
    """The member `key` belongs to among `members` (None when there are none)."""
    return max(members, key=lambda member: (rank(member, key), member), default=None)


def lease_name(group: str, identity: str) -> str:
    """A DNS-subdomain name for the member's Lease: `<group>-shard-<identity>`, lower case, odd characters as -."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", identity.lower()).strip("-.") or "member"
    name = f"{group}-shard-{cleaned}"
    if len(name) > 253:
        name = f"{name[:236]}-{hashlib.blake2b(identity.encode(), digest_size=8).hexdigest()}"
    return name


@dataclass(frozen=True)
class ShardConfig(LeaseConfig):
    """A member's Lease (named after its group and identity: `of` builds it) and the timings, as a leader's."""

    group: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.group or self.name != lease_name(self.group, self.identity):
            raise ValueError("a shard group is required, and the Lease is named after it and the identity")

    @classmethod
    def of(cls, *, namespace: str, group: str, identity: str, **timings: float) -> ShardConfig:
        return cls(namespace=namespace, name=lease_name(group, identity), identity=identity, group=group, **timings)


@dataclass(frozen=True)
class Peer:
    """Another member's Lease as last listed, and when (our clock) it last changed."""

    identity: str
    epoch: str
    acknowledged: frozenset[str]
    duration: float
    seen_changing: float
    lease: dict[str, Any]

    def live(self, now: float) -> bool:
        return bool(self.identity) and now < self.seen_changing + self.duration


class ShardMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.members = Gauge("climatik_shard_members", "Live members this replica sees in its shard group.",
                             ["group"], registry=registry)
        self.active = Gauge("climatik_shard_active", "1 while this replica may act on the keys it owns.",
                            ["group"], registry=registry)
        self.owned = Gauge("climatik_shard_owned_keys", "Keys this replica owns and acts on.", ["group"],
                           registry=registry)


class ShardMembership:
    """One replica's membership of a shard group. `run()` blocks (rounds until stopped, then leaves); `round()` is
    one round, for tests and loops. `keys` lists every key the controller knows (its cache), so that the
    membership can count and announce the keys it gains. `unit` maps a key to what is hashed to a member (the key
    itself by default; `namespace_of` moves every key of a namespace together)."""

    def __init__(self, client: KubeClient, config: ShardConfig, *, keys: Callable[[], Iterable[str]] = lambda: (),
                 clock: Clock | None = None, metrics: ShardMetrics | None = None,
                 unit: Callable[[str], str] | None = None) -> None:
        self.config = config
        self._unit = unit or (lambda key: key)
        self._leases: ResourceClient = client.leases
        self._keys = keys
        self._clock = clock or SystemClock()
        self._metrics = metrics
        self._lock = threading.Condition()
        self._epoch = ""  # empty until joined
        self._own: dict[str, Any] | None = None  # our Lease as last written
        self._peers: dict[str, Peer] = {}  # by Lease name
        self._view: tuple[str, ...] = ()
        self._acknowledged = False  # every live member we see has acknowledged this epoch
        self._valid_until = -1.0
        self._leaving = False
        self._in_flight: dict[str, int] = {}
        self._owners: dict[str, str | None] = {}
        self._owned: frozenset[str] = frozenset()
        self._gained: list[Callable[[frozenset[str]], None]] = []
        self._lost: list[Callable[[frozenset[str]], None]] = []

    # -- what the controllers ask --------------------------------------------------------------------------

    def owns(self, key: str) -> bool:
        with self._lock:
            return self._owns(key)

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[bool]:
        """Yields whether this replica owns `key`; while it does, a hand-over of the key waits for the block to
        end (wrap each reconcile in it)."""
        with self.hold_all((key,)) as owned:
            yield bool(owned)

    @contextlib.contextmanager
    def hold_all(self, keys: Iterable[str]) -> Iterator[frozenset[str]]:
        """Yields the keys among `keys` this replica owns, held as `hold` holds one (for a write that carries
        several keys' parts, such as a node spec with the entries of several policies)."""
        with self._lock:
            owned = frozenset(key for key in set(keys) if self._owns(key))
            for key in owned:
                self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield owned
        finally:
            if owned:
                with self._lock:
                    for key in owned:
                        left = self._in_flight[key] - 1
                        if left:
                            self._in_flight[key] = left
                        else:
                            del self._in_flight[key]
                    self._lock.notify_all()

    def on_gained(self, listener: Callable[[frozenset[str]], None]) -> None:
        """Call `listener` with the keys this replica takes on after a round (to queue them)."""
        self._gained.append(listener)

    def on_lost(self, listener: Callable[[frozenset[str]], None]) -> None:
        """Call `listener` with the keys this replica gave up in a round (to drop what it exports of them)."""
        self._lost.append(listener)

    def active(self) -> tuple[bool, str]:
        """Whether this replica acts on its keys now, and if not, why (for /readyz)."""
        with self._lock:
            if not self._epoch:
                return False, "shard lease not held"
            if self._clock.now() >= self._valid_until:
                return False, "shard lease not renewed"
            if not self._acknowledged:
                return False, "waiting for the other shards to hand over"
            return True, "ok"

    def members(self) -> tuple[str, ...]:
        with self._lock:
            return self._view

    def owned_keys(self) -> frozenset[str]:
        with self._lock:
            return frozenset(key for key in self._keys() if self._owns(key))

    def _owns(self, key: str) -> bool:
        if self._leaving or not self._acknowledged or self._clock.now() >= self._valid_until:
            return False
        if key not in self._owners:
            self._owners[key] = owner_of(self._unit(key), self._view)
        return self._owners[key] == self.config.identity

    # -- rounds --------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Round every `retry_period` (sooner when a member's Lease is about to run out, so that its keys move
        without waiting for the next round) until `stop`, then leave."""
        while not stop.is_set():
            try:
                self.round()
            except KubeError as exc:
                log.warning("shard_round_failed", group=self.config.group, identity=self.config.identity,
                            error=str(exc))
            except Exception:  # a bug or a malformed object must not end the rounds: the lease would lapse
                log.exception("shard_round_crashed", group=self.config.group, identity=self.config.identity)
            self._clock.wait_event(stop, self.pause())
        self.leave()

    def pause(self) -> float:
        """Seconds until the next round: `retry_period`, or until just after the first live member's Lease runs
        out, if sooner."""
        now = self._clock.now()
        with self._lock:
            ends = [peer.seen_changing + peer.duration - now for peer in self._peers.values() if peer.live(now)]
        return max(0.05, min([self.config.retry_period, *(end + 0.05 for end in ends)]))

    def round(self) -> bool:
        """Join if needed, list the group, switch to the members seen and renew our Lease with the
        acknowledgement. True if the round renewed our Lease."""
        started = self._clock.now()
        with self._lock:
            if self._epoch and started >= self._valid_until:
                log.warning("shard_lease_lapsed", group=self.config.group, identity=self.config.identity)
                self._epoch, self._own, self._acknowledged = "", None, False
        if not self._epoch and not self._join(started):
            return False
        listed = self._leases.list(namespace=self.config.namespace,
                                   label_selector=f"{GROUP_LABEL}={self.config.group}")
        now = self._clock.now()
        own = self._observe(listed, now)
        if own is None:  # our Lease is gone or was taken over: join again next round, as a new incarnation
            with self._lock:
                self._epoch, self._own, self._acknowledged = "", None, False
            return False
        view, acknowledged = self._switch(now)
        drained = self._drain(started + self.config.renew_deadline)
        renewed = self._renew(own, view if drained else None)
        before = self._owned
        with self._lock:
            if renewed:
                self._valid_until = started + self.config.lease_seconds
                self._acknowledged = acknowledged
            owned = frozenset(key for key in self._keys() if self._owns(key))
            self._owned = owned
        self._collect(now)
        self._report(owned)
        for listeners, keys in ((self._gained, owned - before), (self._lost, before - owned)):
            if keys:
                for listener in listeners:
                    listener(keys)
        return renewed

    def leave(self) -> None:
        """Stop acting, wait for reconciles in flight (up to the renew deadline) and delete our Lease."""
        with self._lock:
            self._leaving = True
            self._lock.wait_for(lambda: not self._in_flight, timeout=self.config.renew_deadline)
            own, self._own, self._epoch = self._own, None, ""
        if own is None:
            return
        metadata = own.get("metadata") or {}
        try:
            self._leases.client.delete(self._leases.resource, self.config.name,
                                       namespace=self.config.namespace, uid=str(metadata.get("uid") or ""))
            log.info("shard_left", group=self.config.group, identity=self.config.identity)
        except KubeError as exc:
            log.warning("shard_leave_failed", group=self.config.group, error=str(exc))
        self._report(frozenset())

    # -- steps of a round ----------------------------------------------------------------------------------

    def _join(self, now: float) -> bool:
        """Create or take our Lease under a new epoch (nothing acknowledged yet)."""
        epoch = secrets.token_hex(8)
        name, namespace = self.config.name, self.config.namespace
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace, "labels": {GROUP_LABEL: self.config.group},
                         "annotations": {EPOCH_ANNOTATION: epoch, ACKED_ANNOTATION: ""}},
            "spec": self._spec(),
        }
        timeout = self.config.renew_deadline
        try:
            try:
                written = self._leases.create(body, timeout=timeout)
            except AlreadyExistsError:  # ours, from an earlier incarnation: take it under the new epoch
                current = self._leases.get(name, namespace=namespace, timeout=timeout)
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                written = self._leases.replace(body, timeout=timeout)
        except KubeError as exc:
            log.warning("shard_join_failed", group=self.config.group, identity=self.config.identity, error=str(exc))
            return False
        with self._lock:
            self._epoch, self._own, self._acknowledged = epoch, written, False
            self._valid_until = now + self.config.lease_seconds
        log.info("shard_joined", group=self.config.group, identity=self.config.identity, epoch=epoch)
        return True

    def _observe(self, listed: list[dict[str, Any]], now: float) -> dict[str, Any] | None:
        """Take in the listed Leases; ours (None if it is no longer ours)."""
        own = None
        peers: dict[str, Peer] = {}
        for lease in listed:
            metadata = lease.get("metadata") or {}
            name = str(metadata.get("name") or "")
            annotations = metadata.get("annotations") or {}
            spec = lease.get("spec") or {}
            holder = str(spec.get("holderIdentity") or "")
            epoch = str(annotations.get(EPOCH_ANNOTATION) or "")
            if name == self.config.name:
                if holder == self.config.identity and epoch == self._epoch:
                    own = lease
                continue
            before = self._peers.get(name)
            changed = before is None or before.lease.get("spec") != spec or before.epoch != epoch
            acked = frozenset(filter(None, str(annotations.get(ACKED_ANNOTATION) or "").split(",")))
            peers[name] = Peer(identity=holder, epoch=epoch, acknowledged=acked,
                               duration=float(spec.get("leaseDurationSeconds") or self.config.lease_seconds),
                               seen_changing=now if changed or before is None else before.seen_changing,
                               lease=lease)
        with self._lock:
            self._peers = peers
        return own

    def _switch(self, now: float) -> tuple[tuple[str, ...], bool]:
        """Switch to the live members seen (new reconciles follow it at once); whether all of them acknowledge
        this incarnation."""
        live = [peer for peer in self._peers.values() if peer.live(now)]
        view = tuple(sorted({self.config.identity, *(peer.identity for peer in live)}))
        me = f"{self.config.identity}/{self._epoch}"
        acknowledged = all(me in peer.acknowledged for peer in live if peer.identity != self.config.identity)
        with self._lock:
            if view != self._view:
                log.info("shard_members_changed", group=self.config.group, identity=self.config.identity,
                         members=list(view), was=list(self._view))
                self._view, self._owners = view, {}
            if not acknowledged:
                self._acknowledged = False
        return tuple(f"{peer.identity}/{peer.epoch}" for peer in live), acknowledged

    def _drain(self, deadline: float) -> bool:
        """Wait until no reconcile in flight holds a key we no longer own; False if the deadline came first."""
        with self._lock:
            return self._lock.wait_for(lambda: not any(self._owners.get(k, owner_of(self._unit(k), self._view))
                                                       != self.config.identity for k in self._in_flight),
                                       timeout=max(0.0, deadline - self._clock.now()))

    def _renew(self, own: dict[str, Any], acknowledged: tuple[str, ...] | None) -> bool:
        """Renew our Lease; with the members acknowledged, unless their hand-over has not drained yet."""
        metadata = own.setdefault("metadata", {})
        annotations = metadata.setdefault("annotations", {})
        if acknowledged is not None:
            annotations[ACKED_ANNOTATION] = ",".join(sorted(acknowledged))
        own["spec"] = self._spec(own.get("spec") or {})
        try:
            written = self._leases.replace(own, timeout=self.config.renew_deadline)
        except (ConflictError, NotFoundError) as exc:
            log.warning("shard_lease_changed", group=self.config.group, identity=self.config.identity,
                        error=str(exc))
            with self._lock:
                self._epoch, self._own, self._acknowledged = "", None, False
            return False
        except KubeError as exc:
            log.warning("shard_renew_failed", group=self.config.group, identity=self.config.identity, error=str(exc))
            return False
        with self._lock:
            self._own = written
        return True

    def _collect(self, now: float) -> None:
        """Delete the Leases of members counted gone (only if still unchanged: one that renewed in between keeps
        its Lease), so that a replica joining later does not wait out their duration again."""
        for name, peer in self._peers.items():
            if peer.live(now):
                continue
            metadata = peer.lease.get("metadata") or {}
            with contextlib.suppress(KubeError):
                self._leases.client.delete(self._leases.resource, name, namespace=self.config.namespace,
                                           resource_version=str(metadata.get("resourceVersion") or ""))
                log.info("shard_lease_collected", group=self.config.group, lease=name, holder=peer.identity)

    def _spec(self, before: dict[str, Any] | None = None) -> dict[str, Any]:
        now = self._clock.wall().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        before = before or {}
        return {"holderIdentity": self.config.identity, "leaseDurationSeconds": self.config.lease_seconds,
                "acquireTime": before.get("acquireTime", now), "renewTime": now,
                "leaseTransitions": int(before.get("leaseTransitions") or 0)}

    def _report(self, owned: frozenset[str]) -> None:
        if self._metrics is None:
            return
        group = self.config.group
        self._metrics.members.labels(group).set(len(self._view))
        self._metrics.active.labels(group).set(1 if self.active()[0] else 0)
        self._metrics.owned.labels(group).set(len(owned))
