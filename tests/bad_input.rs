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
    nothing_created(&sb);
}

/// No state, no cgroup: a refusal happened before anything was made.
fn nothing_created(sb: &Sandbox) {
    assert!(
        !sb.root.join(&sb.name).exists(),
        "a state directory was created"
    );
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
}

/// Runs `cmd` (palisade), which must end within 10 s; kills it (by pid)
/// and fails if it does not.
fn prompt(mut cmd: std::process::Command) -> std::process::Output {
    use std::{
        process::Stdio,
        time::{Duration, Instant},
    };
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run palisade");
    let deadline = support::deadline(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("palisade still reading after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
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

#[test]
fn ipv6_rule_inside_the_mapped_range_names_the_ipv4_rule_meant() {
    for list in ["connect", "bind", "accept"] {
        refused(
            &format!("mapped-{list}"),
            &format!(
                "[network]\n{list} = [\n  \"allow tcp 127.0.0.1\",\n  \"deny tcp ::ffff:127.0.0.1/128\",\n  \"allow any\",\n]\n"
            ),
            4,
            &format!(
                "network.{list}: rule \"deny tcp ::ffff:127.0.0.1/128\": ::ffff:127.0.0.1/128 lies inside ::ffff:0:0/96 and can never match"
            ),
        );
    }
    refused(
        "mapped-ports",
        "[network]\nconnect = [\"allow udp [::ffff:10.0.0.0/104]:53\", \"deny any\"]\n",
        2,
        "did you mean \"allow udp 10.0.0.0/8:53\"?",
    );
    refused(
        "mapped-suggest",
        "[network]\nconnect = [\"deny tcp ::ffff:127.0.0.1/128\", \"allow any\"]\n",
        2,
        "did you mean \"deny tcp 127.0.0.1/32\"?",
    );
}

#[test]
fn policy_file_over_the_size_bound_is_refused_unparsed() {
    // Valid TOML all through (a comment), one byte over 4 MiB.
    let mut text = String::from("[network]\nconnect = [\"deny any\"]\n#");
    text.push_str(&"x".repeat((4 << 20) + 1 - text.len() - 1));
    text.push('\n');
    assert_eq!(text.len(), (4 << 20) + 1);
    let sb = Sandbox::new("bigfile");
    let policy = sb.policy(&text);
    let out = sb.run(Some(&policy), &["true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("larger than 4194304 bytes"), "{stderr}");
    assert!(stderr.contains(&policy.display().to_string()), "{stderr}");
    nothing_created(&sb);
    // One byte less is read and parsed.
    let fits = sb.policy(&text[..text.len() - 2]);
    let out = sb.run(Some(&fits), &["true"]);
    assert!(out.status.success(), "{}", support::describe(&out));
}

#[test]
fn policy_from_a_device_or_fifo_is_refused_promptly() {
    let sb = Sandbox::new("devzero");
    let fifo = sb.dir.join("policy.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let link = sb.dir.join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    for (file, needle) in [
        (std::path::Path::new("/dev/zero"), "a character device"),
        (&link, "a character device"),
        (&fifo, "a FIFO"),
    ] {
        let mut run = sb.palisade();
        run.args(["run", "--name", &sb.name, "--policy"])
            .arg(file)
            .args(["--", "true"]);
        let mut apply = sb.palisade();
        apply.args(["policy", "apply", &sb.name]).arg(file);
        for cmd in [run, apply] {
            let out = prompt(cmd);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{}: {stderr}", file.display());
            assert!(stderr.contains(needle), "{stderr}");
        }
        nothing_created(&sb);
    }
}
