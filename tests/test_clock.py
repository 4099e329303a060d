"""Where a command's time went: the phases' account and its one line."""

import pytest

from radcap.core import clock
from radcap.core.clock import Phases, timed


@pytest.fixture
def ticks(monkeypatch):
    """A `perf_counter` that reads the next of the scripted times."""

    def script(*times):
        it = iter(times)
        monkeypatch.setattr(clock, "perf_counter", lambda: next(it))

    return script


@timed("extract")
def extract(phases=None):
    return "features"


def test_the_line_lists_the_phases_in_order_once_each_second(ticks):
    ticks(0.0, 0.2, 3.4, 3.4, 98.1, 98.1, 129.0, 129.0, 130.0, 132.5, 140.0, 144.2)
    with Phases.measure() as phases:
        timed("draw")(lambda: None)()  # 0.2 .. 3.4
        assert extract() == "features"  # 3.4 .. 98.1
        timed("train")(lambda: None)()  # 98.1 .. 129.0

        @timed("evaluate")
        def evaluate():
            timed("controls")(lambda: None)()  # 130.0 .. 132.5: not evaluate's

        evaluate()  # 129.0 .. 140.0
    assert phases.seconds == pytest.approx(
        {"draw": 3.2, "extract": 94.7, "train": 30.9, "evaluate": 8.5, "controls": 2.5}
    )
    assert phases.line() == (
        "time: draw 3 s, extract 95 s, train 31 s, evaluate 8 s, controls 2 s; "
        "total 144 s"
    )


def test_a_phase_met_twice_adds_up_and_no_phase_reads_total_only(ticks):
    ticks(0.0, 1.0, 2.0, 5.0, 9.6, 20.0)
    phases = Phases()
    with phases.phase("extract"):
        pass
    with phases.phase("extract"):
        pass
    assert phases.line(total=12.4) == "time: extract 6 s; total 12 s"
    assert Phases().line(total=0.2) == "time: total 0 s"


def test_outside_an_account_a_timed_call_records_nothing():
    assert extract() == "features"
    with Phases.measure() as phases:
        pass
    assert extract() == "features" and phases.seconds == {}
