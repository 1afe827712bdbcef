//! `baton certs`: an authority and certificates as files, keys private to their owner, and
//! certificates the TLS configurations of `baton_service::tls` accept.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use baton_service::tls::{client_config, server_config};
use baton_testkit::bin;

fn baton(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("baton")).arg("certs").args(args).arg("--dir").arg(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn an_authority_issues_certificates_the_tls_configurations_accept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, text) = baton(d, &["init"]);
    assert!(ok, "{text}");
    let (ok, text) = baton(d, &["issue", "shard-manager", "--host", "127.0.0.1", "--host", "sm.example"]);
    assert!(ok, "{text}");
    let (ok, text) = baton(d, &["issue", "operator", "--name", "alice"]);
    assert!(ok, "{text}");
    assert!(!text.contains("PRIVATE KEY"), "a key is never printed: {text}");

    let mode = |f: &str| std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
    for key in ["ca.key", "shard-manager.key", "alice.key"] {
        assert_eq!(mode(key), 0o600, "{key}");
    }
    assert_eq!(mode("ca.pem"), 0o644);
    let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    server_config(&read("ca.pem"), &read("shard-manager.pem"), &read("shard-manager.key")).unwrap();
    client_config(&read("ca.pem"), &read("alice.pem"), &read("alice.key")).unwrap();

    // Refused, clearly, and nothing overwritten.
    let ca_before = read("ca.pem");
    let (ok, text) = baton(d, &["init"]);
    assert!(!ok && text.contains("already holds an authority"), "{text}");
    assert_eq!(read("ca.pem"), ca_before);
    let (ok, text) = baton(d, &["issue", "root"]);
    assert!(!ok && text.contains("unknown role \"root\""), "{text}");
    let empty = tempfile::tempdir().unwrap();
    let (ok, text) = baton(empty.path(), &["issue", "router"]);
    assert!(!ok && text.contains("baton certs init"), "{text}");
}
