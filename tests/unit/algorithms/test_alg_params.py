"""Parameter parsing: strings from the spec become checked values, and every mistake is named."""

from __future__ import annotations

import pytest

from climatik.algorithms import ClosedLoop, ClosedLoopConfig, InvalidParameterError, ParamReader


def reader(**values: str) -> ParamReader:
    return ParamReader("test-algo", values, ["a", "b", "flag"])


def test_absent_parameters_take_their_defaults() -> None:
    read = reader()

    assert read.number("a", 1.5) == 1.5
    assert read.integer("b", None) is None
    assert read.boolean("flag", True) is True


def test_values_are_parsed_with_surrounding_spaces_tolerated() -> None:
    read = reader(a=" 0.25 ", b="300", flag="False")

    assert read.number("a", 0.0, minimum=0.0, maximum=1.0) == 0.25
    assert read.integer("b", None, minimum=1) == 300
    assert read.boolean("flag", True) is False


def test_an_unknown_parameter_is_rejected_listing_the_known_ones() -> None:
    with pytest.raises(InvalidParameterError, match=r"'typo'='1'.*known: a, b, flag"):
        reader(typo="1")


@pytest.mark.parametrize(("method", "value", "problem"), [
    ("number", "abc", "not a number"),
    ("number", "inf", "finite"),
    ("number", "", "not a number"),
    ("integer", "2.5", "not a whole number"),
    ("boolean", "maybe", "true or false"),
])
def test_unparsable_values_say_why(method: str, value: str, problem: str) -> None:
    read = reader(a=value)
    with pytest.raises(InvalidParameterError, match=problem) as caught:
        if method == "boolean":
            read.boolean("a", False)
        elif method == "integer":
            read.integer("a", None)
        else:
            read.number("a", 0.0)

    assert (caught.value.algorithm, caught.value.parameter, caught.value.value) == ("test-algo", "a", value)


def test_ranges_are_inclusive_unless_exclusive() -> None:
    assert reader(a="1").number("a", 0.5, minimum=0.0, maximum=1.0) == 1.0
    with pytest.raises(InvalidParameterError, match=r"out of range \(0, 1\)"):
        reader(a="1").number("a", 0.5, minimum=0.0, maximum=1.0, exclusive=True)
    with pytest.raises(InvalidParameterError, match=r"out of range \[1, inf\]"):
        reader(b="0").integer("b", 5, minimum=1)


def test_closed_loop_parameters_map_to_its_configuration() -> None:
    config = ClosedLoopConfig.from_parameters({
        "margin-percent": "5", "deadband-percent": "2", "min-frequency": "600", "uniform": "false",
        "settle-seconds": "30", "stale-seconds": "90", "max-step-up-percent": "50", "exponent": "3",
        "cpu-step-percent": "20", "cpu-min-percent": "60", "max-step-down-percent": "25",
        "settle-max-seconds": "120",
    })

    assert config == ClosedLoopConfig(margin=0.05, deadband=0.02, min_frequency=600, uniform=False,
                                      settle_seconds=30.0, stale_seconds=90.0, max_step_up=0.5, exponent=3.0,
                                      cpu_step=0.2, cpu_floor=0.6, max_step_down=0.25, settle_max_seconds=120.0)
    assert ClosedLoopConfig.from_parameters(None) == ClosedLoopConfig()
    assert ClosedLoopConfig.from_parameters({"settle-seconds": "90"}).settle_max_seconds == 90.0


@pytest.mark.parametrize(("name", "value"), [
    ("margin-percent", "-1"), ("margin-percent", "80"), ("deadband-percent", "x"), ("min-frequency", "0"),
    ("uniform", "sometimes"), ("exponent", "9"), ("cpu-min-percent", "5"), ("max-step-up-percent", "0"),
    ("max-step-down-percent", "95"), ("settle-max-seconds", "1"), ("scaling-factor", "0.8"),
])
def test_closed_loop_rejects_bad_parameters(name: str, value: str) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        ClosedLoop.from_parameters({name: value})

    assert caught.value.parameter == name
    assert "closed-loop" in str(caught.value)
