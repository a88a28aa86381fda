//! `cargo xtask`: palisade's build orchestration.
//!
//! Every command first checks the toolchain and installs what is missing
//! (idempotently, saying what it does), then builds. The eBPF object is
//! built by agent/build.rs as part of the agent, so `build` is one cargo
//! invocation once the toolchain is right.

mod demo;
mod rootfs;
mod toolchain;
mod vm;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  build   check/install the toolchain, then build target/release/palisade
  test    build, then run every check: fmt, clippy, unit and integration tests (as root),
          then vm-test --fast
  demo    build, then run a container under the sample policy and show what it enforces
          (demo --prebuilt PALISADE: with that binary, building nothing)
  bench   build, then run every benchmark in bench/ beside its peers (as root)
  rootfs  build a small busybox root filesystem at target/rootfs/busybox
  vm-test [--kernel 6.1] [--demo | --fast | FILTER...]
          the integration tests and the demo in a qemu guest on Debian's kernel
          of that series, pure cgroup v2 (as root; PALISADE_VM_ACCEL=kvm where
          KVM works); FILTER: only the tests whose names contain it (several:
          any of them); --fast: the subset `test` runs; --demo: only the demo
  setup   only check/install the toolchain";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => toolchain::ensure().and_then(|_| build()),
        Some("test") => toolchain::ensure().and_then(|_| test(&args[1..])),
        // A binary built already, nothing built or installed: how vm-test
        // runs the demo in its guest.
        Some("demo") if args.get(1).is_some_and(|a| a == "--prebuilt") => match args.get(2) {
            Some(bin) => demo::run(Path::new(bin)),
            None => Err(anyhow::anyhow!("demo --prebuilt needs the palisade binary")),
        },
        Some("demo") => toolchain::ensure()
            .and_then(|_| build_binary())
            .and_then(|bin| demo::run(&bin)),
        Some("bench") => toolchain::ensure()
            .and_then(|_| toolchain::ensure_bench_packages())
            .and_then(|_| build_binary())
            .and_then(|bin| bench(&bin)),
        Some("vm-test") => toolchain::ensure()
            .and_then(|_| vm::parse(&args[1..]))
            .and_then(|options| vm::vm_test(&options)),
        Some("rootfs") => rootfs::build().map(|_| ()),
        Some("setup") => toolchain::ensure(),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask/ lives in it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

/// Runs a command in the workspace root, failing if it fails.
fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Release build of the agent (and, through its build script, the eBPF
/// object it embeds). Returns the binary's path.
fn build() -> Result<()> {
    build_binary().map(|_| ())
}

fn build_binary() -> Result<PathBuf> {
    println!("==> building palisade (release)");
    cargo(&["build", "--release", "--package", "palisade"])?;
    Ok(root().join("target/release/palisade"))
}

/// Lints the kernel-side crate the way agent/build.rs builds it: nightly,
/// for bpfel-unknown-none, with core built from source.
/// The small monitor is one freestanding file that agent/build.rs
/// compiles with rustc; clippy's driver lints it with the same flags.
fn clippy_small_monitor() -> Result<()> {
    let out = root().join("target").join("clippy-small-monitor");
    let status = Command::new(toolchain::cargo_bin("clippy-driver"))
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "bin",
            "-C",
            "panic=abort",
        ])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args(["-C", "link-arg=-static", "-D", "warnings", "-o"])
        .arg(&out)
        .arg("agent/src/sys/monitor/main.rs")
        .current_dir(root())
        .status()
        .context("cannot run clippy-driver")?;
    if !status.success() {
        bail!("clippy on agent/src/sys/monitor/main.rs failed ({status})");
    }
    Ok(())
}

fn clippy_ebpf() -> Result<()> {
    let mut cmd = Command::new(toolchain::rustup());
    cmd.current_dir(root().join("ebpf"))
        .args(["run", "nightly", "cargo", "clippy", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(root().join("target").join("ebpf"))
        .args(["--", "-D", "warnings"]);
    // This process's cargo, compiler and flags are the host's.
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
    let status = cmd
        .status()
        .context("cannot run `rustup run nightly cargo clippy` in ebpf/")?;
    if !status.success() {
        bail!("clippy on ebpf/ failed ({status})");
    }
    Ok(())
}

/// Runs every benchmark script in bench/, each against its peers.
fn bench(palisade: &Path) -> Result<()> {
    toolchain::require_root("the benchmarks create containers and nftables tables")?;
    let rootfs = rootfs::build()?;
    let runs: [(&str, Vec<&Path>); 15] = [
        ("startup.sh", vec![palisade, rootfs.as_path()]),
        ("oci.sh", vec![palisade, rootfs.as_path()]),
        ("connect.sh", vec![palisade]),
        ("policy_compile.sh", vec![palisade]),
        ("shaping.sh", vec![palisade]),
        ("accounting.sh", vec![palisade]),
        ("checkpoint.sh", vec![palisade]),
        ("precopy.sh", vec![palisade]),
        ("tracking_tax.sh", vec![palisade]),
        ("oom.sh", vec![palisade, rootfs.as_path()]),
        ("classify.sh", vec![palisade]),
        ("agent.sh", vec![palisade, rootfs.as_path()]),
        ("host_tax.sh", vec![palisade]),
        ("scale.sh", vec![palisade]),
        ("view.sh", vec![palisade, rootfs.as_path()]),
    ];
    for (script, args) in runs {
        println!("==> bench/{script}");
        let status = Command::new("bash")
            .arg(root().join("bench").join(script))
            .args(args)
            .status()
            .with_context(|| format!("cannot run bench/{script}"))?;
        if !status.success() {
            bail!("bench/{script} failed ({status})");
        }
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    toolchain::require_root("the integration tests create cgroups and attach BPF programs")?;
    build_binary()?;
    // The OCI bundle tests run on it.
    rootfs::build()?;
    println!("==> cargo fmt --check");
    cargo(&["fmt", "--all", "--check"])?;
    // The kernel-side crate is outside the workspace; rustfmt follows the
    // modules of each binary's root.
    let roots = [
        "ebpf/src/main.rs",
        "ebpf/src/dirty.rs",
        "agent/src/sys/monitor/main.rs",
    ];
    let status = Command::new("rustfmt")
        .args(["--check", "--edition", "2024"])
        .args(roots)
        .current_dir(root())
        .status()
        .context("cannot run rustfmt")?;
    if !status.success() {
        bail!("rustfmt --check {} failed ({status})", roots.join(" "));
    }
    println!("==> clippy ebpf (-D warnings)");
    clippy_ebpf()?;
    println!("==> clippy on the small monitor (-D warnings)");
    clippy_small_monitor()?;
    println!("==> cargo clippy --all-targets -- -D warnings");
    cargo(&[
        "clippy",
        "--release",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    println!("==> unit and integration tests");
    let mut args = vec!["test", "--release", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    let skips_file = root().join("target").join("test-skips");
    match std::fs::remove_file(&skips_file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            bail!("cannot remove {}: {e}", skips_file.display())
        }
        _ => {}
    }
    let (totals, status) = cargo_test(&args, &skips_file)?;
    // Tests that returned early for want of something on this host passed
    // as far as cargo knows; they are counted as skipped.
    let skips: Vec<String> = match std::fs::read_to_string(&skips_file) {
        Ok(text) => text.lines().map(str::to_string).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => bail!("cannot read {}: {e}", skips_file.display()),
    };
    let skipped = skips.len() as u64;
    // One closing line for the whole run, whatever binary ran last.
    println!(
        "\ntests: {} passed, {} failed, {} skipped",
        totals.passed.saturating_sub(skipped),
        totals.failed,
        totals.ignored + skipped
    );
    for skip in &skips {
        println!("  skipped {skip}");
    }
    if !status.success() || totals.failed > 0 || totals.passed == 0 {
        bail!("the tests did not pass ({status})");
    }
    if !extra.is_empty() {
        println!("\nthe guest subset is not run when cargo test arguments are given");
        return Ok(());
    }
    guest_subset()
}

/// The fast subset of `cargo xtask vm-test` (`--fast`): a test of each
/// difference a pure cgroup v2 host on Debian 12's 6.1 makes, in a qemu
/// guest. SKIPPED, saying why, where qemu or the kernel cannot be had
/// (no apt source for them); a failure in the guest fails the run.
fn guest_subset() -> Result<()> {
    println!(
        "\n==> the fast subset in a Debian 6.1 pure cgroup v2 guest (cargo xtask vm-test --fast)"
    );
    let options = vm::parse(&["--fast".to_string()])?;
    match vm::prepare(&options.series) {
        Err(e) => {
            println!("guest: SKIPPED: cannot prepare the guest: {e:#}");
            Ok(())
        }
        Ok(kernel) => vm::boot(&options, &kernel),
    }
}

#[derive(Default)]
pub(crate) struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Totals {
    /// Adds the counts of a libtest `test result: ...` line (other lines
    /// count nothing).
    pub fn add(&mut self, line: &str) {
        let Some(result) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in result.split([';', '.']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next()) {
                let n: u64 = n.parse().unwrap_or(0);
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    "ignored" => self.ignored += n,
                    _ => {}
                }
            }
        }
    }
}

/// Runs `cargo test`, passing its output through, and adds up the
/// "test result:" lines of every test binary. Tests that skip at run time
/// append a line to `skips` (tests/support `skip`).
fn cargo_test(args: &[&str], skips: &Path) -> Result<(Totals, std::process::ExitStatus)> {
    let mut child = Command::new(env!("CARGO"))
        .args(args)
        .env("PALISADE_TEST_SKIPS", skips)
        .current_dir(root())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let mut totals = Totals::default();
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.context("cannot read cargo test's output")?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child.wait().context("cannot wait for cargo test")?;
    Ok((totals, status))
}
