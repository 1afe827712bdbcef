//! The async queue's contract (`router/src/calls/store.rs`), held by both stores: a call
//! accepted is taken once, written only under its lease, settled once; a lease that lapses
//! (its router died) lets another router take the call, and the old holder's writes are
//! then refused; retries come back when due; dead letters are listed, redriven and purged.

use std::time::Duration;

use baton_router::calls::embedded::EmbeddedCalls;
use baton_router::calls::record::Request;
use baton_router::calls::redis_store::RedisCalls;
use baton_router::calls::{CallRecord, CallStore, Next, State, now_ms};
use bytes::Bytes;

fn record(id: &str, function: &str) -> CallRecord {
    let request = Request {
        id: id.into(),
        tenant: "acme".into(),
        function: function.into(),
        method: "POST".into(),
        path: "/".into(),
        headers: vec![("content-type".into(), "text/plain".into())],
        callback: None,
    };
    CallRecord::accepted(request, now_ms(), 1)
}

/// What both stores must do, for one router's view `a`.
async fn contract(a: &dyn CallStore) {
    let body = Bytes::from_static(b"payload");
    a.accept(&record("c1", "f"), &body).await.unwrap();
    a.accept(&record("c2", "f"), &body).await.unwrap();
    let mut taken = a.take(10).await.unwrap();
    taken.sort_by(|x, y| x.record.id.cmp(&y.record.id));
    assert_eq!(taken.iter().map(|t| t.record.id.as_str()).collect::<Vec<_>>(), ["c1", "c2"]);
    assert_eq!(taken[0].body, body);
    assert!(a.take(10).await.unwrap().is_empty(), "a leased call is not taken twice");
    assert_eq!(a.extend(&[taken[0].lease.clone()]).await.unwrap(), Vec::<String>::new());

    // c1 succeeds: recorded and off the queue in one write.
    let mut done = taken[0].record.clone();
    done.state = State::Succeeded;
    done.attempts = 1;
    assert!(a.update(&taken[0].lease, &done).await.unwrap());
    assert!(a.settle(&taken[0].lease, &done, Next::Done { keep_secs: 60 }).await.unwrap());
    assert!(!a.settle(&taken[0].lease, &done, Next::Done { keep_secs: 60 }).await.unwrap(), "settled once");
    assert_eq!(a.get("c1").await.unwrap().unwrap().state, State::Succeeded);

    // c2 fails and waits 300 ms for its retry, then comes back.
    let mut retry = taken[1].record.clone();
    retry.attempts = 1;
    let due = now_ms() + 300;
    assert!(a.settle(&taken[1].lease, &retry, Next::Later { due_ms: due }).await.unwrap());
    assert!(a.take(10).await.unwrap().is_empty(), "not before it is due");
    tokio::time::sleep(Duration::from_millis(350)).await;
    a.promote(now_ms()).await.unwrap();
    let again = a.take(10).await.unwrap();
    assert_eq!((again.len(), again[0].record.attempts), (1, 1), "back, with its try counted");

    // It dies: into the function's dead letters, with its body, until redriven or purged.
    let mut dead = again[0].record.clone();
    dead.state = State::Dead;
    assert!(a.settle(&again[0].lease, &dead, Next::Dead { keep_secs: 60 }).await.unwrap());
    let letters = a.dead_letters("acme/f", 10).await.unwrap();
    assert_eq!((letters.len(), letters[0].1.clone()), (1, body.clone()));
    assert!(a.dead_letters("acme/other", 10).await.unwrap().is_empty());
    assert_eq!(a.redrive("acme/f", now_ms()).await.unwrap(), 1);
    assert!(a.dead_letters("acme/f", 10).await.unwrap().is_empty());
    let redriven = a.take(10).await.unwrap();
    assert_eq!((redriven[0].record.state, redriven[0].record.attempts), (State::Queued, 0));
    assert!(a.settle(&redriven[0].lease, &dead, Next::Dead { keep_secs: 60 }).await.unwrap());
    assert_eq!(a.purge("acme/f").await.unwrap(), 1);
    assert!(a.get("c2").await.unwrap().is_none(), "purged");
    assert_eq!(a.depth().await.unwrap().pending, 0);
}

#[tokio::test]
async fn the_embedded_queue_keeps_the_contract_and_requeues_running_calls_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calls.redb");
    contract(&EmbeddedCalls::open(&path).unwrap()).await;

    // A router killed mid-try: its calls are queued again when it starts over.
    let first = EmbeddedCalls::open(&path).unwrap();
    first.accept(&record("c3", "f"), &Bytes::new()).await.unwrap();
    let taken = first.take(1).await.unwrap();
    let mut running = taken[0].record.clone();
    running.state = State::Running;
    running.attempts = 1;
    assert!(first.update(&taken[0].lease, &running).await.unwrap());
    drop(first);
    let restarted = EmbeddedCalls::open(&path).unwrap();
    let again = restarted.take(1).await.unwrap();
    assert_eq!((again[0].record.id.as_str(), again[0].record.attempts), ("c3", 1), "its cut-short try counts");
}

#[tokio::test]
async fn the_redis_queue_keeps_the_contract_and_fences_a_router_whose_lease_lapsed() {
    let url =
        std::env::var("BATON_TEST_REDIS_URL").expect("BATON_TEST_REDIS_URL is not set: run through scripts/test.sh");
    let prefix = format!("store-{:x}", std::process::id());
    let lease = Duration::from_secs(1);
    let a = RedisCalls::connect(&url, &prefix, "router-a".into(), lease).await.unwrap();
    contract(&a).await;

    // Router a takes a call and goes silent; after a lease, router b takes it.
    let b = RedisCalls::connect(&url, &prefix, "router-b".into(), lease).await.unwrap();
    a.accept(&record("c4", "g"), &Bytes::new()).await.unwrap();
    let held = a.take(1).await.unwrap();
    assert_eq!(held.len(), 1);
    assert!(b.take(1).await.unwrap().is_empty(), "not while a's lease holds");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(a.extend(&[held[0].lease.clone()]).await.unwrap().is_empty(), "a extends its lease");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(b.take(1).await.unwrap().is_empty(), "an extended lease holds past the first lapse");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let taken_over = b.take(1).await.unwrap();
    assert_eq!(taken_over.len(), 1, "b takes the call once a's lease lapsed");
    // a, late, can neither extend nor write nor settle; b's outcome stands.
    assert_eq!(a.extend(&[held[0].lease.clone()]).await.unwrap(), vec![held[0].lease.clone()]);
    let mut stale = held[0].record.clone();
    stale.state = State::Failed;
    assert!(!a.update(&held[0].lease, &stale).await.unwrap());
    assert!(!a.settle(&held[0].lease, &stale, Next::Done { keep_secs: 60 }).await.unwrap());
    let mut done = taken_over[0].record.clone();
    done.state = State::Succeeded;
    assert!(b.settle(&taken_over[0].lease, &done, Next::Done { keep_secs: 60 }).await.unwrap());
    assert_eq!(a.get("c4").await.unwrap().unwrap().state, State::Succeeded);
}
