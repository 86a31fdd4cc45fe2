"""Capping turns on at the threshold and off only under the release band, so noise does not flap it."""

from __future__ import annotations

from climatik.api import LabelSelector, PolicySpec
from climatik.monitor.decision import decide

SPEC = PolicySpec(power_cap_limit=1000, selector=LabelSelector(), capping_threshold=90)


def run(powers: list[float | None], spec: PolicySpec = SPEC) -> list[bool]:
    required, out = False, []
    for power in powers:
        required = decide(spec, power, required).required
        out.append(required)
    return out


def test_turns_on_at_the_threshold() -> None:
    assert run([899.9, 900.0]) == [False, True]


def test_stays_on_inside_the_release_band_and_releases_below_it() -> None:
    assert run([950, 880, 851, 849.9]) == [True, True, True, False]


def test_noise_around_the_threshold_does_not_flap() -> None:
    noisy = [905, 895, 903, 897, 901, 893, 899]
    assert run(noisy) == [True] * len(noisy)


def test_an_explicit_release_threshold_is_honoured() -> None:
    spec = PolicySpec(power_cap_limit=1000, selector=LabelSelector(), capping_threshold=90, release_threshold=70)
    assert run([910, 750, 699], spec) == [True, True, False]


def test_no_fresh_data_means_not_required_with_a_reason() -> None:
    decision = decide(SPEC, None, True)
    assert not decision.required and decision.reason == "NoFreshData"
