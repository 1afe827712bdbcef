//! Container images against the real thing: images pushed to a real registry (Debian's
//! `docker-registry`), pulled into the worker's cache and run by the real runc, with the
//! process runtime's isolation. Each test has its own port range, cgroup parent, cache and
//! runc state, and checks that nothing is left.

mod support;

use std::time::Duration;

use baton_image::build::{RunConfig, layer, program_with_libraries, push};
use baton_image::{Credentials, ResolverSettings};
use baton_proto::cell::ExitReason;
use baton_proto::worker::RuntimeKind;
use baton_testkit::{Registry, raw_layer};
use baton_worker::RuntimeError;
use baton_worker::SandboxRuntime;
use support::oci::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_runs_as_an_isolated_sandbox_and_leaves_nothing_when_deleted() {
    let registry = Registry::start().await;
    let (reference, digest) = push_functions(&registry, "acme/hello:1.0").await;
    let h = harness("oci-echo", 15800).await;
    assert_eq!(h.runtime.kinds(), [RuntimeKind::Process, RuntimeKind::Oci]);

    let mut s = spec(&reference, &digest);
    s.env.insert("GREETING".into(), "hi".into());
    let created = h.runtime.create(id("img-1"), s).await.unwrap();
    assert_eq!(created.isolation.level(), "full", "{:?}", created.isolation);
    assert!(created.pulled_image, "the first sandbox pulled the image");

    // It answers as the process runtime's echo does.
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/a?x=1", created.endpoint))
        .body("payload")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((reply["path"].as_str(), reply["body"].as_str()), (Some("/a"), Some("payload")));

    // Its own pid namespace, an unprivileged uid of its own, no capabilities, no new
    // privileges, its cgroup where the process runtime would have put it.
    let pid = created.pid;
    let own_ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert_ne!(std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(), own_ns);
    let uid: u32 = status_field(pid, "Uid").split_whitespace().next().unwrap().parse().unwrap();
    assert!((2_000_000_000..=2_000_099_999).contains(&uid), "uid {uid} is not one of process.uid_range_*");
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2", "under a seccomp filter");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroups.contains(&format!("{}/img-1", h.parent)), "{cgroups}");

    // A second sandbox of the image needs no pull.
    let second = h.runtime.create(id("img-2"), spec(&reference, &digest)).await.unwrap();
    assert!(!second.pulled_image);

    // No function runs the image any more: it stays while its sandboxes do, then goes.
    let image_dir = h.cache.path().join("images");
    assert!(!h.runtime.drop_image(&digest).await, "in use");
    assert!(!files_in(&image_dir).is_empty());
    for sandbox in ["img-1", "img-2"] {
        h.runtime.delete(&id(sandbox), Duration::from_secs(1)).await.unwrap();
    }
    assert!(eventually(Duration::from_secs(2), || !alive(pid)).await, "the container's process is gone");
    h.assert_clean().await;
    assert_eq!(files_in(&image_dir), Vec::<std::path::PathBuf>::new(), "the unwanted image went with its last sandbox");
    assert_eq!(files_in(&h.cache.path().join("blobs")), Vec::<std::path::PathBuf>::new(), "and its layers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entrypoint_that_is_missing_or_exits_fails_with_its_stderr_and_leaves_nothing() {
    let registry = Registry::start().await;
    let (reference, digest) = push_functions(&registry, "acme/broken:1.0").await;
    let h = harness("oci-broken", 15830).await;

    let mut missing = spec(&reference, &digest);
    missing.image.as_mut().unwrap().command = vec!["/no/such/program".into()];
    let err = h.runtime.create(id("missing"), missing).await.unwrap_err();
    match &err {
        RuntimeError::ExitedDuringStartup { stderr_tail, .. } => {
            assert!(stderr_tail.contains("/no/such/program"), "{stderr_tail}")
        }
        other => panic!("{other}"),
    }
    h.assert_clean().await;

    let mut exits = spec(&reference, &digest);
    exits.image.as_mut().unwrap().command = vec!["/bin/busybox".into(), "sh".into()];
    exits.args = vec!["-c".into(), "echo cannot start: no config >&2; exit 3".into()];
    let err = h.runtime.create(id("exits"), exits).await.unwrap_err();
    match &err {
        RuntimeError::ExitedDuringStartup { how, stderr_tail, .. } => {
            assert_eq!(how, "exit status 3");
            assert!(stderr_tail.contains("cannot start: no config"), "{stderr_tail}");
        }
        other => panic!("{other}"),
    }
    h.assert_clean().await;

    // The root is read-only; the image's environment and the function's both apply.
    let mut probe = spec(&reference, &digest);
    probe.image.as_mut().unwrap().command = vec!["/bin/busybox".into(), "sh".into()];
    probe.env.insert("MINE".into(), "1".into());
    probe.args = vec![
        "-c".into(),
        "touch /usr/x 2>/dev/null && exit 10; touch /tmp/x || exit 11; [ \"$FROM_IMAGE$MINE\" = yes1 ] || exit 12; \
         exec /usr/local/bin/baton-fn-echo"
            .into(),
    ];
    let created = h.runtime.create(id("probe"), probe).await.unwrap();
    h.runtime.delete(&id("probe"), Duration::from_secs(1)).await.unwrap();
    assert!(eventually(Duration::from_secs(2), || !alive(created.pid)).await);
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_past_its_memory_limit_is_oom_killed_and_reported() {
    let registry = Registry::start().await;
    let (reference, digest) = push_functions(&registry, "acme/hog:1.0").await;
    let mut h = harness("oci-oom", 15860).await;
    let mut s = spec(&reference, &digest);
    s.image.as_mut().unwrap().command = vec!["/usr/local/bin/baton-fn-spin".into()];
    s.resources.memory_mib = 32;
    let created = h.runtime.create(id("hog"), s).await.unwrap();
    let result = reqwest::get(format!("http://{}/?alloc_mb=256", created.endpoint)).await;
    assert!(result.is_err() || !result.unwrap().status().is_success(), "the call cannot succeed");
    let exit =
        tokio::time::timeout(Duration::from_secs(10), h.exits.recv()).await.expect("an exit is reported").unwrap();
    assert_eq!(exit.id.as_str(), "hog");
    assert_eq!(exit.exit.reason, ExitReason::OomKilled, "{exit:?}");
    h.runtime.delete(&id("hog"), Duration::from_secs(1)).await.unwrap();
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_is_a_clear_error_and_a_cached_one_needs_no_registry() {
    let registry = Registry::start().await;
    let (reference, digest) = push_functions(&registry, "acme/cached:1.0").await;
    let h = harness("oci-pull", 15890).await;
    let pulled = h.runtime.pull(spec(&reference, &digest).image.as_ref().unwrap()).await.unwrap();
    assert!(!pulled.cached);
    let again = h.runtime.pull(spec(&reference, &digest).image.as_ref().unwrap()).await.unwrap();
    assert!(again.cached);

    // An image that is not there: final, and nothing is left.
    let unknown = format!("sha256:{}", "1".repeat(64));
    let err = h.runtime.create(id("unknown"), spec(&reference, &unknown)).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Image { retryable: false, .. }), "{err}");
    h.assert_clean().await;

    // With the registry gone, the pre-pulled image still starts.
    drop(registry);
    let created = h.runtime.create(id("cached"), spec(&reference, &digest)).await.unwrap();
    assert!(!created.pulled_image);
    h.runtime.delete(&id("cached"), Duration::from_secs(1)).await.unwrap();
    let other = format!("sha256:{}", "2".repeat(64));
    let err = h.runtime.create(id("down"), spec(&reference, &other)).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Image { retryable: true, .. }), "{err}");
    h.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_layer_image_runs_as_its_layers_say_and_a_hostile_layer_is_refused() {
    let registry = Registry::start().await;
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let echo = program_with_libraries(&bin("baton-fn-echo"), "/usr/local/bin/baton-fn-echo").unwrap();
    let run = RunConfig { entrypoint: vec!["/bin/sh".into()], ..RunConfig::default() };
    let push_layers = |name: &str, layers: Vec<Vec<u8>>| {
        let (reference, run) = (registry.image(name), run.clone());
        async move {
            let digest =
                push(&reference, layers, &run, &Credentials::Anonymous, &ResolverSettings::default()).await.unwrap();
            (reference, digest)
        }
    };
    // Three layers: busybox and a file; the file whited out and a symlink to busybox;
    // the echo function.
    let base = raw_layer(&[("bin/busybox", &busybox), ("etc/removed", b"gone")], &[]);
    let top = raw_layer(&[("etc/.wh.removed", b"")], &[("bin/sh", "/bin/busybox")]);
    let (reference, digest) = push_layers("acme/layers:1", vec![base, top, layer(&echo).unwrap()]).await;
    let h = harness("oci-layers", 15920).await;
    let mut s = spec(&reference, &digest);
    s.args = vec!["-c".into(), "[ ! -e /etc/removed ] || exit 20; exec /usr/local/bin/baton-fn-echo".into()];
    let created = h.runtime.create(id("layers"), s).await.unwrap();
    assert!(reqwest::get(format!("http://{}/", created.endpoint)).await.unwrap().status().is_success());
    h.runtime.delete(&id("layers"), Duration::from_secs(1)).await.unwrap();
    h.assert_clean().await;

    // A layer writing through `..`: refused before anything runs, final, nothing left.
    let hostile = raw_layer(&[("../../escaped", b"x")], &[]);
    let (reference, digest) = push_layers("acme/hostile:1", vec![hostile]).await;
    let err = h.runtime.create(id("hostile"), spec(&reference, &digest)).await.unwrap_err();
    assert!(matches!(&err, RuntimeError::Image { retryable: false, .. }), "{err}");
    assert!(err.to_string().contains(".."), "{err}");
    h.assert_clean().await;
    for place in [h.cache.path().join("escaped"), h.cache.path().parent().unwrap().join("escaped")] {
        assert!(!place.exists(), "{} was written", place.display());
    }
}

/// `/proc/<pid>/uid_map` as `(inside, outside, count)` rows.
fn uid_map(pid: u32) -> Vec<(u32, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    text.lines()
        .map(|line| {
            let n: Vec<u32> = line.split_whitespace().map(|f| f.parse().unwrap()).collect();
            (n[0], n[1], n[2])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_runs_as_its_images_user_only_where_the_operator_allows_and_never_as_the_hosts() {
    let registry = Registry::start().await;
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let echo = program_with_libraries(&bin("baton-fn-echo"), "/usr/local/bin/baton-fn-echo").unwrap();
    let accounts = raw_layer(
        &[
            ("bin/busybox", &busybox),
            ("etc/passwd", b"root:x:0:0:root:/:/bin/sh\napp:x:1000:1001::/:/bin/sh\n"),
            ("etc/group", b"root:x:0:\napp:x:1001:\n"),
        ],
        &[("bin/sh", "/bin/busybox")],
    );
    let push_as = |name: &str, user: &str| {
        let reference = registry.image(name);
        let run = RunConfig { entrypoint: vec!["/bin/sh".into()], user: user.into(), ..RunConfig::default() };
        let layers = vec![accounts.clone(), layer(&echo).unwrap()];
        async move {
            let digest =
                push(&reference, layers, &run, &Credentials::Anonymous, &ResolverSettings::default()).await.unwrap();
            (reference, digest)
        }
    };
    // The function checks who it is inside, then serves; a wrong identity exits at once.
    let checking = |reference: &str, digest: &str, uid: u32, gid: u32| {
        let mut s = spec(reference, digest);
        let check = format!("[ \"$(id -u):$(id -g)\" = {uid}:{gid} ] || exit 30; exec /usr/local/bin/baton-fn-echo");
        s.args = vec!["-c".into(), check];
        s
    };
    let (as_app, as_app_digest) = push_as("acme/as-app:1", "app").await;
    let (as_root, as_root_digest) = push_as("acme/as-root:1", "0").await;
    let (as_ghost, as_ghost_digest) = push_as("acme/as-ghost:1", "ghost").await;
    let in_pool = |uid: u32| (2_000_000_000..=2_000_099_999).contains(&uid);

    // Allowed: `app` is uid 1000, gid 1001 inside; outside, the sandbox's uid from the pool,
    // with root mapped to a second one. No capability either way.
    let h = harness_with("oci-user", 15980, |_, images| images.run_as_image_user = true).await;
    let app = h.runtime.create(id("as-app"), checking(&as_app, &as_app_digest, 1000, 1001)).await.unwrap();
    let host_uid: u32 = status_field(app.pid, "Uid").split_whitespace().next().unwrap().parse().unwrap();
    assert!(in_pool(host_uid), "uid {host_uid} on the host");
    let map = uid_map(app.pid);
    assert_eq!(map.len(), 2, "{map:?}");
    assert_eq!((map[0].0, map[0].2, map[1]), (0, 1, (1000, host_uid, 1)), "{map:?}");
    assert!(in_pool(map[0].1) && map[0].1 != host_uid, "root is another uid of the pool: {map:?}");
    assert_eq!(status_field(app.pid, "CapEff"), "0000000000000000");
    assert!(reqwest::get(format!("http://{}/", app.endpoint)).await.unwrap().status().is_success());

    // `root` in its image is root in its namespace only: an unprivileged uid on the host,
    // without a capability, on a read-only root.
    let mut root_spec = checking(&as_root, &as_root_digest, 0, 0);
    root_spec.args[1] = format!("touch /bin/x 2>/dev/null && exit 31; {}", root_spec.args[1]);
    let root = h.runtime.create(id("as-root"), root_spec).await.unwrap();
    let map = uid_map(root.pid);
    assert!(map.len() == 1 && map[0].0 == 0 && in_pool(map[0].1), "{map:?}");
    assert_eq!(status_field(root.pid, "CapEff"), "0000000000000000");

    // A user the image does not have: refused, final, nothing left.
    let err = h.runtime.create(id("as-ghost"), spec(&as_ghost, &as_ghost_digest)).await.unwrap_err();
    assert!(matches!(&err, RuntimeError::Image { retryable: false, .. }), "{err}");
    assert!(err.to_string().contains("ghost"), "{err}");
    for sandbox in ["as-app", "as-root"] {
        h.runtime.delete(&id(sandbox), Duration::from_secs(1)).await.unwrap();
    }
    h.assert_clean().await;
    drop(h);

    // Not allowed (the default): the image's user is not used; the sandbox's own uid is.
    let h = harness("oci-user-off", 15980).await;
    let mut off = spec(&as_app, &as_app_digest);
    off.args = vec!["-c".into(), "exec /usr/local/bin/baton-fn-echo".into()];
    let own = h.runtime.create(id("as-app-off"), off).await.unwrap();
    let uid: u32 = status_field(own.pid, "Uid").split_whitespace().next().unwrap().parse().unwrap();
    assert!(in_pool(uid), "uid {uid}");
    assert_eq!(uid_map(own.pid), [(0, 0, u32::MAX)], "no user namespace");
    h.runtime.delete(&id("as-app-off"), Duration::from_secs(1)).await.unwrap();
    h.assert_clean().await;
}
