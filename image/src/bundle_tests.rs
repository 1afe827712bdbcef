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
