//! `cargo xtask vm-test [--kernel 6.1] [--demo | FILTER]`: the integration
//! tests, the demo and a start-latency comparison in a qemu guest running
//! Debian's kernel of that series, on a pure cgroup v2 hierarchy. The guest shares the host's root read-only (9p; the
//! built binaries, test executables and busybox rootfs come with it)
//! under a writable tmpfs overlay, so it has the same userland; its
//! results come back through a second, writable share.
//!
//! The kernel `.deb` (`linux-image-<series>.*-amd64-unsigned`, the newest
//! the host's apt knows) is fetched once with `apt-get download` and
//! cached under `target/vm/`. KVM is used where it works, TCG elsewhere.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{
    root,
    toolchain::{self, run},
};

/// What the guest kernel needs before it can reach its root: virtio PCI,
/// 9p over virtio and overlayfs (modules in Debian's generic flavour).
const BOOT_MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "netfs",
    "fscache",
    "9pnet",
    "9pnet_virtio",
    "9p",
    "overlay",
];

/// The longest one test executable may run in the guest (under TCG a
/// guest runs several times slower than the host).
const TEST_TIMEOUT_S: u32 = 1800;

pub struct Options {
    pub series: String,
    /// Test-name filters: a test runs if its name contains one (every
    /// test if there are none).
    pub filters: Vec<String>,
    /// `--demo`: the demo alone, no tests.
    pub demo_only: bool,
}

/// `--fast` (what `cargo xtask test` runs in a guest): a test of each
/// difference a pure cgroup v2 host on an older kernel makes, as
/// test-name filters. Connect allowed and denied, a device denied, the
/// v2 resource files (io.max on the scratch disk), limits applied from a
/// policy, nested containers (the v2 no-internal-process rule), the
/// pure v2 layout, the v2 freezer and `memory.events` (OOM handling), a
/// container checkpointed and restored (the freezer, `CLONE_INTO_CGROUP`
/// with set_tid), and the eventfds of kernels before 6.2.
pub const FAST: &[&str] = &[
    "allowed_address_connects_and_others_get_eperm_only_inside",
    "device_policy_allows_what_it_lists",
    "files_hold_the_values",
    "palisade_run_applies_the_policy_resources",
    "nested",
    "pure_cgroup_v2_layout_is_detected_and_policed",
    "freeze_holds_the_hog_until_kill",
    "a_container_restores_under_its_policy_and_counts_on",
    "eventfd_timerfd_signalfd_and_epoll_work_after_restore",
];

pub fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        series: "6.1".into(),
        filters: Vec::new(),
        demo_only: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--kernel" => {
                options.series = args
                    .next()
                    .context("--kernel needs a series, such as 6.1")?
                    .clone();
            }
            "--demo" => options.demo_only = true,
            "--fast" => options.filters.extend(FAST.iter().map(|f| f.to_string())),
            other if other.starts_with('-') => bail!("vm-test: unknown flag {other}"),
            other => options.filters.push(other.to_string()),
        }
    }
    if options.demo_only && !options.filters.is_empty() {
        bail!("vm-test: --demo runs the demo alone, without tests: no --fast or FILTER with it");
    }
    if !options
        .series
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        bail!("--kernel {}: a series such as 6.1", options.series);
    }
    Ok(options)
}

/// A Debian kernel, unpacked: its image and its modules' tree.
pub struct Kernel {
    version: String,
    image: PathBuf,
    modules: PathBuf,
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The newest `linux-image-SERIES.N-K-amd64-unsigned` apt knows, fetched
/// and unpacked under `target/vm/` (once).
fn kernel(series: &str) -> Result<Kernel> {
    let pattern = format!(
        "^linux-image-{}\\.[0-9]+-[0-9]+-amd64-unsigned$",
        series.replace('.', "\\.")
    );
    let mut found = output(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
    if found.trim().is_empty() {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        found = output(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
    }
    let abi = |name: &str| -> Option<u32> {
        name.strip_prefix("linux-image-")?
            .split('-')
            .nth(1)?
            .parse()
            .ok()
    };
    let package = found
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .max_by_key(|name| abi(name))
        .with_context(|| format!("apt knows no linux-image-{series}.*-amd64-unsigned"))?
        .to_string();
    let version = package
        .strip_prefix("linux-image-")
        .and_then(|v| v.strip_suffix("-unsigned"))
        .context("odd package name")?
        .to_string();
    let dir = root().join("target").join("vm").join(&version);
    let unpacked = dir.join("x");
    let image = unpacked.join("boot").join(format!("vmlinuz-{version}"));
    let modules = unpacked.join("lib/modules").join(&version);
    if !modules.join("modules.dep").exists() {
        std::fs::create_dir_all(&dir)?;
        println!("==> fetching {package} (apt-get download)");
        run(Command::new("apt-get")
            .arg("download")
            .arg(&package)
            .current_dir(&dir))?;
        let deb = std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download left no .deb")?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
        std::fs::remove_file(&deb)?;
        // The package leaves modules.dep to the installing host's depmod.
        run(Command::new("busybox")
            .args(["depmod", "-b"])
            .arg(&unpacked)
            .arg(&version))?;
    }
    if !image.exists() {
        bail!("{} is missing", image.display());
    }
    Ok(Kernel {
        version,
        image,
        modules,
    })
}

/// The modules `names` and what they depend on, from `modules.dep`, as
/// paths relative to the modules' tree.
fn with_dependencies(modules: &Path, names: &[&str]) -> Result<Vec<String>> {
    let deps = std::fs::read_to_string(modules.join("modules.dep"))?;
    let mut wanted = Vec::new();
    for name in names {
        let file = format!("/{name}.ko:");
        let line = deps
            .lines()
            .find(|l| format!("/{l}").contains(&file))
            .with_context(|| format!("module {name} is not in this kernel's modules.dep"))?;
        let (module, needs) = line.split_once(':').unwrap_or((line, ""));
        for path in needs.split_whitespace().chain([module]) {
            if !wanted.iter().any(|w| w == path) {
                wanted.push(path.to_string());
            }
        }
    }
    Ok(wanted)
}

/// The first stage: busybox, the boot modules and `/init`, which mounts
/// the host's root (9p, read-only) under a tmpfs overlay and runs the
/// second stage there.
fn initramfs(kernel: &Kernel, work: &Path) -> Result<PathBuf> {
    let dir = work.join("initramfs");
    let _ = std::fs::remove_dir_all(&dir);
    for sub in [
        "bin", "proc", "sys", "dev", "host", "rw", "newroot", "results",
    ] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).context("busybox-static")?;
    let tree = dir.join("lib/modules").join(&kernel.version);
    for module in with_dependencies(&kernel.modules, BOOT_MODULES)? {
        let to = tree.join(&module);
        std::fs::create_dir_all(to.parent().context("module path")?)?;
        std::fs::copy(kernel.modules.join(&module), &to)?;
    }
    std::fs::copy(kernel.modules.join("modules.dep"), tree.join("modules.dep"))?;
    let modprobes: String = BOOT_MODULES
        .iter()
        .map(|m| format!("modprobe {m} || echo 'vm: modprobe {m} failed'\n"))
        .collect();
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n\
         {modprobes}\
         mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /host || exec poweroff -f\n\
         mount -t tmpfs -o size=3g tmpfs /rw && mkdir /rw/upper /rw/work\n\
         mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || exec poweroff -f\n\
         mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results /newroot{results}\n\
         exec switch_root /newroot /bin/sh {results}/stage2.sh\n",
        results = work.join("results").display(),
    );
    write_executable(&dir.join("init"), &init)?;
    let archive = work.join("initramfs.cpio");
    run(Command::new("sh")
        .arg("-c")
        .arg("find . | busybox cpio -o -H newc --quiet > \"$0\"")
        .arg(&archive)
        .current_dir(&dir))?;
    Ok(archive)
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The test executables of `cargo test --release --workspace`, built.
fn test_executables() -> Result<Vec<PathBuf>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "test",
            "--release",
            "--workspace",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed ({})", out.status);
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["profile"]["test"] == true
            && let Some(exe) = msg["executable"].as_str()
        {
            found.push(PathBuf::from(exe));
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// What the guest runs, in this order.
struct Plan<'a> {
    /// Test executables, each with the name filters (every test if none).
    executables: &'a [PathBuf],
    filters: &'a [String],
    /// `xtask demo --prebuilt`, with this xtask executable.
    demo: Option<PathBuf>,
    /// The start-latency comparison with unshare.
    latency: bool,
    /// PALISADE_TEST_SLOWDOWN for the tests.
    slowdown: u32,
}

/// The second stage, in the guest's new root: the kernel filesystems, a
/// pure cgroup v2 hierarchy, writable /tmp and /run, the guest kernel's
/// modules where modprobe looks, then what `plan` says.
fn stage2(kernel: &Kernel, plan: &Plan, results: &Path) -> String {
    let Plan {
        executables,
        filters,
        slowdown,
        ..
    } = plan;
    let filters: String = filters.iter().map(|f| format!(" '{f}'")).collect();
    let demo = plan
        .demo
        .as_ref()
        .map(|xtask| {
            format!(
                "{} demo --prebuilt {} > \"$R/demo\" 2>&1\n\
                 echo \"exit $?\" >> \"$R/demo\"\n",
                xtask.display(),
                root().join("target/release/palisade").display()
            )
        })
        .unwrap_or_default();
    let latency = if plan.latency {
        format!("sh {}/start.sh >> \"$R/output\" 2>&1\n", results.display())
    } else {
        String::new()
    };
    let tests: String = executables
        .iter()
        .map(|exe| {
            format!(
                "echo \"==> $(basename {exe})\" >> \"$R/output\"\n\
                 timeout {TEST_TIMEOUT_S} {exe} --test-threads=2{filters} >> \"$R/output\" 2>&1\n\
                 echo \"exit $? $(basename {exe})\" >> \"$R/output\"\n",
                exe = exe.display()
            )
        })
        .collect();
    format!(
        "#!/bin/sh\n\
         R={results}\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n\
         mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm\n\
         mount -t cgroup2 cgroup2 /sys/fs/cgroup\n\
         echo '+cpuset +cpu +io +memory +pids' > /sys/fs/cgroup/cgroup.subtree_control\n\
         mount -t bpf bpf /sys/fs/bpf\n\
         mount -t tmpfs tmpfs /run\n\
         mkdir -p /lib/modules/{version} && mount --bind {modules} /lib/modules/{version}\n\
         printf '#!/bin/sh\\nexec /bin/busybox modprobe \"$@\"\\n' > /run/modprobe && chmod +x /run/modprobe\n\
         echo /run/modprobe > /proc/sys/kernel/modprobe\n\
         for m in fuse veth bridge sch_htb tun loop virtio_blk ext4; do /bin/busybox modprobe $m; done\n\
         mkdir /run/host-tmp && mount --rbind /tmp /run/host-tmp\n\
         mkfs.ext4 -q -F /dev/vda && mount /dev/vda /tmp || {{ echo 'no scratch disk' > \"$R/output\"; poweroff -f; }}\n\
         {keep_src}\
         ip link set lo up\n\
         echo \"guest: $(uname -r), cgroup: $(stat -fc %T /sys/fs/cgroup), controllers: $(cat /sys/fs/cgroup/cgroup.controllers)\" > \"$R/output\"\n\
         export PALISADE_TEST_SKIPS=\"$R/skips\" PALISADE_TEST_SLOWDOWN={slowdown}\n\
         {palisade} check >> \"$R/output\" 2>&1\n\
         cd {src}\n\
         {tests}\
         {demo}\
         for d in /sys/fs/bpf/palisade /sys/fs/cgroup/palisade; do [ -d $d ] && find $d -mindepth 1 -maxdepth 1 -type d; done > \"$R/left\" 2>&1\n\
         {latency}\
         sync\n\
         echo done > \"$R/done\"\n\
         poweroff -f\n",
        results = results.display(),
        version = kernel.version,
        modules = kernel.modules.display(),
        src = root().display(),
        keep_src = keep_source(),
        palisade = root().join("target/release/palisade").display(),
    )
}

/// A checkout under /tmp (a CI clone, say) stays at its path in the
/// guest once the scratch disk is mounted over /tmp: the host's /tmp,
/// kept at /run/host-tmp with what is mounted below it (the results
/// share), lends it back (the test executables and the binary they run
/// are named by their absolute paths).
fn keep_source() -> String {
    let src = root();
    match src.strip_prefix("/tmp") {
        Ok(rel) => format!(
            "mkdir -p {src} && mount --rbind /run/host-tmp/{rel} {src}\n",
            src = src.display(),
            rel = rel.display()
        ),
        Err(_) => String::new(),
    }
}

/// Start-to-exit of `/bin/true` in the guest, `START_RUNS` times each,
/// alternating: `unshare -pmuif --mount-proc` (namespaces only, the
/// floor) and `palisade run --rootfs` of the busybox rootfs; the medians
/// in ms, and their ratio.
fn start_latency() -> String {
    let palisade = root().join("target/release/palisade");
    let rootfs = root().join("target/rootfs/busybox");
    format!(
        "#!/bin/sh
         ms() {{ s=$(date +%s%N); \"$@\" >/dev/null 2>&1 || echo \"start: $* failed\" >&2; e=$(date +%s%N); echo $(( (e - s) / 1000 )); }}
         median() {{ sort -n | awk '{{a[NR]=$1}} END {{print a[int((NR+1)/2)]}}'; }}
         st=$(mktemp -d)
         : > $st/u; : > $st/p
         for i in $(seq {runs}); do
         ms unshare -pmuif --mount-proc /bin/true >> $st/u
         ms {palisade} --root $st/state run --name s$i --rootfs {rootfs} -- /bin/true >> $st/p
         done
         u=$(median < $st/u); p=$(median < $st/p)
         echo \"start latency ({runs} runs each, median): unshare $((u / 1000)).$(( (u % 1000) / 100 )) ms, palisade run $((p / 1000)).$(( (p % 1000) / 100 )) ms, x$(awk \"BEGIN {{printf \\\"%.1f\\\", $p / $u}}\")\"
         {palisade} --root $st/state system prune >/dev/null 2>&1; rm -rf $st
",
        runs = START_RUNS,
        palisade = palisade.display(),
        rootfs = rootfs.display(),
    )
}

/// Runs of each in [`start_latency`].
const START_RUNS: u32 = 20;

/// The guest's /tmp: an empty sparse file of [`SCRATCH_BYTES`], made
/// afresh, which the guest formats (ext4) as its virtio disk /dev/vda. On
/// a real block device, the tests' files use no guest memory, and I/O
/// limits (io.max) and per-device I/O counts have a disk to work on.
fn scratch_disk(work: &Path) -> Result<PathBuf> {
    let path = work.join("scratch.img");
    let _ = std::fs::remove_file(&path);
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.set_len(SCRATCH_BYTES)
        .with_context(|| format!("cannot size {}", path.display()))?;
    Ok(path)
}

/// The scratch disk's size; sparse, it takes on the host only what the
/// tests write.
const SCRATCH_BYTES: u64 = 16 << 30;

/// How many times longer the tests wait for something to happen in the
/// guest (`PALISADE_TEST_SLOWDOWN`): TCG emulates every instruction, and
/// a container's start there takes some 20 times as long as on the host
/// (measured: 227 against 12 ms); KVM costs little.
fn slowdown(accel: &str) -> u32 {
    if accel == "tcg" { 10 } else { 2 }
}

/// `kvm` if `PALISADE_VM_ACCEL=kvm` asks for it, else TCG: KVM can be
/// present and still fail at the guest's first instruction that needs it
/// (nested virtualization: "KVM internal error"), so it is opted into.
fn accel() -> Result<&'static str> {
    match std::env::var("PALISADE_VM_ACCEL").as_deref() {
        Ok("kvm") => Ok("kvm"),
        Ok("tcg") | Err(_) => Ok("tcg"),
        Ok(other) => bail!("PALISADE_VM_ACCEL={other}: kvm or tcg"),
    }
}

pub fn vm_test(options: &Options) -> Result<()> {
    toolchain::require_root("the guest's tests create cgroups and attach BPF programs")?;
    let kernel = prepare(&options.series)?;
    crate::build_binary()?;
    crate::rootfs::build()?;
    boot(options, &kernel)
}

/// What a guest needs from the host: qemu and busybox installed, and
/// Debian's kernel of `series` fetched (once) and unpacked.
pub fn prepare(series: &str) -> Result<Kernel> {
    toolchain::install_missing(&[
        ("qemu-system-x86", "boots the guest kernel for vm-test"),
        ("busybox-static", "the guest's first stage"),
    ])?;
    kernel(series)
}

/// Boots `kernel` with the host's build (palisade and the busybox rootfs
/// built already) and runs what `options` asks in it; fails if a test
/// or the demo failed there.
pub fn boot(options: &Options, kernel: &Kernel) -> Result<()> {
    println!("==> building the test executables");
    let executables = test_executables()?;
    let work = root().join("target").join("vm").join("run");
    let results = work.join("results");
    let _ = std::fs::remove_dir_all(&results);
    std::fs::create_dir_all(&results)?;
    let initrd = initramfs(kernel, &work)?;
    let scratch = scratch_disk(&work)?;
    write_executable(&results.join("start.sh"), &start_latency())?;
    let accel = accel()?;
    let full = options.filters.is_empty() && !options.demo_only;
    let plan = Plan {
        executables: if options.demo_only { &[] } else { &executables },
        filters: &options.filters,
        demo: (full || options.demo_only)
            .then(std::env::current_exe)
            .transpose()
            .context("cannot find this xtask executable")?,
        latency: full,
        slowdown: slowdown(accel),
    };
    write_executable(&results.join("stage2.sh"), &stage2(kernel, &plan, &results))?;
    println!(
        "==> booting {} under qemu ({accel}): {} test executables{}{}",
        kernel.version,
        plan.executables.len(),
        if options.filters.is_empty() {
            String::new()
        } else {
            format!(", tests named {}", options.filters.join(" or "))
        },
        if plan.demo.is_some() {
            ", the demo"
        } else {
            ""
        }
    );
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            accel,
            "-m",
            "4096",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
        ])
        .args(["-cpu", "max"])
        .arg("-kernel")
        .arg(&kernel.image)
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet systemd.unified_cgroup_hierarchy=1",
        ])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=raw,cache=unsafe",
            scratch.display()
        ))
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=results,security_model=passthrough",
            results.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let console = work.join("console.log");
    let mut log = std::fs::File::create(&console)?;
    for line in BufReader::new(qemu.stdout.take().context("qemu stdout")?).lines() {
        let line = line.unwrap_or_default();
        use std::io::Write as _;
        let _ = writeln!(log, "{line}");
    }
    let status = qemu.wait()?;
    // What the tests wrote: not kept.
    let _ = std::fs::remove_file(&scratch);
    let took = started.elapsed().as_secs();
    let output = std::fs::read_to_string(results.join("output")).unwrap_or_default();
    if !results.join("done").exists() {
        bail!(
            "the guest did not finish (qemu {status}, {took} s); its console: {}\n{output}",
            console.display()
        );
    }
    let skips: Vec<String> = std::fs::read_to_string(results.join("skips"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let mut totals = crate::Totals::default();
    for line in output.lines() {
        totals.add(line);
    }
    let crate::Totals {
        passed,
        failed,
        ignored,
    } = totals;
    println!("{output}");
    let skipped = skips.len() as u64;
    println!(
        "\nguest {} ({accel}, {took} s): {} passed, {failed} failed, {} skipped",
        kernel.version,
        passed.saturating_sub(skipped),
        ignored + skipped
    );
    for skip in &skips {
        println!("  skipped {skip}");
    }
    let demo = plan.demo.is_some().then(|| {
        let text = std::fs::read_to_string(results.join("demo")).unwrap_or_default();
        let passed = text.lines().last() == Some("exit 0");
        println!(
            "\n==> the demo in the guest\n{text}\nguest demo: {}",
            if passed { "passed" } else { "FAILED" }
        );
        passed
    });
    // Nothing else runs in the guest: what is left is the tests' or the
    // demo's debris.
    let left = std::fs::read_to_string(results.join("left")).unwrap_or_default();
    if !left.trim().is_empty() {
        println!("\nleft behind in the guest (BPF pins, cgroups):\n{left}");
    }
    if failed > 0 || (passed == 0 && !options.demo_only) {
        bail!("the tests did not pass in the guest");
    }
    if demo == Some(false) {
        bail!("the demo did not pass in the guest");
    }
    if !left.trim().is_empty() {
        bail!("the guest's tests left BPF pins or cgroups behind");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sh -n`: the generated scripts parse.
    fn parses(script: &str) {
        let file = std::env::temp_dir().join(format!("vm-script-{}.sh", std::process::id()));
        std::fs::write(&file, script).unwrap();
        let out = Command::new("sh").arg("-n").arg(&file).output().unwrap();
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "{}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_guest_scripts_parse() {
        let kernel = Kernel {
            version: "6.1.0-1-amd64".into(),
            image: "/k".into(),
            modules: "/m".into(),
        };
        parses(&start_latency());
        let executables = [PathBuf::from("/t/a-1")];
        let filters = ["view".to_string(), "nested".to_string()];
        let plan = Plan {
            executables: &executables,
            filters: &filters,
            demo: Some(PathBuf::from("/x/xtask")),
            latency: true,
            slowdown: 10,
        };
        let script = stage2(&kernel, &plan, Path::new("/r"));
        parses(&script);
        for part in [
            "PALISADE_TEST_SLOWDOWN=10",
            "/t/a-1 --test-threads=2 'view' 'nested' >>",
            "/x/xtask demo --prebuilt ",
            "sh /r/start.sh",
        ] {
            assert!(script.contains(part), "{part}: {script}");
        }
    }

    #[test]
    fn options_are_checked() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = parse(&args(&["--kernel", "6.6", "view", "nested"])).unwrap();
        assert_eq!(
            (o.series.as_str(), o.filters.as_slice()),
            ("6.6", &["view".to_string(), "nested".to_string()][..])
        );
        assert!(parse(&args(&["--kernel", "six"])).is_err());
        assert_eq!(parse(&args(&["--fast"])).unwrap().filters.len(), FAST.len());
        assert!(parse(&args(&["--quick"])).is_err());
        assert!(parse(&args(&["--demo"])).unwrap().demo_only);
        assert!(parse(&args(&["--demo", "view"])).is_err());
        assert!(parse(&args(&["--demo", "--fast"])).is_err());
    }
}
