"""Loading credentials: a kubeconfig file or the pod's service account, into a `KubeClient`."""

from __future__ import annotations

import os

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from climatik.kube.client import KubeClient
from climatik.kube.errors import KubeError


def connect(
    kubeconfig: str | os.PathLike[str] | None = None,
    *,
    context: str | None = None,
    in_cluster: bool | None = None,
    timeout: float = 30.0,
    connect_timeout: float = 5.0,
    pool_size: int = 32,
) -> KubeClient:
    """A client from a kubeconfig file, or from the pod's service account.

    With `in_cluster=None` the service account is used when no kubeconfig is named and the process runs in a
    pod (KUBERNETES_SERVICE_HOST is set); otherwise the kubeconfig (default: $KUBECONFIG, ~/.kube/config).
    """
    configuration = k8s_client.Configuration()
    if in_cluster is None:
        in_cluster = kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    try:
        if in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            path = os.fspath(kubeconfig) if kubeconfig is not None else None
            k8s_config.load_kube_config(
                config_file=path, context=context, client_configuration=configuration, persist_config=False
            )
    except ConfigException as exc:
        raise KubeError(f"cannot load Kubernetes credentials: {exc}") from exc
    # Retry only failed connects: re-sending a request the server may have seen is the caller's decision.
    configuration.retries = urllib3.Retry(total=3, connect=3, read=0, status=0, other=0, redirect=0)
    configuration.connection_pool_maxsize = pool_size
    api_client = k8s_client.ApiClient(configuration)
    return KubeClient(api_client, timeout=timeout, connect_timeout=connect_timeout)
