"""The power-domain tree as the split sees it: each PowerDomain object resolved to its nodes (by its selector over
the Node objects' labels), its budget in force (schedule and ramp, continued from what its status last said), and
its place under its parent; and what is wrong with it, for its Valid condition.

Nothing wrong with one domain stops the others: a domain in a parent loop, or with a selector that cannot be
read, is left out of the split (its nodes keep the budgets of the domains they are also in); a missing parent
makes a root; a child whose budget is above its parent's, or whose nodes are not all in its parent, and a node in
two domains that are not ancestor and descendant, are reported and kept under every budget they are in, which
can only be safer. A schedule that cannot be read leaves the spec's budget in force.

Pure: the recommender resolves the tree on every pass, and the simulated-time benchmark does the same.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from climatik.api import parse_time
from climatik.api.domain import PowerDomain, effective_budget, schedule_problems, scheduled_budget
from climatik.api.policy import LabelSelector
from climatik.recommend.domains import Domain

#: Nodes named in a problem message, at most.
_SHOWN = 5


@dataclass(frozen=True)
class Resolved:
    """One domain: what the split uses (None when it is left out), its budget in force and the one the schedule
    asks for, its nodes, and its problems (empty: Valid)."""

    name: str
    domain: Domain | None
    budget: float
    target: float
    nodes: frozenset[str]
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tree:
    """Every domain, resolved, by name; `split` holds those the split uses; `leaves` the deepest used domain of
    every node in one (ties go to the lower name)."""

    domains: dict[str, Resolved] = field(default_factory=dict)
    leaves: dict[str, str] = field(default_factory=dict)

    @property
    def split(self) -> list[Domain]:
        return [resolved.domain for resolved in self.domains.values() if resolved.domain is not None]

    def leaf_of(self, node: str) -> str | None:
        """The deepest domain (of those used) a node is in."""
        return self.leaves.get(node)


def _leaves(domains: Mapping[str, Resolved]) -> dict[str, str]:
    depth = {name: _depth(name, domains) for name in domains}
    leaves: dict[str, str] = {}
    for name in sorted(domains, key=lambda n: (-depth[n], n)):
        resolved = domains[name]
        if resolved.domain is None:
            continue
        for node in resolved.nodes:
            leaves.setdefault(node, name)
    return leaves


def _depth(name: str, domains: Mapping[str, Resolved]) -> int:
    seen = {name}
    resolved = domains.get(name)
    parent = resolved.domain.parent if resolved is not None and resolved.domain is not None else None
    while parent is not None and parent not in seen and parent in domains:
        seen.add(parent)
        above = domains[parent].domain
        parent = above.parent if above is not None else None
    return len(seen) - 1


def resolve(domains: Sequence[PowerDomain], node_labels: Mapping[str, Mapping[str, str]], now: dt.datetime) -> Tree:
    """Resolve every domain against the nodes (name -> labels) at `now`."""
    by_name = {domain.name: domain for domain in domains}
    problems: dict[str, list[str]] = {name: [] for name in by_name}
    nodes: dict[str, frozenset[str]] = {}
    index: dict[tuple[str, str], set[str]] = {}
    for node, labels in node_labels.items():
        for pair in labels.items():
            index.setdefault(pair, set()).add(node)
    for name, domain in by_name.items():
        selector = domain.spec.node_selector
        bad = selector.problems()
        if bad:
            problems[name] += [f"nodeSelector: {problem}" for problem in bad]
            nodes[name] = frozenset()
            continue
        nodes[name] = _selected(selector, node_labels, index)
    looped = _loops(by_name)
    for name in looped:
        problems[name].append(f"its parent chain loops ({_chain(name, by_name)}); it keeps only its own budget "
                              "and is left out of the tree until the loop is broken")
    parents = {name: _parent(domain, by_name, looped, problems[name]) for name, domain in by_name.items()}
    budgets = {name: _budget(domain, now, problems[name]) for name, domain in by_name.items()}
    for name, parent in parents.items():
        if parent is None:
            continue
        if by_name[name].spec.budget > by_name[parent].spec.budget:
            problems[name].append(f"its budget of {by_name[name].spec.budget} W is above its parent {parent}'s "
                                  f"{by_name[parent].spec.budget} W; it gets at most what the parent grants")
        outside = sorted(nodes[name] - nodes[parent])
        if outside:
            problems[name].append(f"nodes not in its parent {parent}: {_names(outside)}")
    _overlaps(nodes, parents, problems)
    resolved = {}
    for name in sorted(by_name):
        used = name not in looped and not any(p.startswith("nodeSelector:") for p in problems[name])
        budget, target = budgets[name]
        split = Domain(name=name, budget=budget, nodes=nodes[name], parent=parents[name]) if used else None
        resolved[name] = Resolved(name=name, domain=split, budget=budget, target=target, nodes=nodes[name],
                                  problems=tuple(problems[name]))
    return Tree(domains=resolved, leaves=_leaves(resolved))


def _selected(selector: LabelSelector, node_labels: Mapping[str, Mapping[str, str]],
              index: Mapping[tuple[str, str], set[str]]) -> frozenset[str]:
    """The nodes a selector chooses: through the label index for matchLabels, then each candidate checked."""
    candidates: set[str] | None = None
    for pair in (selector.match_labels or {}).items():
        found = index.get(pair, set())
        candidates = set(found) if candidates is None else candidates & found
    pool = node_labels.keys() if candidates is None else candidates
    return frozenset(node for node in pool if selector.matches(node_labels[node]))


def _budget(domain: PowerDomain, now: dt.datetime, problems: list[str]) -> tuple[float, float]:
    """The budget in force and the scheduled one; a schedule that cannot be read leaves the spec's budget."""
    spec = domain.spec
    bad = schedule_problems(spec)
    if bad:
        problems += [f"schedule: {problem}; the budget of {spec.budget} W applies" for problem in bad]
        return float(spec.budget), float(spec.budget)
    status = domain.status
    previous = None
    if status is not None and status.budget is not None and status.budget_since:
        try:
            previous = (float(status.budget), parse_time(status.budget_since))
        except ValueError:
            previous = None
    return effective_budget(spec, previous, now), float(scheduled_budget(spec, now))


def _loops(by_name: Mapping[str, PowerDomain]) -> set[str]:
    """The domains on a parent loop."""
    looped: set[str] = set()
    for start in by_name:
        path: list[str] = []
        name: str | None = start
        while name is not None and name in by_name and name not in path:
            path.append(name)
            name = by_name[name].spec.parent
        if name is not None and name in path:
            looped |= set(path[path.index(name):])
    return looped


def _chain(start: str, by_name: Mapping[str, PowerDomain]) -> str:
    path = [start]
    name = by_name[start].spec.parent
    while name is not None and name != start and name in by_name and name not in path:
        path.append(name)
        name = by_name[name].spec.parent
    return " -> ".join([*path, start])


def _parent(domain: PowerDomain, by_name: Mapping[str, PowerDomain], looped: set[str],
            problems: list[str]) -> str | None:
    parent = domain.spec.parent
    if parent is None or domain.name in looped:
        return None
    if parent not in by_name:
        problems.append(f"parent {parent} does not exist; it stands as a root until it does")
        return None
    return parent


def _overlaps(nodes: Mapping[str, frozenset[str]], parents: Mapping[str, str | None],
              problems: dict[str, list[str]]) -> None:
    """Report nodes in two domains of which neither is an ancestor of the other."""
    ancestors = {name: _ancestors(name, parents) for name in nodes}
    names = sorted(nodes)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if first in ancestors[second] or second in ancestors[first]:
                continue
            shared = sorted(nodes[first] & nodes[second])
            if shared:
                problems[first].append(f"nodes also in {second}, which is neither its parent nor its child: "
                                       f"{_names(shared)}; they are kept under both budgets")
                problems[second].append(f"nodes also in {first}, which is neither its parent nor its child: "
                                        f"{_names(shared)}; they are kept under both budgets")


def _ancestors(name: str, parents: Mapping[str, str | None]) -> set[str]:
    found: set[str] = set()
    parent = parents.get(name)
    while parent is not None and parent not in found:
        found.add(parent)
        parent = parents.get(parent)
    return found


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown if len(names) <= _SHOWN else f"{shown} and {len(names) - _SHOWN} more"
