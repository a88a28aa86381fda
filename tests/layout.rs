//! The architecture's promises about the source tree, checked on the
//! source itself (DESIGN.md, "One owner per kernel interface"):
//! - no subprocess in the product (`ip`, `tc`, `nsenter` were replaced by
//!   the netlink layer);
//! - cgroup control files are named only under `agent/src/cgroups/`;
//! - the folders of `agent/src` import downward only, with no cycle.
//!
//! Test modules (`#[cfg(test)]` and what follows it in a file) are left
//! out: tests may run tools and name files.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its non-test text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).unwrap();
            let product = match text.find("#[cfg(test)]") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            if path.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            out.push((path, product));
        }
    }
    out
}

#[test]
fn the_product_runs_no_subprocess() {
    // The one exception: OCI hooks are programs a bundle names, which the
    // runtime spec says to run. palisade's own work never shells out.
    let hooks = src().join("runtime/hooks.rs");
    let found: Vec<_> = sources(&src())
        .into_iter()
        .filter(|(path, _)| *path != hooks)
        .filter(|(_, text)| text.contains("Command::new"))
        .map(|(path, _)| path)
        .collect();
    assert!(found.is_empty(), "Command::new in {found:?}");
}

#[test]
fn cgroup_files_are_named_only_by_cgroups() {
    let controls = [
        "cgroup.procs",
        "cgroup.freeze",
        "cgroup.kill",
        "cgroup.events",
        "cgroup.subtree_control",
        "cgroup.controllers",
        "memory.",
        "cpu.",
        "cpuset.",
        "pids.",
        "io.",
        "blkio.",
        "cpuacct.",
        "freezer.",
    ];
    let owner = src().join("cgroups");
    let mut found = Vec::new();
    for (path, text) in sources(&src()) {
        if path.starts_with(&owner) {
            continue;
        }
        for control in controls {
            // A quoted file name: "memory.max", "cgroup.procs"…
            let quoted = format!("\"{control}");
            if text.match_indices(&quoted).any(|(i, _)| {
                text[i + quoted.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c == '"')
            }) {
                found.push(format!("{} names {control}", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// The folders of `agent/src` and the folders each one uses (`crate::X`).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let folders: BTreeSet<String> = fs::read_dir(src())
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut graph = BTreeMap::new();
    for folder in &folders {
        let mut uses = BTreeSet::new();
        for (_, text) in sources(&src().join(folder)) {
            // `crate::x` anywhere, and `x` at the start of an item of a
            // `use crate::{…}` group.
            let mut names: Vec<&str> = text
                .match_indices("crate::")
                .map(|(i, m)| &text[i + m.len()..])
                .collect();
            for (i, _) in text.match_indices("use crate::{") {
                let group = &text[i..text[i..].find("};").map_or(text.len(), |j| i + j)];
                names.extend(group.split(['{', ',']).map(str::trim_start));
            }
            for name in names {
                let word: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if folders.contains(&word) && word != *folder {
                    uses.insert(word);
                }
            }
        }
        graph.insert(folder.clone(), uses);
    }
    graph
}

#[test]
fn folders_import_downward_only() {
    // DESIGN.md: cli → daemon → accounting → runtime → checkpoint /
    // enforce → cgroups / sys / spec. A folder may use any folder of a
    // lower rank, none of its own rank or above.
    let rank = |folder: &str| match folder {
        "cli" => 6,
        "daemon" => 5,
        "accounting" => 4,
        "runtime" => 3,
        "checkpoint" | "enforce" => 2,
        "cgroups" => 1,
        "sys" | "spec" => 0,
        other => panic!("folder {other} has no place in DESIGN.md's order"),
    };
    let graph = imports();
    assert!(graph.contains_key("runtime") && graph.contains_key("cgroups"));
    let upward: Vec<String> = graph
        .iter()
        .flat_map(|(from, uses)| {
            uses.iter()
                .filter(|to| rank(to) >= rank(from))
                .map(move |to| format!("{from} -> {to}"))
        })
        .collect();
    assert!(upward.is_empty(), "imports that do not go down: {upward:?}");
}
