//! The spin function's handler, shared by `baton-fn-spin` and the emulated runtime's
//! in-process function server: runs for the duration given by query `ms` or header
//! `X-Duration-Ms`, by busy-spin (default) or sleep (query `mode=sleep` or header
//! `X-Duration-Mode: sleep`), and answers with `X-Execution-Time-Us`. Query `alloc_mb=N`
//! first allocates and touches N MiB (to exercise memory limits); query `fail_percent=P`
//! (or header `X-Fail-Percent`) answers `503` instead, after the run, with probability
//! P % (to exercise retries).

use std::time::{Duration, Instant};

use hyper::{Response, StatusCode};

use crate::{Body, Call, json, query_param};

/// Longest duration accepted, matching the trace replayer's clamp.
pub const MAX_MS: u64 = 60_000;

fn param<'a>(call: &'a Call, query: &str, header: &str) -> Option<&'a str> {
    query_param(call.head.uri.query(), query).or_else(|| call.head.headers.get(header).and_then(|v| v.to_str().ok()))
}

fn bad_request(message: String) -> Response<Body> {
    json(StatusCode::BAD_REQUEST, &serde_json::json!({"error": {"code": "bad_request", "message": message}}))
}

/// Handles one call.
pub async fn handle(call: Call) -> Response<Body> {
    let ms = match param(&call, "ms", "x-duration-ms").map(str::parse::<u64>) {
        None => 0,
        Some(Ok(ms)) if ms <= MAX_MS => ms,
        Some(_) => {
            return bad_request(format!("ms must be a whole number of milliseconds in 0..={MAX_MS}"));
        }
    };
    let sleep = match param(&call, "mode", "x-duration-mode") {
        None | Some("spin") => false,
        Some("sleep") => true,
        Some(other) => {
            return bad_request(format!("mode {other:?} is neither \"spin\" nor \"sleep\""));
        }
    };
    let alloc_mb = match query_param(call.head.uri.query(), "alloc_mb").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(mb)) => mb,
        Some(Err(_)) => return bad_request("alloc_mb must be a whole number of MiB".into()),
    };
    let fail_percent = match param(&call, "fail_percent", "x-fail-percent").map(str::parse::<u8>) {
        None => 0,
        Some(Ok(p)) if p <= 100 => p,
        Some(_) => return bad_request("fail_percent must be a whole number in 0..=100".into()),
    };
    let started = Instant::now();
    let touched = touch_memory(alloc_mb);
    let duration = Duration::from_millis(ms);
    if sleep {
        tokio::time::sleep(duration.saturating_sub(started.elapsed())).await;
    } else {
        let _ = tokio::task::spawn_blocking(move || {
            while started.elapsed() < duration {
                std::hint::spin_loop();
            }
        })
        .await;
    }
    let took = started.elapsed().as_micros() as u64;
    let failed = fail_percent > 0 && percentile() < u64::from(fail_percent);
    let mut response = json(
        if failed { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK },
        &serde_json::json!({
            "requested_ms": ms,
            "mode": if sleep { "sleep" } else { "spin" },
            "execution_time_us": took,
            "allocated_mib": touched,
        }),
    );
    response.headers_mut().insert("x-execution-time-us", took.into());
    response
}

/// A draw from 0..100: the standard library's randomly keyed hasher over a counter.
fn percentile() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static DRAWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(DRAWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.finish() % 100
}

/// Allocates `mib` MiB and writes every page, so the memory is really charged.
fn touch_memory(mib: usize) -> usize {
    if mib == 0 {
        return 0;
    }
    let mut block = vec![0u8; mib << 20];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&block);
    mib
}
