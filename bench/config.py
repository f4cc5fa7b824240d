"""Sizes of every scenario, for the full run and for ``--quick`` (CI: completes, in < 60 s)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    reps: int  # measured repetitions per throughput run (median reported)
    rounds: int  # S5, S7, S8 (wall-clock figures): fresh runs per contender, interleaved; median
    tp_rounds: int  # the same for the throughput runs (S1-S4 and their uvloop variants)
    payload: int  # message size in bytes (S1-S4, S9)
    s1_msgs: int  # S1: messages per repetition
    s2_subs: int  # S2: subscriptions on the one channel
    s2_deliveries: int  # S2: deliveries per repetition
    s3_channels: int  # S3: channels, one subscription each
    s3_msgs: int
    s4_subs: int  # S4: pattern subscriptions on the one pattern
    s4_deliveries: int
    s5_subs: int  # S5: subscriptions ...
    s5_per_sub: int  # ... times channels each = channels added then removed
    s5_reps: int
    s6_subs: int  # S6: subscriptions with 1-3 channels each
    s7_rate: int  # S7: msgs/s
    s7_secs: float  # S7: seconds of paced publishing (first 10% dropped as warm-up)
    s8_subs: int  # S8: subscriptions ...
    s8_per_sub: int  # ... times channels each = channels to recover
    s9_sizes: tuple[int, ...]  # S9: channel counts / subscription counts
    s9_deliveries: int  # S9: deliveries per point
    s11_publishers: int  # S11: concurrent publisher tasks in the client process
    s11_secs: float  # S11: seconds of publishing per repetition
    s12_clients: int  # S12: WebSocket clients of the one channel
    s12_messages: int  # S12: messages per repetition
    s12_rate: float  # S12: messages/s published (the paced runs)
    s12_reps: int  # S12: measured repetitions per run (after one short warm-up)
    s13_publishers: int  # S13: concurrent publisher tasks (as S11)
    s13_secs: float  # S13: seconds per repetition and mode
    s13_history_size: int  # S13: history_size of the timed publishes
    s13_warm: int  # S13: publishes with history per task before timing (fills the histories)
    s13_mem_channels: int  # S13 memory: channels ...
    s13_mem_msgs: int  # ... times messages each (history_size = this) retained
    s14_channels: int  # S14: recovering channels (one subscription each)
    s14_before: int  # S14: messages per channel delivered before the outage
    s14_during: int  # S14: messages per channel published during the outage
    s15_msgs: int  # S15: messages per repetition (both layouts)
    s15_channels: int  # S15: channels of the S3-like layout


FULL = Sizes(
    reps=3,
    rounds=3,
    tp_rounds=2,
    payload=64,
    s1_msgs=500_000,
    s2_subs=1_000,
    s2_deliveries=3_000_000,
    s3_channels=10_000,
    s3_msgs=500_000,
    s4_subs=1_000,
    s4_deliveries=3_000_000,
    s5_subs=1_000,
    s5_per_sub=10,
    s5_reps=5,
    s6_subs=10_000,
    s7_rate=10_000,
    s7_secs=3.0,
    s8_subs=10_000,
    s8_per_sub=10,
    s9_sizes=(1, 10, 100, 1_000, 10_000, 100_000),
    s9_deliveries=200_000,
    s11_publishers=1_000,
    s11_secs=1.0,
    s12_clients=1_000,
    s12_messages=50,
    s12_rate=10.0,
    s12_reps=2,
    s13_publishers=1_000,
    s13_secs=1.0,
    s13_history_size=100,
    s13_warm=120,
    s13_mem_channels=100,
    s13_mem_msgs=1_000,
    s14_channels=10_000,
    s14_before=3,
    s14_during=3,
    s15_msgs=500_000,
    s15_channels=10_000,
)

QUICK = Sizes(
    reps=1,
    rounds=1,
    tp_rounds=1,
    payload=64,
    s1_msgs=2_000,
    s2_subs=50,
    s2_deliveries=5_000,
    s3_channels=200,
    s3_msgs=2_000,
    s4_subs=50,
    s4_deliveries=5_000,
    s5_subs=50,
    s5_per_sub=4,
    s5_reps=1,
    s6_subs=300,
    s7_rate=2_000,
    s7_secs=0.3,
    s8_subs=100,
    s8_per_sub=10,
    s9_sizes=(1, 100),
    s9_deliveries=2_000,
    s11_publishers=1_000,
    s11_secs=0.1,
    s12_clients=20,
    s12_messages=10,
    s12_rate=100.0,
    s12_reps=1,
    s13_publishers=1_000,
    s13_secs=0.1,
    s13_history_size=100,
    s13_warm=1,
    s13_mem_channels=10,
    s13_mem_msgs=100,
    s14_channels=200,
    s14_before=2,
    s14_during=2,
    s15_msgs=2_000,
    s15_channels=200,
)
