//! Decision tests for [`ControlPlaneState`]: events in, commands out.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use baton_model::function::FunctionSpec;

fn config() -> StateConfig {
    StateConfig {
        worker_timeout: Duration::from_secs(3),
        load_expiry: Duration::from_secs(2),
        scale_down_drain: Duration::from_secs(1),
        create_retry: Duration::from_secs(1),
        placement: PlacementPolicy::LeastAllocated,
        id_prefix: "t".into(),
    }
}

fn spec(name: &str, max_scale: u32) -> FunctionSpec {
    let mut s = FunctionSpec::from_json(format!(r#"{{"name":"{name}","runtime":"emulated"}}"#).as_bytes()).unwrap();
    s.scaling.max_scale = max_scale;
    s
}

fn worker(id: &str, max: u32) -> WorkerRecord {
    WorkerRecord {
        node_id: node(id),
        address: format!("127.0.0.1:7{id}"),
        runtime: baton_model::Runtime::Emulated,
        runtimes: Vec::new(),
        cpu_millis: 100_000,
        memory_mib: 100_000,
        max_sandboxes: max,
    }
}

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap()
}

fn creates(commands: &[Command]) -> Vec<(SandboxId, NodeId)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Create { sandbox_id, node_id, .. } => Some((sandbox_id.clone(), node_id.clone())),
            _ => None,
        })
        .collect()
}

/// A state with listed workers and one function.
fn ready_state(workers: &[(&str, u32)], function: FunctionSpec) -> (ControlPlaneState, Instant) {
    let now = Instant::now();
    let mut st = ControlPlaneState::new(config());
    for (id, max) in workers {
        st.register_worker(worker(id, *max), now);
        st.worker_listing(&node(id), vec![]);
    }
    st.put_function(function);
    (st, now)
}

#[test]
fn queued_load_scales_from_zero_within_max_scale_and_capacity() {
    let (mut st, now) = ready_state(&[("1", 4), ("2", 4)], spec("f", 10));
    assert!(creates(&st.evaluate("f", now)).is_empty(), "no load, no sandbox");
    let urgent = st.report_load("dp", &[("f".into(), 0, 30)], now);
    assert_eq!(urgent, vec!["f".to_string()]);
    let planned = creates(&st.evaluate("f", now));
    assert_eq!(planned.len(), 8, "10 wanted, the two workers hold 4 each");
    assert_eq!(planned.iter().filter(|(_, n)| n == "1").count(), 4);
    assert_eq!(st.scale("f"), Scale { ready: 0, creating: 8, desired: 10 });
    // Nothing is created twice while creations are in flight.
    assert!(creates(&st.evaluate("f", now)).is_empty());
    // A ready sandbox enters the routing table.
    let commands = st.created(&planned[0].0, Ok(("127.0.0.1:9".into(), Creation::default())), now);
    assert!(matches!(&commands[0], Command::Publish(u) if u.routing.as_ref().unwrap().endpoints.len() == 1));
}

#[test]
fn the_longest_federated_name_still_gets_valid_unique_sandbox_ids() {
    // A federated cell names functions `tenant.name`: up to 63 + 1 + 63 bytes.
    let name = format!("{}.{}", "t".repeat(63), "f".repeat(63));
    let (mut st, now) = ready_state(&[("1", 4)], spec(&name, 3));
    st.report_load("dp", &[(name.clone(), 0, 3)], now);
    let planned = creates(&st.evaluate(&name, now));
    assert_eq!(planned.len(), 3);
    let ids: std::collections::BTreeSet<&str> = planned.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 3, "unique: {ids:?}");
    for id in ids {
        assert!(id.len() <= baton_proto::MAX_ID_LEN && id.starts_with("ttt"), "{id}");
    }
}

/// The routing a command publishes for `f`, if it is a publication.
fn published(commands: &[Command]) -> Option<Routing> {
    commands.iter().find_map(|c| match c {
        Command::Publish(u) => u.routing.clone(),
        _ => None,
    })
}

#[test]
fn failed_creations_back_off_and_tell_data_planes_why_until_the_next_try() {
    let (mut st, now) = ready_state(&[("1", 4)], spec("f", 1));
    let at = |ms: u64| now + Duration::from_millis(ms);
    st.report_load("dp", &[("f".into(), 0, 1)], now);
    let planned = creates(&st.evaluate("f", now));
    // The failure is published: data planes answer calls at once, saying why.
    let routing = published(&st.created(&planned[0].0, Err("exec: no such file".into()), now)).unwrap();
    assert_eq!(routing.creation_error.as_deref(), Some("exec: no such file"));
    assert!(creates(&st.evaluate("f", at(900))).is_empty(), "within the first back-off (1 s)");
    // Once it is over, the error is withdrawn (calls queue again) and the next try made.
    st.report_load("dp", &[("f".into(), 0, 1)], at(1100));
    let commands = st.evaluate("f", at(1100));
    assert_eq!(published(&commands).unwrap().creation_error, None);
    let retry = creates(&commands);
    assert_eq!(retry.len(), 1);
    // A second failure in a row waits twice as long.
    st.created(&retry[0].0, Err("exec: no such file".into()), at(1100));
    st.report_load("dp", &[("f".into(), 0, 1)], at(2900));
    assert!(creates(&st.evaluate("f", at(2900))).is_empty(), "within the second back-off (2 s)");
    st.report_load("dp", &[("f".into(), 0, 1)], at(3200));
    let third = creates(&st.evaluate("f", at(3200)));
    assert_eq!(third.len(), 1);
    // A success ends it all: the next failure starts again at 1 s.
    let ready = published(&st.created(&third[0].0, Ok(("127.0.0.1:9".into(), Creation::default())), at(3200))).unwrap();
    assert_eq!((ready.endpoints.len(), ready.creation_error), (1, None));
}

#[test]
fn a_new_spec_is_tried_at_once_whatever_the_back_off() {
    let (mut st, now) = ready_state(&[("1", 4)], spec("f", 1));
    st.report_load("dp", &[("f".into(), 0, 1)], now);
    let planned = creates(&st.evaluate("f", now));
    st.created(&planned[0].0, Err("boom".into()), now);
    let (_, commands) = st.put_function(spec("f", 1));
    assert_eq!(published(&commands).unwrap().creation_error, None);
    st.report_load("dp", &[("f".into(), 0, 1)], now);
    assert_eq!(creates(&st.evaluate("f", now)).len(), 1);
}

proptest::proptest! {
    #[test]
    fn the_busiest_are_at_most_k_and_none_left_out_is_busier(
        counts in proptest::collection::vec((0u32..50, 0u32..50, 0u32..10), 0..60),
        k in 0usize..30,
    ) {
        let all: Vec<(String, Scale)> = counts
            .iter()
            .enumerate()
            .map(|(i, &(desired, ready, creating))| (format!("t.f{i}"), Scale { desired, ready, creating }))
            .collect();
        let size = |s: &Scale| s.desired.max(s.ready + s.creating);
        let top = super::busiest(all.clone(), k);
        proptest::prop_assert_eq!(top.len(), k.min(all.len()));
        proptest::prop_assert!(top.windows(2).all(|w| size(&w[0].1) >= size(&w[1].1)));
        let least = top.iter().map(|(_, s)| size(s)).min();
        for (name, scale) in &all {
            if !top.iter().any(|(n, _)| n == name) {
                proptest::prop_assert!(least.is_none_or(|least| size(scale) <= least), "{name} left out");
            }
        }
    }

    #[test]
    fn the_back_off_starts_at_the_base_grows_and_stays_under_the_cap(base_ms in 1u64..5000, failures in 1u32..100) {
        let base = Duration::from_millis(base_ms);
        let wait = creation_backoff(base, failures);
        proptest::prop_assert_eq!(creation_backoff(base, 1), base);
        proptest::prop_assert!(wait >= base && wait <= MAX_CREATION_BACKOFF.max(base));
        proptest::prop_assert!(creation_backoff(base, failures + 1) >= wait);
    }
}

#[test]
fn a_silent_worker_is_down_and_its_sandboxes_leave_the_routing() {
    let (mut st, now) = ready_state(&[("1", 4), ("2", 4)], spec("f", 2));
    st.report_load("dp", &[("f".into(), 2, 0)], now);
    let planned = creates(&st.evaluate("f", now));
    for (id, _) in &planned {
        st.created(id, Ok((format!("ep-{id}"), Creation::default())), now);
    }
    assert_eq!(st.scale("f").ready, 2);
    let later = now + Duration::from_secs(4);
    st.heartbeat("2", later).unwrap();
    let commands = st.check_workers(later);
    assert_eq!(st.sandboxes_on("1"), 0);
    assert_eq!(st.scale("f").ready, 1);
    assert!(matches!(&commands[..], [Command::Publish(u)] if u.routing.as_ref().unwrap().endpoints.len() == 1));
    // Replacements go to the live worker only.
    st.report_load("dp", &[("f".into(), 2, 0)], later);
    let replacements = creates(&st.evaluate("f", later));
    assert_eq!(replacements.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(), vec!["2"]);
}

#[test]
fn after_a_restart_nothing_scales_until_known_workers_are_listed_and_their_sandboxes_are_adopted() {
    let now = Instant::now();
    let mut st = ControlPlaneState::new(config());
    let commands = st.recover(vec![spec("f", 5)], vec![worker("1", 10)], now);
    assert!(commands.iter().any(|c| matches!(c, Command::List { node_id, .. } if node_id == "1")));
    st.report_load("dp", &[("f".into(), 3, 0)], now);
    assert!(creates(&st.evaluate("f", now)).is_empty(), "worker 1 not listed yet");
    let listed = |id: &str, function: &str| ListedSandbox {
        sandbox_id: SandboxId::new(id).unwrap(),
        function: function.into(),
        endpoint: format!("ep-{id}"),
        running: true,
    };
    let commands = st.worker_listing(
        &node("1"),
        vec![listed("f-old-1", "f"), listed("f-old-2", "f"), listed("gone-1", "deleted-fn")],
    );
    assert!(commands.iter().any(|c| matches!(c, Command::Delete { sandbox_id, .. } if sandbox_id == "gone-1")));
    assert_eq!(st.scale("f").ready, 2);
    // Three wanted, two recovered: exactly one more is created.
    assert_eq!(creates(&st.evaluate("f", now)).len(), 1);
    // And the hold keeps recovered sandboxes through a quiet stable window.
    st.report_load("dp", &[("f".into(), 0, 0)], now + Duration::from_secs(10));
    let commands = st.evaluate("f", now + Duration::from_secs(10));
    assert!(!commands.iter().any(|c| matches!(c, Command::Delete { .. })));
}

#[test]
fn a_busy_function_s_retired_sandboxes_stay_until_its_timeout() {
    let mut f = spec("f", 3);
    f.scaling.stable_window = Duration::from_secs(2);
    f.scaling.panic_window = Duration::from_secs(1);
    f.timeout = Duration::from_secs(65);
    let (mut st, now) = ready_state(&[("1", 10)], f);
    st.report_load("dp", &[("f".into(), 3, 0)], now);
    for (id, _) in creates(&st.evaluate("f", now)) {
        st.created(&id, Ok((format!("ep-{id}"), Creation::default())), now);
    }
    // Still one long call in flight when the stable window says one sandbox is enough:
    // the two retired ones may be running it, so they stay until the timeout.
    let later = now + Duration::from_secs(5);
    st.report_load("dp", &[("f".into(), 1, 0)], later);
    let afters: Vec<Duration> = st
        .evaluate("f", later)
        .iter()
        .filter_map(|c| match c {
            Command::Delete { after, .. } => Some(*after),
            _ => None,
        })
        .collect();
    assert_eq!(afters, vec![Duration::from_secs(65); 2]);
    let commands = st.delete_function("f").unwrap();
    assert!(
        commands.iter().all(|c| !matches!(c, Command::Delete { after, .. } if *after != Duration::from_secs(65))),
        "deleting a function with calls in flight lets them finish"
    );
}

#[test]
fn scale_down_retires_the_newest_and_deleting_a_function_retires_everything() {
    let mut f = spec("f", 3);
    f.scaling.stable_window = Duration::from_secs(2);
    f.scaling.panic_window = Duration::from_secs(1);
    f.scaling.scale_to_zero_grace = Duration::from_secs(1);
    let (mut st, now) = ready_state(&[("1", 10)], f);
    st.report_load("dp", &[("f".into(), 3, 0)], now);
    for (id, _) in creates(&st.evaluate("f", now)) {
        st.created(&id, Ok((format!("ep-{id}"), Creation::default())), now);
    }
    let later = now + Duration::from_secs(5);
    st.report_load("dp", &[("f".into(), 0, 0)], later);
    let commands = st.evaluate("f", later);
    let deleted: Vec<_> = commands
        .iter()
        .filter(|c| matches!(c, Command::Delete { after, .. } if *after == Duration::from_secs(1)))
        .collect();
    assert_eq!(deleted.len(), 3, "idle past the grace: scale to zero, draining first");
    assert_eq!(st.scale("f").ready, 0);
    let commands = st.delete_function("f").unwrap();
    assert!(matches!(&commands[0], Command::Publish(u) if u.routing.is_none()));
    assert!(st.delete_function("f").is_none());
}

#[test]
fn a_worker_that_cannot_be_listed_does_not_hold_up_scaling() {
    let now = Instant::now();
    let mut st = ControlPlaneState::new(config());
    st.recover(vec![spec("f", 5)], vec![worker("1", 10), worker("2", 10)], now);
    st.worker_listing(&node("2"), vec![]);
    st.report_load("dp", &[("f".into(), 0, 1)], now);
    assert!(creates(&st.evaluate("f", now)).is_empty(), "waiting for worker 1's listing");
    st.listing_failed("1");
    assert_eq!(creates(&st.evaluate("f", now)).len(), 1);
}

fn image_spec(name: &str, digest_byte: char) -> FunctionSpec {
    let mut s = FunctionSpec::from_json(format!(r#"{{"name":"{name}","image":"r.example/acme/{name}:1"}}"#).as_bytes())
        .unwrap();
    s.image_digest = format!("sha256:{}", digest_byte.to_string().repeat(64));
    s
}

fn image_worker(id: &str) -> WorkerRecord {
    WorkerRecord { runtime: baton_model::Runtime::Process, runtimes: vec![baton_model::Runtime::Oci], ..worker(id, 10) }
}

fn pulls(commands: &[Command]) -> Vec<(String, String)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Pull { node_id, spec, .. } => Some((node_id.to_string(), spec.image_digest.clone())),
            _ => None,
        })
        .collect()
}

fn drops(commands: &[Command]) -> Vec<(String, String)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::DropImage { node_id, digest, .. } => Some((node_id.to_string(), digest.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn images_are_pulled_where_they_will_run_and_dropped_when_no_function_runs_them() {
    let now = Instant::now();
    let mut st = ControlPlaneState::new(config());
    st.register_worker(image_worker("1"), now);
    st.register_worker(worker("2", 10), now);
    let a = |c: char| format!("sha256:{}", c.to_string().repeat(64));

    // A new function's image goes to the workers that run images, only.
    let (_, commands) = st.put_function(image_spec("f", 'a'));
    assert_eq!(pulls(&commands), [("1".to_string(), a('a'))]);
    // The same spec again pulls nothing; a new digest pulls it and drops the old one.
    assert!(pulls(&st.put_function(image_spec("f", 'a')).1).is_empty());
    let commands = st.put_function(image_spec("f", 'b')).1;
    assert_eq!(pulls(&commands), [("1".to_string(), a('b'))]);
    assert_eq!(drops(&commands), [("1".to_string(), a('a'))]);

    // A worker that joins later pulls every image of the cell.
    st.put_function(image_spec("g", 'b'));
    st.put_function(spec("h", 1));
    let commands = st.register_worker(image_worker("3"), now);
    assert_eq!(pulls(&commands), [("3".to_string(), a('b')), ("3".to_string(), a('b'))]);

    // An image another function still runs stays; the last one's delete drops it.
    assert!(drops(&st.delete_function("f").unwrap()).is_empty());
    let mut dropped = drops(&st.delete_function("g").unwrap());
    dropped.sort();
    assert_eq!(dropped, [("1".to_string(), a('b')), ("3".to_string(), a('b'))]);
    assert!(drops(&st.delete_function("h").unwrap()).is_empty(), "a process function has no image");
}

#[test]
fn a_new_build_replaces_running_sandboxes_and_a_scaling_change_does_not() {
    let (mut st, now) = ready_state(&[("1", 4)], spec("f", 4));
    st.report_load("dp", &[("f".into(), 0, 1)], now);
    let planned = creates(&st.evaluate("f", now));
    assert_eq!(planned.len(), 1);
    st.created(&planned[0].0, Ok(("127.0.0.1:9".into(), Creation::default())), now);
    let deletes = |commands: &[Command]| {
        commands
            .iter()
            .filter(|c| matches!(c, Command::Delete { sandbox_id, .. } if *sandbox_id == planned[0].0))
            .count()
    };

    let mut scaled = spec("f", 8);
    scaled.scaling.target_concurrency = 2.0;
    assert_eq!(deletes(&st.put_function(scaled.clone()).1), 0, "same build, new scaling");
    let mut rebuilt = scaled;
    rebuilt.env.insert("VERSION".into(), "2".into());
    let commands = st.put_function(rebuilt);
    assert_eq!(deletes(&commands.1), 1, "the old build's sandbox is retired");
    let published = commands.1.iter().find_map(|c| match c {
        Command::Publish(u) => Some(u.routing.as_ref().map(|r| r.endpoints.len()).unwrap_or(0)),
        _ => None,
    });
    assert_eq!(published, Some(0), "and out of the routing at once");
}

#[test]
fn a_failed_creation_is_the_functions_status_until_a_success_or_a_new_deployment() {
    let (mut st, now) = ready_state(&[("1", 4)], spec("f", 4));
    st.report_load("dp", &[("f".into(), 0, 1)], now);
    let first = creates(&st.evaluate("f", now));
    st.created(&first[0].0, Err("exit status 127: /app: not found".into()), now);
    assert_eq!(st.last_failures(), [("f".to_string(), "exit status 127: /app: not found".to_string())]);
    // The back-off ending does not clear it; a success does.
    let later = now + Duration::from_secs(120);
    st.report_load("dp", &[("f".into(), 0, 1)], later);
    let second = creates(&st.evaluate("f", later));
    assert_eq!(st.last_failures().len(), 1, "still failing while the next try runs");
    st.created(&second[0].0, Ok(("127.0.0.1:9".into(), Creation::default())), later);
    assert!(st.last_failures().is_empty());
    // So does deploying it again.
    st.report_load("dp", &[("f".into(), 0, 5)], later);
    let third = creates(&st.evaluate("f", later));
    st.created(&third[0].0, Err("boom".into()), later);
    assert_eq!(st.last_failures().len(), 1);
    st.put_function(spec("f", 4));
    assert!(st.last_failures().is_empty());
}

#[test]
fn every_field_a_sandbox_is_started_with_makes_a_new_build() {
    let base = spec("f", 4);
    type Change = fn(&mut FunctionSpec);
    let changes: [(&str, Change); 8] = [
        ("executable", |s| s.executable = "/other".into()),
        ("image_digest", |s| s.image_digest = format!("sha256:{}", "c".repeat(64))),
        ("command", |s| s.command = vec!["/app".into()]),
        ("port", |s| s.port = Some(9000)),
        ("args", |s| s.args.push("-v".into())),
        ("env", |s| drop(s.env.insert("A".into(), "1".into()))),
        ("resources", |s| s.resources.memory_mib += 1),
        ("runtime", |s| {
            use baton_model::function::Runtime;
            s.runtime = if s.runtime == Runtime::Process { Runtime::Emulated } else { Runtime::Process };
        }),
    ];
    for (field, change) in changes {
        let mut changed = base.clone();
        change(&mut changed);
        assert!(!same_build(&base, &changed), "{field} changed: a new build");
    }
    let mut rescaled = base.clone();
    rescaled.scaling.max_scale += 1;
    rescaled.timeout += Duration::from_secs(1);
    assert!(same_build(&base, &rescaled), "scaling and timeout are not the build");
}
