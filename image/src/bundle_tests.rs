use super::*;

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn image() -> ImageConfig {
    ImageConfig {
        entrypoint: strings(&["/app"]),
        cmd: strings(&["--serve"]),
        env: strings(&["PATH=/app/bin", "MODE=image", "EMPTY"]),
        working_dir: "/srv".into(),
        exposed_ports: vec![],
        user: String::new(),
    }
}

#[test]
fn the_functions_command_and_args_replace_the_images_as_kubernetes_does() {
    let image = image();
    let (command, args) = (strings(&["/other", "-v"]), strings(&["--port", "8080"]));
    assert_eq!(argv(&image, None, None), ["/app", "--serve"]);
    assert_eq!(argv(&image, None, Some(&args)), ["/app", "--port", "8080"]);
    assert_eq!(argv(&image, Some(&command), None), ["/other", "-v"], "a command drops the image's Cmd too");
    assert_eq!(argv(&image, Some(&command), Some(&args)), ["/other", "-v", "--port", "8080"]);
}

#[test]
fn the_functions_environment_overrides_the_images_by_name() {
    let over = BTreeMap::from([("MODE".to_string(), "function".to_string()), ("PORT".to_string(), "9000".to_string())]);
    assert_eq!(environment(&image().env, &over), ["PATH=/app/bin", "MODE=function", "EMPTY=", "PORT=9000"]);
    let defaulted = environment(&[], &BTreeMap::new());
    assert!(defaulted[0].starts_with("PATH=/usr/local/sbin:"), "{defaulted:?}");
}

#[test]
fn the_spec_isolates_and_limits_the_sandbox() {
    let launch = Launch {
        command: None,
        args: None,
        env: BTreeMap::new(),
        uid: 2_000_000_123,
        gid: 2_000_000_123,
        rootfs: "/var/lib/baton/images/sha256-abc".into(),
        hostname: "sb-1".into(),
        netns: None,
        id_maps: None,
        cgroups_path: "/baton/sb-1".into(),
        cpu_millis: 250,
        memory_mib: 128,
        pids: 64,
    };
    let spec = runtime_spec(&image(), &launch).unwrap();
    let process = spec.process().as_ref().unwrap();
    assert_eq!(process.user().uid(), 2_000_000_123);
    assert_eq!(process.no_new_privileges(), Some(true));
    assert_eq!(process.cwd(), &PathBuf::from("/srv"));
    let caps = process.capabilities().as_ref().unwrap();
    assert!(
        caps.bounding().as_ref().is_none_or(|c| c.is_empty()) && caps.effective().as_ref().is_none_or(|c| c.is_empty())
    );
    let root = spec.root().as_ref().unwrap();
    assert_eq!(root.readonly(), Some(true));
    let linux = spec.linux().as_ref().unwrap();
    let namespaces: Vec<_> = linux.namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect();
    assert!(!namespaces.contains(&LinuxNamespaceType::Network), "no namespace given: the host network");
    assert!(namespaces.contains(&LinuxNamespaceType::Pid) && namespaces.contains(&LinuxNamespaceType::Mount));
    let resources = linux.resources().as_ref().unwrap();
    assert_eq!(resources.cpu().as_ref().unwrap().quota(), Some(25_000));
    assert_eq!(resources.memory().as_ref().unwrap().limit(), Some(128 * 1024 * 1024));
    assert_eq!(resources.pids().as_ref().unwrap().limit(), 64);
    let nothing = ImageConfig::default();
    assert_eq!(runtime_spec(&nothing, &launch).unwrap_err(), BundleError::NoCommand);

    assert!(spec.mounts().as_ref().unwrap().iter().any(|m| m.destination() == Path::new("/sys")));

    // In a user namespace: the ids mapped one by one, no sysfs, no gid a mount would name.
    let maps = IdMaps { uids: vec![(0, 2_000_000_200), (1000, 2_000_000_123)], gids: vec![(1000, 2_000_000_123)] };
    let mapped = Launch { uid: 1000, gid: 1000, id_maps: Some(maps), ..launch.clone() };
    let spec = runtime_spec(&image(), &mapped).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.namespaces().as_ref().unwrap().iter().any(|n| n.typ() == LinuxNamespaceType::User));
    let uids: Vec<(u32, u32, u32)> =
        linux.uid_mappings().as_ref().unwrap().iter().map(|m| (m.container_id(), m.host_id(), m.size())).collect();
    assert_eq!(uids, [(0, 2_000_000_200, 1), (1000, 2_000_000_123, 1)]);
    assert_eq!(linux.gid_mappings().as_ref().unwrap().len(), 1);
    assert_eq!(spec.process().as_ref().unwrap().user().uid(), 1000, "the id inside");
    let mounts = spec.mounts().as_ref().unwrap();
    assert!(!mounts.iter().any(|m| m.destination().starts_with("/sys")));
    assert!(
        mounts.iter().flat_map(|m| m.options().iter().flatten()).all(|o| !o.starts_with("gid=") || o == "gid=1000")
    );

    // Given a network namespace, the container joins that one rather than making its own.
    let joined = Launch { netns: Some("/proc/1/fd/7".into()), ..launch };
    let spec = runtime_spec(&image(), &joined).unwrap();
    let network: Vec<_> = spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|n| n.typ() == LinuxNamespaceType::Network)
        .map(|n| n.path().clone())
        .collect();
    assert_eq!(network, [Some(PathBuf::from("/proc/1/fd/7"))]);
}

#[test]
fn an_image_config_is_read_from_its_json() {
    let json = br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/app"],"Cmd":null,"Env":["A=1"],"WorkingDir":"/w"}}"#;
    let config = ImageConfig::parse(json).unwrap();
    assert_eq!(config.entrypoint, ["/bin/app"]);
    assert!(config.cmd.is_empty());
    assert_eq!(config.env, ["A=1"]);
    assert_eq!(config.working_dir, "/w");
    assert!(config.exposed_ports.is_empty());
    assert_eq!(config.default_port(8080), 8080, "nothing exposed: the fallback");
    assert!(ImageConfig::parse(b"not json").is_err());

    let exposing =
        |ports: &str| ImageConfig::parse(format!(r#"{{"config":{{"ExposedPorts":{ports}}}}}"#).as_bytes()).unwrap();
    let one = exposing(r#"{"9000/tcp":{}}"#);
    assert_eq!((one.exposed_ports.as_slice(), one.default_port(8080)), (&[9000][..], 9000));
    let bare = exposing(r#"{"7000":{}, "53/udp":{}, "x/tcp":{}, "0/tcp":{}, "70000/tcp":{}}"#);
    assert_eq!((bare.exposed_ports.as_slice(), bare.default_port(8080)), (&[7000][..], 7000), "UDP and junk ignored");
    let several = exposing(r#"{"9001/tcp":{}, "9000/TCP":{}}"#);
    assert_eq!(several.exposed_ports, [9000, 9001]);
    assert_eq!(several.default_port(8080), 8080, "several: the function must say which");
}

#[test]
fn an_images_user_is_a_number_or_a_name_of_its_own_files() {
    let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nbroken:x:oops:1::/:/bin/sh\n";
    let group = "root:x:0:\nstaff:x:50:app\n";
    let resolve = |user: &str| resolve_user(user, Some(passwd), Some(group));
    assert_eq!(resolve("").unwrap(), None);
    assert_eq!(resolve("1000").unwrap(), Some((1000, 0)), "a bare number: gid 0, as Docker");
    assert_eq!(resolve("1000:7").unwrap(), Some((1000, 7)));
    assert_eq!(resolve("app").unwrap(), Some((1000, 1001)), "a name: its primary group");
    assert_eq!(resolve("app:staff").unwrap(), Some((1000, 50)));
    assert_eq!(resolve("root").unwrap(), Some((0, 0)));
    assert_eq!(resolve("42:staff").unwrap(), Some((42, 50)));
    for bad in ["nobody-here", "app:nogroup", "broken"] {
        assert!(matches!(resolve(bad), Err(BundleError::BadUser { .. })), "{bad}");
    }
    assert!(matches!(resolve_user("app", None, None), Err(BundleError::BadUser { .. })), "no /etc/passwd");
}

#[test]
fn mount_points_are_made_where_missing_and_nothing_there_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("proc")).unwrap();
    std::fs::write(rootfs.join("proc/keep"), "x").unwrap();
    let outside = dir.path().join("outside");
    std::os::unix::fs::symlink(&outside, rootfs.join("tmp")).unwrap();
    mount_points(&rootfs).unwrap();
    assert!(rootfs.join("dev").is_dir() && rootfs.join("sys").is_dir());
    assert!(rootfs.join("proc/keep").exists(), "an existing folder stays as it is");
    assert!(std::fs::symlink_metadata(rootfs.join("tmp")).unwrap().file_type().is_symlink());
    assert!(!outside.exists(), "a symlink is not followed");
    mount_points(&rootfs).unwrap();
}
