"""Print the calibration table of the report's verdict rule (sgtlab.calibration): the false-positive
rate of each candidate test with no true difference, at 3, 5 and 10 seeds in the three regimes, and
the chosen test's power at a true difference of twice the seed-level sd.

    python scripts/calibrate_verdicts.py            # about 2 minutes on 2 cores
    python scripts/calibrate_verdicts.py --quick    # the chosen test only (seconds)
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy import stats

from sgtlab import calibration as c
from sgtlab.inference import mean_squares


def satterthwaite_test(a, b):
    """The random-effects t with Satterthwaite's df: measured here, rejected (liberal at 3-5 seeds)."""
    d = (a - b).astype(float)
    s, n = d.shape[-2:]
    m = d.mean(axis=(-2, -1))
    ms_s, ms_i, ms_r = mean_squares(d)
    ex = np.maximum(ms_i - ms_r, 0)
    se = np.sqrt((ms_s + ex) / (s * n))
    df = (ms_s + ex) ** 2 / (ms_s ** 2 / (s - 1) + np.where(ex > 0, ms_i ** 2 / (n - 1) + ms_r ** 2 / ((s - 1) * (n - 1)), 0))
    return 2 * stats.t.sf(np.abs(m) / se, df)


def seed_sd(regime, seeds, images=300):
    """sd over seeds of the per-seed mean difference, under the null of the regime."""
    a, b = c.simulate(np.random.default_rng(7), 500, seeds, images, regime)
    return float(np.sqrt(mean_squares((a - b).astype(float))[0].mean() / images))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the chosen test only")
    ap.add_argument("--n-sim", type=int, default=2000)
    args = ap.parse_args()
    tests = {"crossed t (used)": (c.crossed_test, args.n_sim)}
    if not args.quick:
        tests.update({"crossed t, Satterthwaite df": (satterthwaite_test, args.n_sim),
                      "seed-level t": (c.seed_t_test, args.n_sim),
                      "two-level bootstrap (old)": (c.bootstrap_test("nested"), 400),
                      "crossed bootstrap": (c.bootstrap_test("crossed"), 400)})
    print("false-positive rate at alpha 0.05 with no true difference (Monte-Carlo se), 300 images")
    print("| regime | seeds | " + " | ".join(tests) + " |")
    print("|---|---|" + "---|" * len(tests))
    for reg in c.REGIMES:
        for s in (3, 5, 10):
            cells = []
            for fn, n_sim in tests.values():
                r, se = c.rates(fn, s, reg, n_sim=n_sim, seed=s)
                cells.append(f"{100 * r:.1f} % ({100 * se:.1f})")
            print(f"| {reg.name} | {s} | " + " | ".join(cells) + " |")
    print("\npower of the used test at a true difference of twice the seed-level sd, 10 seeds; the oracle is a"
          "\nz test that knows the true sd of the mean difference (seeds and test set): no test can beat it")
    for reg in c.REGIMES:
        sd = seed_sd(reg, 10)
        r, se = c.rates(c.crossed_test, 10, reg, effect=2 * sd, n_sim=args.n_sim, seed=99)
        a, b = c.simulate(np.random.default_rng(5), 2000, 10, 300, reg)
        true_sd = float((a - b).mean(axis=(1, 2)).std())
        z = 2 * sd / true_sd
        oracle = stats.norm.sf(1.96 - z) + stats.norm.cdf(-1.96 - z)
        print(f"{reg.name}: effect {100 * 2 * sd:.1f} pp, power {r:.3f} ({se:.3f}), oracle {oracle:.3f}")


if __name__ == "__main__":
    main()
