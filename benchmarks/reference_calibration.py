"""HI-vector error after reference calibration, for small real arrays with dense receiver errors.

Scenario (docs/real-arrays.md): N = 9 at 1.24 GHz and N = 16 at 5.8 GHz, lambda/2 spacing,
every channel with a gain error (1.5 dB std, log-normal) and a uniform phase error, one
reference transmitter at a known position (theta = 0.2 rad, r = 2 m), unit-modulus pilots.
For each (N, SNR, T) the script prints the mean over ``--trials`` seeded trials of

* ``pilots``: NMSE of :func:`nearfield.estimators.reference.calibrate` with the pilots known,
* ``blind``:  the same without pilots (the waveform is estimated),
* ``LS bound``: the per-antenna LS error with the pilots known, (N - 1)/N sigma^2 / (T mean|c|^2)
  (one complex degree of freedom is the unobservable common factor),

all after removing the common complex factor (:func:`hi_error`).  A second table shows
what an error in the *assumed* reference position does (pilots, 20 dB, T = 1000).

``--localize`` adds the end-to-end check: N = 32 at 5.8 GHz with the same dense errors,
calibrated on one reference (theta = 0.1 rad, r = 4 m, 25 dB, T = 1000, pilots), then two
unknown targets ((0.3 rad, 3 m), (-0.25 rad, 5 m), 20 dB, T = 100, pilots) localized by
:func:`nearfield.localize` on ``apply_hi(Y, c_hat)``, against the CRB with the true HI vector
known (the pilot-known CRB, also for the blind row, where the waveforms are estimated); and the
same frames without calibration.

    python benchmarks/reference_calibration.py [--trials 20] [--localize] [--localize-trials 20]
"""

from __future__ import annotations

import argparse

import numpy as np

from nearfield.array import ULA
from nearfield.estimators.reference import calibrate, hi_error
from nearfield.scenario import Scenario, make_pilots, paper_scenario

ARRAYS = ((9, 1.24e9), (16, 5.8e9))
REF = (0.2, 2.0)


def trial(rng, n, carrier, snr_db, t, d_theta=0.0, d_range=0.0):
    sc = paper_scenario(
        rng,
        n_antennas=n,
        snr_db=snr_db,
        p_fault=0.0,
        n_snapshots=t,
        targets=[REF],
        wavelength_m=None,
        carrier_hz=carrier,
        gain_std_db=1.5,
        phase_std="uniform",
    )
    Y = sc.sample(rng, np.complex128)
    th, r = sc.theta + d_theta, sc.r + d_range
    e_p = hi_error(calibrate(Y, sc.array, th, r, sc.pilots), sc.c)
    e_b = hi_error(calibrate(Y, sc.array, th, r), sc.c)
    bound = (n - 1) / n * sc.sigma2 / t / np.mean(np.abs(sc.c) ** 2)
    return e_p, e_b, bound


def localize_trials(trials: int, seed: int) -> None:
    import logging

    from nearfield.bounds import crb
    from nearfield.estimators.reference import apply_hi
    from nearfield.localize import localize

    logging.disable(logging.WARNING)
    n, f = 32, 5.8e9
    th, rr = np.array([0.3, -0.25]), np.array([3.0, 5.0])
    rng = np.random.default_rng([seed, 32])
    err = {"calibrated": [], "cal. blind": [], "raw": []}
    fails = dict.fromkeys(err, 0)
    bounds = []
    for _ in range(trials):
        ref = paper_scenario(
            rng,
            n_antennas=n,
            snr_db=25.0,
            p_fault=0.0,
            n_snapshots=1000,
            targets=[(0.1, 4.0)],
            wavelength_m=None,
            carrier_hz=f,
            gain_std_db=1.5,
            phase_std="uniform",
        )
        c_hat = calibrate(ref.sample(rng, np.complex128), ref.array, ref.theta, ref.r, ref.pilots)
        gains = np.exp(2j * np.pi * rng.random(2))
        S = make_pilots(2, 100, rng)
        sc = Scenario(ref.array, th, rr, gains, S, ref.c, 20.0)
        Y = sc.sample(rng, np.complex128)
        # eta = [Re beta, Im beta, theta, r]: the theta and r entries of the CRB diagonal
        bounds.append(np.diag(crb(sc.array, th, rr, gains, S, sc.sigma2, c=ref.c))[4:])
        Yc = apply_hi(Y, c_hat)
        for key, Yx, P in (("calibrated", Yc, S), ("cal. blind", Yc, None), ("raw", Y, S)):
            try:
                est = localize(Yx, sc.array, P, n_targets=2)
            except ValueError:
                fails[key] += 1
                continue
            # match estimates to targets by angle (both sorted)
            o, ot = np.argsort(est.theta), np.argsort(th)
            e = np.empty(4)
            e[ot] = est.theta[o] - th[ot]
            e[2 + ot] = est.r[o] - rr[ot]
            err[key].append(e)
    crb_rmse = np.sqrt(np.mean(bounds, axis=0))
    print(f"N = 32 at 5.8 GHz, dense errors, {trials} trials; RMSE / sqrt(CRB with the true HI known)")
    print(f"{'data':<11} {'failed':>6} {'theta1':>8} {'theta2':>8} {'r1':>8} {'r2':>8}")
    for key, v in err.items():
        if v:
            ratio = np.sqrt(np.mean(np.square(v), axis=0)) / crb_rmse
            cells = " ".join(f"{x:>8.2f}" for x in ratio)
        else:
            cells = " ".join(f"{'-':>8}" for _ in range(4))
        print(f"{key:<11} {fails[key]:>6} {cells}")
    print(
        "sqrt(CRB): theta "
        + ", ".join(f"{x:.2e}" for x in crb_rmse[:2])
        + " rad; r "
        + ", ".join(f"{x:.2e}" for x in crb_rmse[2:])
        + " m  (targets (0.3 rad, 3 m), (-0.25 rad, 5 m))"
    )


def db(x: float) -> str:
    return f"{10 * np.log10(x):7.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--localize", action="store_true", help="also the end-to-end localization check")
    ap.add_argument("--localize-trials", type=int, default=20)
    a = ap.parse_args()
    if a.localize:
        localize_trials(a.localize_trials, a.seed)
        print()
    print(
        f"HI-vector NMSE in dB after calibrate(), mean of {a.trials} trials; reference at "
        f"theta = {REF[0]} rad, r = {REF[1]} m; gain std 1.5 dB, uniform phase"
    )
    print(f"{'N':>3} {'f GHz':>6} {'SNR dB':>7} {'T':>5} {'pilots':>8} {'blind':>8} {'LS bound':>9}")
    for n, f in ARRAYS:
        for snr in (0.0, 10.0, 20.0, 30.0):
            for t in (100, 1000):
                rng = np.random.default_rng([a.seed, n, int(snr), t])
                res = np.mean([trial(rng, n, f, snr, t) for _ in range(a.trials)], axis=0)
                print(f"{n:>3} {f / 1e9:>6.2f} {snr:>7.0f} {t:>5} {db(res[0]):>8} {db(res[1]):>8} {db(res[2]):>9}")
    print()
    print("Assumed reference position off by (d_theta, d_range); pilots, SNR 20 dB, T = 1000")
    print(f"{'N':>3} {'d_theta mrad':>13} {'d_range cm':>11} {'NMSE dB':>8}")
    for n, f in ARRAYS:
        for dth, dr in ((0.0, 0.0), (0.01, 0.0), (0.0, 0.05), (0.0, 0.2)):
            rng = np.random.default_rng([a.seed, n, 99])
            res = np.mean([trial(rng, n, f, 20.0, 1000, dth, dr) for _ in range(a.trials)], axis=0)
            print(f"{n:>3} {dth * 1e3:>13.0f} {dr * 100:>11.0f} {db(res[0]):>8}")
    wl = {n: ULA(n, f).wavelength for n, f in ARRAYS}
    print(f"(wavelengths: N=9 {wl[9] * 100:.1f} cm, N=16 {wl[16] * 100:.2f} cm)")


if __name__ == "__main__":
    main()
