"""Periodic jobs (drift checks, flow counters, self-checks) take at most a tenth of the time: a round that
took long pushes the next one back, so a check of 100k ports' flows never runs back to back."""

from __future__ import annotations

import time

from controller.periodic import MAX_DUTY, Periodic, pause_after


def test_the_pause_grows_with_the_round() -> None:
    assert pause_after(10.0, 0.5) == 10.0  # a short round: the interval
    assert abs(pause_after(10.0, 3.0) - 27.0) < 1e-9  # 3 s of work, then 27 s of rest: 10%
    assert abs(pause_after(0.0, 1.0) - (1 - MAX_DUTY) / MAX_DUTY) < 1e-9


def test_a_slow_job_runs_at_most_a_tenth_of_the_time() -> None:
    rounds: list[float] = []

    def job() -> None:
        rounds.append(time.monotonic())
        time.sleep(0.05)  # each round takes 50 ms: the next one waits >= 450 ms (interval 1 ms)

    p = Periodic("test", 0.001, job)
    p.start()
    try:
        # at least three rounds (two gaps), however loaded the machine: the spacing check below then bites
        deadline = time.monotonic() + 30.0
        while len(rounds) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        p.stop()
    assert len(rounds) >= 3, rounds
    # every gap holds the 50 ms round and >= 450 ms of rest; so at most 3 rounds fit in any 1.2 s
    assert all(b - a >= 0.45 for a, b in zip(rounds, rounds[1:], strict=False)), rounds
    assert p.last_round_s >= 0.05
