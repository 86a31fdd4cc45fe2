"""Which series one monitoring cycle reads: the pods its policies select, as PromQL selectors.

Reading every GPU series of the cluster every cycle costs Prometheus, the network and the monitor in proportion
to the whole fleet; a cycle needs only the GPUs of the pods some policy selects. A `Scope` names them by
namespace: a namespace is read whole, or only its selected pods by name. Names cost Prometheus a regular
expression per selector, which grows with the number of names (measured on Prometheus 2.42 at 8,000 GPU series:
a 2,000-name alternation cost about as much as reading all 8,000 series of the namespace), so a namespace is
read by name only while its selected pods are at most `NAME_SHARE` of its running pods, and read whole otherwise.

Each (pod label, namespace label) pair of the metric profile gets its own selector, joined with `or`, so that
whichever labels an exporter and a scrape set-up put the workload in, its series are found. Long alternations
are split into chunks of at most `MAX_CHUNK_BYTES` characters, one query each, so that no query grows past what
proxies and Prometheus accept; the number of chunks per query kind is bounded by `MAX_CHUNKS` (beyond it the
namespaces with the most names are read whole).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from climatik.prom.profiles import PodKey, PodLabels

#: A namespace is read by pod name while its selected pods are at most this share of its running pods.
NAME_SHARE = 0.25
#: The most characters of names (namespaces or pods) in the regular expressions of one query.
MAX_CHUNK_BYTES = 8_000
#: The most queries one metric's names may be split into; beyond it namespaces are read whole.
MAX_CHUNKS = 4
# Characters RE2 treats specially; namespace and pod names use only [a-z0-9.-], but a scope may be built by hand.
_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")


@dataclass(frozen=True)
class Scope:
    """The pods a cycle measures. `everything` reads every series (no narrowing); otherwise `namespaces` maps each
    namespace to the names of its pods to read, or to None to read the namespace whole. An empty scope reads
    nothing."""

    namespaces: Mapping[str, frozenset[str] | None] = field(default_factory=dict)
    everything: bool = False

    @classmethod
    def of(cls, selected: Mapping[str, Collection[str]],
           running: Mapping[str, int] | Callable[[str], int]) -> Scope:
        """The scope for `selected` pod names per namespace, given how many pods run in each namespace (asked
        only of namespaces whose names could fit in the queries): names where they are few enough to be cheaper
        than the whole namespace, whole namespaces elsewhere."""
        count = running.get if isinstance(running, Mapping) else running
        namespaces: dict[str, frozenset[str] | None] = {}
        for namespace, names in selected.items():
            fits = _size(names) <= MAX_CHUNKS * MAX_CHUNK_BYTES
            few = fits and len(names) <= NAME_SHARE * (count(namespace) or 0)
            namespaces[namespace] = frozenset(names) if few else None
        scope = cls(_bounded(namespaces))
        # So many namespaces that even their names do not fit: one query for every series is cheaper.
        return scope if len(_chunks(scope)) <= MAX_CHUNKS else EVERYTHING

    @classmethod
    def of_pods(cls, selected: Mapping[str, Collection[str]]) -> Scope:
        """The scope of exactly `selected` pod names per namespace: by name wherever the names fit the queries."""
        return cls.of(selected, lambda _namespace: sys.maxsize)

    @property
    def empty(self) -> bool:
        return not self.everything and not self.namespaces

    def covers(self, pod: PodKey) -> bool:
        """Whether this scope reads the series of `pod`."""
        if self.everything:
            return True
        if pod.namespace not in self.namespaces:
            return False
        names = self.namespaces[pod.namespace]
        return names is None or pod.name in names


# A chunk is a list of terms, a term (namespaces, pod names or None for the whole namespaces).
_Term = tuple[tuple[str, ...], tuple[str, ...] | None]

#: Every series, as before narrowing (tests, and callers that know no policies).
EVERYTHING = Scope(everything=True)


@dataclass(frozen=True)
class SelectorGroup:
    """The selectors of one query: `selectors()` are meant to be joined with `or`."""

    metric: str
    matchers: str
    pairs: tuple[PodLabels, ...]
    terms: tuple[_Term, ...] = ()
    everything: bool = False

    def selectors(self, extra: str = "") -> list[str]:
        """The selectors, each with the `extra` matchers too (e.g. `instance=~"..."`)."""
        base = ",".join(m for m in (self.matchers.strip().strip(","), extra) if m)
        if self.everything:
            return [selector(self.metric, base)]
        found = []
        for pair in self.pairs:
            for namespaces, names in self.terms:
                terms = [match(pair.namespace, namespaces)]
                if names is not None:
                    terms.append(match(pair.pod, names))
                found.append(selector(self.metric, ",".join(m for m in (base, *terms) if m)))
        return found


def selector_groups(metric: str, matchers: str, pairs: Sequence[PodLabels], scope: Scope) -> list[SelectorGroup]:
    """What reads `scope`'s series of `metric`: one group per query. `matchers` are the profile's own."""
    if scope.everything:
        return [SelectorGroup(metric, matchers, (), everything=True)]
    unique = tuple(dict.fromkeys(pairs))
    return [SelectorGroup(metric, matchers, unique, tuple(chunk)) for chunk in _chunks(scope)]


def selector(metric: str, matchers: str = "") -> str:
    """An instant vector selector: `metric{matchers}`, or the bare metric name without matchers."""
    matchers = matchers.strip().strip(",")
    return f"{metric}{{{matchers}}}" if matchers else metric


def alternation(values: Iterable[str]) -> str:
    """A PromQL string literal body matching exactly `values` as a (fully anchored) regular expression."""
    return "|".join(_escape(value) for value in sorted(values))


def _chunks(scope: Scope) -> list[list[_Term]]:
    whole = sorted(ns for ns, names in scope.namespaces.items() if names is None)
    terms: list[_Term] = [(tuple(part), None) for part in _split(whole)]
    for namespace in sorted(ns for ns, names in scope.namespaces.items() if names is not None):
        terms += [((namespace,), tuple(part)) for part in _split(sorted(scope.namespaces[namespace] or ()))]
    chunks: list[list[_Term]] = []
    size = MAX_CHUNK_BYTES
    for term in terms:
        term_size = _size(term[0]) + _size(term[1] or ())
        if size + term_size > MAX_CHUNK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(term)
        size += term_size
    return chunks


def _bounded(namespaces: dict[str, frozenset[str] | None]) -> dict[str, frozenset[str] | None]:
    """Read whole the namespaces with the most names until the scope fits in `MAX_CHUNKS` queries."""
    named = sorted((ns for ns, names in namespaces.items() if names is not None),
                   key=lambda ns: _size(namespaces[ns] or ()))
    while named and len(_chunks(Scope(namespaces))) > MAX_CHUNKS:
        namespaces[named.pop()] = None
    return namespaces


def _split(values: Sequence[str]) -> list[list[str]]:
    parts: list[list[str]] = []
    size = MAX_CHUNK_BYTES
    for value in values:
        if size + len(value) + 1 > MAX_CHUNK_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(value)
        size += len(value) + 1
    return parts


def _size(values: Iterable[str]) -> int:
    return sum(len(v) + 1 for v in values)


def match(label: str, values: Sequence[str]) -> str:
    """A matcher of `label` against exactly `values`: `=` for one plain value, `=~` for an alternation."""
    if len(values) == 1 and not any(c in _REGEX_SPECIAL for c in values[0]):
        return f'{label}="{values[0]}"'
    return f'{label}=~"{alternation(values)}"'


def _escape(value: str) -> str:
    # A regex escape (backslash before special characters), then a PromQL string escape of the backslashes
    # and quotes.
    regex = "".join("\\" + c if c in _REGEX_SPECIAL else c for c in value)
    return regex.replace("\\", "\\\\").replace('"', '\\"')
