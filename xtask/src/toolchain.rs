//! Checks the build prerequisites and installs what is missing.
//!
//! With everything present the checks cost well under two seconds: they
//! look at files and ask dpkg, and run nothing heavier than `--version`.
//! What is missing is installed visibly, in dependency order:
//! Debian packages (LLVM 22 for bpf-linker, the test and demo clients),
//! nightly's rust-src and clippy, then bpf-linker built against LLVM 22.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

/// bpf-linker must be built against the LLVM that nightly rustc uses.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Debian packages the build, the tests and the demo need.
const PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "bpf-linker links against LLVM 22"),
    ("libpolly-22-dev", "bpf-linker links against LLVM 22"),
    ("zlib1g-dev", "bpf-linker links against LLVM 22"),
    ("libzstd-dev", "bpf-linker links against LLVM 22"),
    ("python3", "the integration tests' socket clients"),
    (
        "iproute2",
        "the tests and benchmarks inspect qdiscs and links with tc and ip",
    ),
    ("iperf3", "the shaping tests' traffic"),
    ("curl", "the metrics tests' client"),
    (
        "busybox-static",
        "the example rootfs and the OCI bundle tests",
    ),
    ("gcc", "the checkpoint tests compile their C workloads"),
    (
        "libc6-dev",
        "the checkpoint tests' workloads link statically",
    ),
    (
        "podman",
        "the OCI client tests drive palisade through podman (brings conmon)",
    ),
    (
        "containerd",
        "the OCI client tests drive palisade through containerd (brings ctr and the runc shim v2)",
    ),
];

pub fn ensure() -> Result<()> {
    let started = Instant::now();
    ensure_packages()?;
    ensure_nightly()?;
    ensure_bpf_linker()?;
    println!("==> toolchain ready ({} ms)", started.elapsed().as_millis());
    Ok(())
}

pub fn require_root(why: &str) -> Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("cannot read /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if euid != "0" {
        bail!("this must run as root: {why}");
    }
    Ok(())
}

/// Peers and tools the benchmarks use.
const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("nftables", "the benchmarks' packet-filter peer"),
    ("runc", "the benchmarks' container-runtime peer"),
    ("hyperfine", "the benchmarks' timer"),
    ("busybox-static", "the benchmarks' rootfs"),
    ("bc", "the benchmarks' arithmetic"),
    ("util-linux", "unshare, the benchmarks' namespace peer"),
    ("iperf3", "the shaping benchmark's traffic"),
    ("crun", "the OCI benchmark's second runtime peer"),
    ("podman", "the OCI benchmark's client (brings conmon)"),
];

pub fn ensure_bench_packages() -> Result<()> {
    install_missing(BENCH_PACKAGES)
}

fn ensure_packages() -> Result<()> {
    install_missing(PACKAGES)
}

pub fn install_missing(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&(&str, &str)> = packages
        .iter()
        .filter(|(name, _)| !dpkg_installed(name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (name, why) in &missing {
        println!("==> installing Debian package {name} ({why})");
    }
    require_root("installing Debian packages")?;
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(missing.iter().map(|(name, _)| *name))
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn ensure_nightly() -> Result<()> {
    let sysroot = Command::new(rustup())
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let sysroot = match sysroot {
        Some(s) => s,
        None => {
            println!("==> installing the nightly toolchain (the eBPF crate needs -Z build-std)");
            run(Command::new(rustup()).args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]))?;
            return ensure_nightly();
        }
    };
    if !sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
    {
        println!("==> installing rust-src for nightly (the eBPF crate builds core from source)");
        run(Command::new(rustup()).args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let clippy = Command::new(rustup())
        .args(["run", "nightly", "cargo-clippy", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !clippy {
        println!("==> installing clippy for nightly (`cargo xtask test` lints the eBPF crate)");
        run(Command::new(rustup()).args(["component", "add", "clippy", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

fn ensure_bpf_linker() -> Result<()> {
    let version = Command::new(cargo_bin("bpf-linker"))
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if version.split_whitespace().any(|w| w == BPF_LINKER_VERSION) {
        return Ok(());
    }
    println!(
        "==> building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (links the eBPF object; takes a few minutes, once)"
    );
    run(Command::new(env!("CARGO"))
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--force",
        ])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("LLVM_PREFIX", LLVM_PREFIX))
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

pub fn cargo_bin(name: &str) -> PathBuf {
    let path = cargo_home().join("bin").join(name);
    if path.exists() {
        path
    } else {
        PathBuf::from(name)
    }
}

pub fn rustup() -> PathBuf {
    cargo_bin("rustup")
}
