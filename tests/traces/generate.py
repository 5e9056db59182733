#!/usr/bin/env python3
"""Generates the shipped replay traces deterministically (run from this folder).

Each trace is a CSV of per-class demand (requests/s) over time; see wedsync_core::replay for
the format. The noise comes from a fixed-seed xorshift, so the files never change unless this
script does.
"""
import math

HEADER = "t_s,wedding_critical,wedding_planning,registration,media,background"
START_SATURDAY = 1_781_337_600_000  # 2026-06-13T08:00:00Z, a Saturday in peak season


class Noise:
    def __init__(self, seed):
        self.s = seed

    def __call__(self, amplitude):
        self.s ^= (self.s << 13) & 0xFFFFFFFFFFFFFFFF
        self.s ^= self.s >> 7
        self.s ^= (self.s << 17) & 0xFFFFFFFFFFFFFFFF
        return 1.0 + amplitude * (((self.s >> 11) / float(1 << 53)) * 2.0 - 1.0)


def write(name, meta, rows):
    with open(f"{name}.csv", "w") as f:
        f.write(f"# name: {name}\n")
        for key, value in meta:
            f.write(f"# {key}: {value}\n")
        f.write(HEADER + "\n")
        for t, values in rows:
            f.write(f"{t:g}," + ",".join(f"{v:.1f}" for v in values) + "\n")


def viral_spike():
    """30 min at 1 s: registrations jump 5x at t=600 and climb to 100x within 5 minutes."""
    n = Noise(1)
    rows = []
    for t in range(0, 1800):
        reg = 500.0
        if t >= 600:
            reg = 500.0 * min(100.0, 5.0 * math.exp(math.log(20.0) * (t - 600) / 300.0))
        if t >= 1500:
            reg = 500.0 * max(1.0, 100.0 * math.exp(-(t - 1500) / 60.0))
        rows.append((t, [200 * n(0.05), 300 * n(0.1), reg * n(0.1), 400 * n(0.1), 200 * n(0.1)]))
    write("viral-spike", [("onset_s", 600), ("round_ms", 100), ("start_unix_ms", START_SATURDAY)], rows)


def saturday_surge():
    """24 h at 60 s: a peak-season Saturday, quiet night, 4x by early afternoon, evening tail."""
    n = Noise(2)
    rows = []
    for m in range(0, 24 * 60):
        hour = m / 60.0
        shape = 0.25 + 3.75 * math.exp(-((hour - 14.0) / 4.0) ** 2) + 0.8 * math.exp(-((hour - 20.5) / 1.5) ** 2)
        base = 400.0 * shape
        rows.append(
            (m * 60, [base * 0.3 * n(0.08), base * 0.5 * n(0.08), base * 0.6 * n(0.08), base * 0.8 * n(0.08), 150 * n(0.08)])
        )
    write("saturday-surge", [("round_ms", 1000), ("start_unix_ms", 1_781_308_800_000)], rows)


def april_ramp():
    """14 days at 5 min from March 25: daily shape, season ramps +40% over April's first week."""
    n = Noise(3)
    rows = []
    start = 1_774_396_800_000  # 2026-03-25T00:00:00Z
    for k in range(0, 14 * 288):
        t = k * 300
        day = t / 86400.0
        hour = (t % 86400) / 3600.0
        season = 1.0 + 0.4 * min(1.0, max(0.0, (day - 7.0) / 7.0))
        weekday = int((day + 2) % 7)  # 2026-03-25 is a Wednesday; 5 = Saturday
        saturday = 2.0 if weekday == 5 else 1.0
        daily = 0.35 + 0.65 * math.exp(-((hour - 15.0) / 5.0) ** 2)
        base = 1000.0 * season * saturday * daily
        rows.append((t, [base * 0.15 * n(0.1), base * 0.3 * n(0.1), base * 0.25 * n(0.1), base * 0.2 * n(0.1), base * 0.1 * n(0.1)]))
    write("april-ramp", [("round_ms", 5000), ("start_unix_ms", start)], rows)


def wedding_day():
    """12 h at 30 s: three ceremonies in eu-west; photo uploads surge 6x during each."""
    n = Noise(4)
    ceremonies = [(2 * 3600, 3 * 3600), (5 * 3600, 6 * 3600), (8 * 3600, 9 * 3600)]
    rows = []
    for k in range(0, 12 * 120):
        t = k * 30
        in_ceremony = any(a <= t < b for a, b in ceremonies)
        media = 300.0 * (6.0 if in_ceremony else 1.0)
        critical = 150.0 * (2.0 if in_ceremony else 1.0)
        rows.append((t, [critical * n(0.05), 250 * n(0.1), 200 * n(0.1), media * n(0.1), 100 * n(0.1)]))
    meta = [("round_ms", 1000), ("start_unix_ms", START_SATURDAY)]
    meta += [("wedding", f"w-{i},eu-west,{a},{b}") for i, (a, b) in enumerate(ceremonies, 1)]
    write("wedding-day", meta, rows)


def flash_crowd_during_wedding():
    """1 h at 1 s with a wedding active throughout: media jumps 30x at t=900 for 10 minutes,
    beyond what the pool's maximum can carry."""
    n = Noise(5)
    rows = []
    for t in range(0, 3600):
        media = 400.0 * (30.0 if 900 <= t < 1500 else 1.0)
        rows.append((t, [300 * n(0.05), 300 * n(0.1), 300 * n(0.1), media * n(0.1), 300 * n(0.1)]))
    meta = [("onset_s", 900), ("round_ms", 100), ("start_unix_ms", START_SATURDAY), ("wedding", "w-live,eu-west,0,3600")]
    write("flash-crowd-during-wedding", meta, rows)


if __name__ == "__main__":
    viral_spike()
    saturday_surge()
    april_ramp()
    wedding_day()
    flash_crowd_during_wedding()
