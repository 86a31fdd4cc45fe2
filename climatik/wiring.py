"""Pieces every subcommand wires the same way: API client, metrics registry, informers, controllers, leases."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from climatik.clock import Clock
from climatik.kube.client import KubeClient
from climatik.kube.config import connect
from climatik.kube.informer import Informer
from climatik.kube.leader import LeaderElector, LeaseConfig
from climatik.kube.listwatch import ClientListerWatcher
from climatik.kube.metrics import RuntimeMetrics
from climatik.kube.resources import Resource
from climatik.kube.runner import Controller, Reconcile
from climatik.kube.store import IndexFunc
from climatik.kube.workqueue import WorkQueue


@dataclass(frozen=True)
class CommonSettings:
    """Settings shared by all subcommands."""

    kubeconfig: str | None = None
    metrics_port: int = 8080
    metrics_host: str = "0.0.0.0"
    grace_period: float = 25.0
    leader_elect: bool = False
    leader_election_namespace: str = "climatik-system"
    leader_election_identity: str = field(default_factory=lambda: f"{socket.gethostname()}_{os.getpid()}")
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class Wiring:
    """One process's client, registry and runtime metrics, and builders that hand them to each part."""

    def __init__(self, settings: CommonSettings, *, clock: Clock, client: KubeClient | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.client = client or connect(settings.kubeconfig)
        self.registry = CollectorRegistry()
        self.metrics = RuntimeMetrics(self.registry)

    def informer(self, resource: Resource, *, name: str, field_selector: str = "", label_selector: str = "",
                 indexers: Mapping[str, IndexFunc] | None = None, resync_period: float = 0.0) -> Informer:
        lister_watcher = ClientListerWatcher(self.client, resource, field_selector=field_selector,
                                             label_selector=label_selector)
        return Informer(lister_watcher, name=name, clock=self.clock, indexers=indexers,
                        resync_period=resync_period, metrics=self.metrics)

    def queue(self, name: str) -> WorkQueue:
        return WorkQueue(name=name, clock=self.clock, metrics=self.metrics)

    def controller(self, name: str, reconcile: Reconcile, queue: WorkQueue, *, workers: int = 1) -> Controller:
        return Controller(name=name, reconcile=reconcile, queue=queue, workers=workers, clock=self.clock,
                          metrics=self.metrics)

    def elector(self, lease_name: str) -> LeaderElector | None:
        """The lease contender when leader election is on, else None."""
        s = self.settings
        if not s.leader_elect:
            return None
        config = LeaseConfig(namespace=s.leader_election_namespace, name=lease_name,
                             identity=s.leader_election_identity, lease_duration=s.lease_duration,
                             renew_deadline=s.renew_deadline, retry_period=s.retry_period)
        return LeaderElector(self.client, config, clock=self.clock, metrics=self.metrics)
