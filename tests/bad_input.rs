//! Bad input is refused before anything is created: exit status 2, the
//! file, line and offending value named, no cgroup left, command not run.

mod support;

use support::Sandbox;

/// Runs `palisade run` with `policy_text` and checks the refusal.
fn refused(tag: &str, policy_text: &str, line: usize, needle: &str) {
    let sb = Sandbox::new(tag);
    let policy = sb.policy(policy_text);
    let marker = sb.dir.join("ran");
    let out = sb.run(Some(&policy), &["touch", marker.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let location = format!("{}:{line}:", policy.display());
    assert!(
        stderr.contains(&location),
        "expected {location} in: {stderr}"
    );
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!marker.exists(), "the command ran");
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
}

#[test]
fn syntax_error() {
    refused("syntax", "[network]\nconnect = [\"deny any\"\n", 2, "");
}

#[test]
fn unknown_key() {
    refused("key", "[network]\nconect = [\"deny any\"]\n", 2, "conect");
    refused("key2", "# top\n[netwrk]\n", 2, "netwrk");
}

#[test]
fn invalid_address() {
    refused(
        "addr",
        "[network]\nconnect = [\n  \"allow tcp 127.0.0.1\",\n  \"allow tcp 127.0.0.256/32\",\n  \"deny any\",\n]\n",
        4,
        "127.0.0.256",
    );
    refused(
        "prefix",
        "[network]\nconnect = [\"allow 10.0.0.0/40\", \"deny any\"]\n",
        2,
        "40",
    );
}

#[test]
fn invalid_port_range() {
    refused(
        "range",
        "[network]\nconnect = [\n\"allow tcp 127.0.0.1:9000-8000\",\n\"deny any\"]\n",
        3,
        "9000-8000",
    );
    refused(
        "port",
        "[network]\nconnect = [\n\"allow tcp 127.0.0.1:65536\",\n\"deny any\"]\n",
        3,
        "65536",
    );
}

#[test]
fn missing_default_rule() {
    refused(
        "default",
        "[network]\n\nconnect = [\"allow tcp 127.0.0.1\"]\n",
        3,
        "deny any",
    );
}

#[test]
fn wrong_type() {
    refused("type", "[network]\nconnect = \"deny any\"\n", 2, "");
}

#[test]
fn missing_policy_file_and_bad_name() {
    let sb = Sandbox::new("nofile");
    let out = sb.run(Some(&sb.dir.join("absent.toml")), &["true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.toml"));

    let out = sb
        .palisade()
        .args(["run", "--name", "../escape", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("../escape"));
    assert!(!support::unified_mount().join("escape").exists());
}

#[test]
fn invalid_device_rules() {
    let list = |rule: &str| format!("[devices]\nallow = [\n  \"c 1:3 rwm\",\n  \"{rule}\",\n]\n");
    refused("devtype", &list("x 1:3 r"), 4, "invalid device type \"x\"");
    refused(
        "devnum",
        &list("c 1:abc r"),
        4,
        "invalid minor number \"abc\"",
    );
    refused(
        "devmajor",
        &list("b 5000:0 r"),
        4,
        "invalid major number \"5000\"",
    );
    refused("devaccess", &list("c 1:3 rwq"), 4, "invalid access \"rwq\"");
    refused("devwild", &list("b *:0 r"), 4, "wildcard major");
    refused("devshape", &list("c 1:3"), 4, "TYPE MAJOR:MINOR ACCESS");
    refused(
        "devkey",
        "[devices]\n\nallowed = [\"c 1:3 r\"]\n",
        3,
        "allowed",
    );
}
