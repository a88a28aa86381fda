//! The kernel's rule map is shared by every container of a state root.
//! Each container's share is bounded (16384 address prefixes per rule
//! list), so one with a huge rule set, even while `policy apply` holds two
//! generations of it, leaves room for the next; a set over the bound is
//! refused before anything is written, naming the container and the bound.

mod support;

use support::{Sandbox, describe, listen_tcp, probe_inside};

/// Address prefixes one container may have in one list.
const BOUND: usize = 16384;

/// A policy whose connect, bind and accept lists each name `prefixes`
/// address prefixes: hosts in 10.`salt`.0.0/16 denied, and `allow any`
/// (which names the IPv4 and the IPv6 zero-length prefix).
fn policy_text(prefixes: usize, salt: u32) -> String {
    let mut text = String::from("[network]\n");
    for list in ["connect", "bind", "accept"] {
        text.push_str(&format!("{list} = [\n"));
        for h in 0..(prefixes - 2) as u32 {
            text.push_str(&format!(
                "  \"deny tcp 10.{salt}.{}.{}\",\n",
                h >> 8,
                h & 255
            ));
        }
        text.push_str("  \"allow any\",\n]\n");
    }
    text
}

#[test]
fn a_container_at_the_bound_leaves_room_for_the_next() {
    let a = Sandbox::new("cap-a");
    let mut b = Sandbox::new("cap-b");
    b.root = a.root.clone();

    // A: every list one short of the bound, then a second such set
    // applied (both generations are in the map until the switch).
    let near = a.dir.join("near.toml");
    std::fs::write(&near, policy_text(BOUND - 1, 1)).unwrap();
    a.start_sleeping(&["--policy", near.to_str().unwrap()]);
    let shown = a.policy_show();
    assert_eq!(shown["connect"].as_array().unwrap().len(), BOUND - 1);
    assert_eq!(shown["accept"].as_array().unwrap().len(), BOUND - 1);
    let again = a.dir.join("again.toml");
    std::fs::write(&again, policy_text(BOUND - 1, 2)).unwrap();
    a.apply(&again);
    let generation = a.policy_show()["generation"].clone();

    // B, in the same state root: its policy is written and works.
    let open = listen_tcp(&["127.0.0.1"]);
    let closed = listen_tcp(&["127.0.0.1"]);
    let policy = b.connect_policy(&[&format!("allow tcp 127.0.0.1/32:{open}"), "deny any"]);
    let results = probe_inside(
        &b,
        &policy,
        &[
            (4, "tcp", "127.0.0.1", open),
            (4, "tcp", "127.0.0.1", closed),
        ],
    );
    assert_eq!(results, ["ok", "EPERM"]);

    // One prefix over the bound: refused at run and at policy apply,
    // naming the container, the list, the count and the bound.
    let over = b.dir.join("over.toml");
    std::fs::write(&over, policy_text(BOUND + 1, 3)).unwrap();
    let out = b
        .palisade()
        .args(["run", "--name", &b.name, "--policy"])
        .arg(&over)
        .args(["--", "true"])
        .output()
        .expect("run palisade");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    for needle in [
        format!("container {:?}", b.name),
        "network.connect names 16385 address prefixes".to_string(),
        "more than the 16384".to_string(),
    ] {
        assert!(stderr.contains(&needle), "{needle:?} in {stderr}");
    }
    assert!(!b.root.join(&b.name).exists());
    assert!(b.leftover_cgroups().is_empty());

    let out = a.try_apply(&over);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr.contains(&format!("container {:?}", a.name)),
        "{stderr}"
    );
    assert!(stderr.contains("16384"), "{stderr}");
    // A's policy is as it was.
    let shown = a.policy_show();
    assert_eq!(shown["generation"], generation);
    assert_eq!(shown["connect"].as_array().unwrap().len(), BOUND - 1);
}
