//! Builds the kernel-side crate (`ebpf/`) with nightly for bpfel-unknown-none
//! and hands its objects to the agent, which embeds them with `include_bytes`.
//!
//! The toolchain pieces (nightly with rust-src, bpf-linker built against
//! LLVM 22) are installed by `cargo xtask build`; this script only says so
//! when they are missing.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf();
    let ebpf = root.join("ebpf");
    for watched in [
        "ebpf/src",
        "ebpf/Cargo.toml",
        "ebpf/Cargo.lock",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    // One target dir for every host profile, so `cargo build`, `cargo test`
    // and clippy share one kernel-side build.
    let target_dir = root.join("target").join("ebpf");
    let mut cmd = Command::new(rustup());
    // rustc finds bpf-linker on PATH; `cargo install` puts it in CARGO_HOME/bin.
    let mut path = vec![cargo_home().join("bin")];
    path.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    cmd.env(
        "PATH",
        env::join_paths(path).expect("PATH entries have no separator"),
    );
    cmd.current_dir(&ebpf)
        .args(["run", "nightly", "cargo", "build", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer cargo's compiler, wrappers and flags are for the host.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
    ] {
        cmd.env_remove(var);
    }
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_FEATURE_")
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run `rustup run nightly cargo` to build ebpf/: {e} (run `cargo xtask build`, which installs the toolchain)")
    });
    if !status.success() {
        panic!(
            "building the eBPF programs in {} failed ({status}); `cargo xtask build` installs nightly rust-src and bpf-linker if they are missing",
            ebpf.display()
        );
    }
    // Each binary of ebpf/ is one object: enforcement and accounting; the
    // dirty-page tracker, loaded only while a checkpoint tracks pages; and
    // the classifier, loaded only by an agent with `[[classify]]` rules.
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    for (binary, file, var) in [
        ("palisade", "palisade.bpf.o", "PALISADE_EBPF_OBJECT"),
        (
            "palisade-dirty",
            "palisade-dirty.bpf.o",
            "PALISADE_DIRTY_OBJECT",
        ),
        (
            "palisade-classify",
            "palisade-classify.bpf.o",
            "PALISADE_CLASSIFY_OBJECT",
        ),
    ] {
        let object = target_dir.join("bpfel-unknown-none/release").join(binary);
        let out = out_dir.join(file);
        copy(&object, &out);
        println!("cargo:rustc-env={var}={}", out.display());
    }
    build_small_monitor(&manifest, &out_dir);
}

/// Builds the small monitor (`src/sys/monitor/main.rs`): a freestanding
/// static program of a few KiB that a detached container's monitor
/// becomes once the container runs. It is compiled by the host compiler
/// this build uses, without the standard library, and embedded.
fn build_small_monitor(manifest: &Path, out_dir: &Path) {
    let source = manifest.join("src/sys/monitor/main.rs");
    println!("cargo:rerun-if-changed={}", source.display());
    let out = out_dir.join("palisade-monitor");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args(["--edition", "2024", "--crate-type", "bin"])
        .args(["--crate-name", "palisade_monitor"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .args(["-C", "opt-level=s", "-C", "panic=abort"])
        .args(["-C", "relocation-model=static", "-C", "debuginfo=0"])
        .args(["-C", "strip=symbols"]);
    for link_arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-Wl,--gc-sections",
        "-Wl,--build-id=none",
        "-Wl,-z,noexecstack",
    ] {
        cmd.arg("-C").arg(format!("link-arg={link_arg}"));
    }
    cmd.arg(&source).arg("-o").arg(&out);
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS"] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run rustc to build the small monitor: {e}"));
    if !status.success() {
        panic!(
            "building the small monitor ({}) failed ({status})",
            source.display()
        );
    }
    println!("cargo:rustc-env=PALISADE_MONITOR_IMAGE={}", out.display());
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

fn rustup() -> PathBuf {
    let candidate = cargo_home().join("bin/rustup");
    if candidate.exists() {
        candidate
    } else {
        PathBuf::from("rustup")
    }
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
}
