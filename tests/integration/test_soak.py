"""Short runs of the soak script (scripts/soak.py): churn + faults, zero unexplained loss;
with ``--recover``, zero loss at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "soak.py"


@pytest.mark.slow
def test_short_soak_loses_nothing_outside_outages(server_binary: str) -> None:
    env = {**os.environ, "REDIS_SERVER": server_binary}
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--minutes",
            "0.12",
            "--fault-every",
            "2",
            "--subscriptions",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.stdout, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["outages"] >= 2, report
    assert report["published"] > 200 and report["delivered"] > 0, report
    assert report["lost_outside_outages"] == 0 and report["duplicates"] == 0, report
    assert proc.returncode == 0


@pytest.mark.slow
def test_short_recovering_soak_loses_nothing_even_in_outages(server_binary: str) -> None:
    # Recovering subscriptions, publishes with history (covering every outage), restarts
    # with persistence: every message of every window, outages included, exactly once.
    env = {**os.environ, "REDIS_SERVER": server_binary}
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--recover",
            "--minutes",
            "0.12",
            "--fault-every",
            "2",
            "--subscriptions",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.stdout, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["recover"] and report["outages"] >= 2, report
    # A CLIENT KILL outage misses messages while the server stays up: the histories gave
    # them back (a run where nothing needed recovering would prove nothing).
    assert report["published_during_outages"] > 0, report
    assert report["published"] > 200 and report["delivered"] > 0, report
    assert report["lost_outside_outages"] == 0 and report["lost_in_outages"] == 0, report
    assert report["duplicates"] == 0 and report["out_of_order"] == 0, report
    assert report["gaps"] == 0, report
    assert proc.returncode == 0
