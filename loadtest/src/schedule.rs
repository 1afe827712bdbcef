//! The open-loop schedule: when each call is sent, to which function, asking for how long a
//! runtime. Built entirely before a run starts, so sending never waits on anything but the
//! clock.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Exp1, Open01};

use crate::trace::{Arrivals, Trace, Window};

/// Shortest runtime a call asks for, in milliseconds.
pub const MIN_RUNTIME_MS: u32 = 1;
/// Longest runtime a call asks for, in milliseconds (what `baton-fn-spin` accepts).
pub const MAX_RUNTIME_MS: u32 = 60_000;

/// How the gaps between calls are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Iat {
    /// Exponential gaps (a Poisson process).
    Exponential,
    /// Gaps uniform on (0, 1), scaled.
    Uniform,
    /// Equal gaps.
    Equidistant,
}

/// One call to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedCall {
    /// When to send it, from the start of the run.
    pub at: Duration,
    /// Index of the function (into the run's function list).
    pub function: u32,
    /// Runtime to ask for, in milliseconds.
    pub requested_ms: u32,
}

/// A runtime in milliseconds, rounded and clamped to [1 ms, 60 s].
pub fn clamp_runtime_ms(ms: f64) -> u32 {
    if ms.is_nan() {
        MIN_RUNTIME_MS
    } else {
        ms.round().clamp(f64::from(MIN_RUNTIME_MS), f64::from(MAX_RUNTIME_MS)) as u32
    }
}

/// Where in a period each of `n` calls falls, as sorted fractions strictly inside (0, 1).
/// Draws `n + 1` gaps and scales them to fill the period, so the calls are interior: for
/// exponential gaps this is a Poisson process conditioned on `n` arrivals.
pub fn period_offsets(n: u32, iat: Iat, rng: &mut impl Rng) -> Vec<f64> {
    let gaps: Vec<f64> = (0..=n)
        .map(|_| match iat {
            Iat::Exponential => rng.sample::<f64, _>(Exp1).max(f64::MIN_POSITIVE),
            Iat::Uniform => rng.sample::<f64, _>(Open01),
            Iat::Equidistant => 1.0,
        })
        .collect();
    let total: f64 = gaps.iter().sum();
    let mut at = 0.0;
    gaps[..n as usize]
        .iter()
        .map(|g| {
            at += g;
            (at / total).clamp(1e-9, 1.0 - 1e-9)
        })
        .collect()
}

/// The calls `trace` starts within `window`, with each trace minute lasting
/// `60 s × time_scale` of wall time. 2019 traces: each minute's calls spread by `iat`,
/// runtimes drawn from each function's percentiles. 2021 traces: each call at its own
/// start, asking for its own runtime. Sorted by time; reproducible from `seed`.
pub fn trace_calls(trace: &Trace, window: Window, iat: Iat, time_scale: f64, seed: u64) -> Vec<PlannedCall> {
    let mut rng = StdRng::seed_from_u64(seed);
    let minute = 60.0 * time_scale;
    let first = window.start_minute as usize;
    let mut calls = Vec::new();
    for (index, function) in trace.functions.iter().enumerate() {
        let function_index = index as u32;
        match &function.arrivals {
            Arrivals::PerMinute { counts, durations } => {
                for (m, &n) in counts[first..first + window.minutes as usize].iter().enumerate() {
                    for offset in period_offsets(n, iat, &mut rng) {
                        calls.push(PlannedCall {
                            at: Duration::from_secs_f64((m as f64 + offset) * minute),
                            function: function_index,
                            requested_ms: clamp_runtime_ms(durations.at(rng.random())),
                        });
                    }
                }
            }
            Arrivals::Calls(traced) => {
                let (from, to) = (first as f64 * 60.0, (first + window.minutes as usize) as f64 * 60.0);
                for call in traced.iter().filter(|c| c.start_s >= from && c.start_s < to) {
                    calls.push(PlannedCall {
                        at: Duration::from_secs_f64((call.start_s - from) * time_scale),
                        function: function_index,
                        requested_ms: clamp_runtime_ms(call.duration_s * 1000.0),
                    });
                }
            }
        }
    }
    calls.sort_by_key(|c| c.at);
    calls
}

/// `rate` calls per second for `length`, spread by `iat`, over `functions` functions in
/// turn, each asking for `requested_ms`.
pub fn steady_calls(
    rate: f64,
    length: Duration,
    functions: u32,
    iat: Iat,
    requested_ms: u32,
    seed: u64,
) -> Vec<PlannedCall> {
    let mut rng = StdRng::seed_from_u64(seed);
    let secs = length.as_secs_f64();
    // Whole calls that fit: `rate` per second, none at or past the end.
    let n = (rate * secs + 1e-9).floor() as u32;
    // Equidistant calls sit exactly 1 / rate apart (so a function called every `m`-th
    // time rests exactly m / rate between calls).
    let offsets: Vec<f64> = match iat {
        Iat::Equidistant => (0..n).map(|k| (f64::from(k) + 0.5) / rate / secs).collect(),
        _ => period_offsets(n, iat, &mut rng),
    };
    offsets
        .into_iter()
        .enumerate()
        .map(|(k, offset)| PlannedCall {
            at: length.mul_f64(offset),
            function: k as u32 % functions.max(1),
            requested_ms,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::trace::{DurationPercentiles, Format, TraceFunction};

    fn iat() -> impl Strategy<Value = Iat> {
        prop_oneof![Just(Iat::Exponential), Just(Iat::Uniform), Just(Iat::Equidistant)]
    }

    fn trace(counts: Vec<Vec<u32>>) -> Trace {
        let minutes = counts.first().map_or(0, Vec::len) as u32;
        let functions = counts
            .into_iter()
            .enumerate()
            .map(|(i, counts)| TraceFunction {
                id: format!("f{i}"),
                memory_mib: Some(128.0),
                arrivals: Arrivals::PerMinute {
                    counts,
                    durations: DurationPercentiles([0.0, 1.0, 10.0, 20.0, 30.0, 40.0, 90_000.0]),
                },
            })
            .collect();
        Trace { path: "fixture".into(), format: Format::Azure2019, minutes, functions }
    }

    proptest! {
        /// Every function gets exactly its trace count in every minute of the window, for
        /// every distribution and time scale; runtimes stay within [1 ms, 60 s].
        #[test]
        fn each_minute_holds_exactly_the_trace_count(
            counts in prop::collection::vec(prop::collection::vec(0u32..40, 6), 1..5),
            iat in iat(),
            scale in prop_oneof![Just(1.0), Just(0.25), Just(2.5), 0.01f64..4.0],
            start in 0u32..3,
            seed in any::<u64>(),
        ) {
            let trace = trace(counts.clone());
            let window = Window { start_minute: start, minutes: 6 - start };
            let calls = trace_calls(&trace, window, iat, scale, seed);
            let minute = 60.0 * scale;
            for (f, counts) in counts.iter().enumerate() {
                for (m, &n) in counts[start as usize..].iter().enumerate() {
                    let got = calls
                        .iter()
                        .filter(|c| c.function == f as u32 && (c.at.as_secs_f64() / minute).floor() as usize == m)
                        .count();
                    prop_assert_eq!(got, n as usize, "function {} minute {}", f, m);
                }
            }
            prop_assert!(calls.windows(2).all(|w| w[0].at <= w[1].at));
            prop_assert!(calls.iter().all(|c| (MIN_RUNTIME_MS..=MAX_RUNTIME_MS).contains(&c.requested_ms)));
        }

        /// The time factor stretches the schedule and changes nothing else.
        #[test]
        fn the_time_factor_scales_every_send_time(
            counts in prop::collection::vec(prop::collection::vec(0u32..20, 3), 1..4),
            iat in iat(),
            factor in 0.05f64..5.0,
            seed in any::<u64>(),
        ) {
            let trace = trace(counts);
            let window = trace.whole();
            let base = trace_calls(&trace, window, iat, 1.0, seed);
            let scaled = trace_calls(&trace, window, iat, factor, seed);
            prop_assert_eq!(base.len(), scaled.len());
            let mut base_sorted: Vec<_> = base.iter().map(|c| (c.function, c.requested_ms, c.at.as_secs_f64() * factor)).collect();
            let mut scaled_sorted: Vec<_> = scaled.iter().map(|c| (c.function, c.requested_ms, c.at.as_secs_f64())).collect();
            base_sorted.sort_by(|a, b| a.2.total_cmp(&b.2));
            scaled_sorted.sort_by(|a, b| a.2.total_cmp(&b.2));
            for (a, b) in base_sorted.iter().zip(&scaled_sorted) {
                prop_assert_eq!((a.0, a.1), (b.0, b.1));
                prop_assert!((a.2 - b.2).abs() < 1e-6, "{} vs {}", a.2, b.2);
            }
        }

        /// A steady schedule sends exactly rate × length calls inside the step.
        #[test]
        fn steady_schedules_hold_the_rate(rate in 1u32..500, secs in 1u64..5, iat in iat(), functions in 1u32..50) {
            let length = Duration::from_secs(secs);
            let calls = steady_calls(f64::from(rate), length, functions, iat, 5, 1);
            prop_assert_eq!(calls.len() as u64, u64::from(rate) * secs);
            prop_assert!(calls.iter().all(|c| c.at < length && c.function < functions));
        }
    }

    #[test]
    fn equidistant_steady_calls_are_exactly_one_over_rate_apart() {
        let calls = steady_calls(1.0, Duration::from_millis(2500), 1, Iat::Equidistant, 1, 0);
        let at: Vec<f64> = calls.iter().map(|c| c.at.as_secs_f64()).collect();
        assert_eq!(at.len(), 2);
        assert!((at[0] - 0.5).abs() < 1e-9 && (at[1] - 1.5).abs() < 1e-9, "{at:?}");
    }

    #[test]
    fn equidistant_offsets_are_evenly_spaced_inside_the_period() {
        let offsets = period_offsets(3, Iat::Equidistant, &mut StdRng::seed_from_u64(0));
        assert_eq!(offsets, vec![0.25, 0.5, 0.75]);
        assert!(period_offsets(0, Iat::Exponential, &mut StdRng::seed_from_u64(0)).is_empty());
    }

    #[test]
    fn runtimes_are_clamped_to_one_millisecond_and_sixty_seconds() {
        assert_eq!(clamp_runtime_ms(0.2), 1);
        assert_eq!(clamp_runtime_ms(0.0), 1);
        assert_eq!(clamp_runtime_ms(1765.4), 1765);
        assert_eq!(clamp_runtime_ms(404_653.0), 60_000);
        assert_eq!(clamp_runtime_ms(f64::NAN), 1);
    }

    #[test]
    fn invocation_level_traces_keep_their_own_times_and_runtimes() {
        let trace = Trace {
            path: "fixture".into(),
            format: Format::Azure2021,
            minutes: 3,
            functions: vec![TraceFunction {
                id: "a/f".into(),
                memory_mib: None,
                arrivals: Arrivals::Calls(vec![
                    crate::trace::TracedCall { start_s: 10.0, duration_s: 0.5 },
                    crate::trace::TracedCall { start_s: 70.0, duration_s: 0.0001 },
                    crate::trace::TracedCall { start_s: 130.0, duration_s: 2.0 },
                ]),
            }],
        };
        let calls = trace_calls(&trace, Window { start_minute: 1, minutes: 2 }, Iat::Exponential, 0.5, 0);
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].at, calls[0].requested_ms), (Duration::from_secs(5), 1));
        assert_eq!((calls[1].at, calls[1].requested_ms), (Duration::from_secs(35), 2000));
    }
}
