//! Resource limits against the real kernel: the values land in the
//! controller files, and real processes feel them (OOM kill, fork
//! failures, CPU throttling). Every cgroup is created under
//! `palisade/t-res-<pid>-<n>` and removed pass or fail.

use std::{
    io::Write,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

mod support;

use nix::{sys::signal, unistd::Pid};
use palisade::{
    cgroups::{self, ContainerCgroups, Hierarchies, LimitError},
    spec::{ResourceLimits, Resources},
};

/// The effect tests measure time and memory: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A container's cgroups that are emptied (SIGKILL) and removed on drop.
struct Guard(Option<ContainerCgroups>);

impl Guard {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t-res-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let h = Hierarchies::detect().expect("detect cgroups");
        Self(Some(h.create(&name).expect("create cgroups")))
    }

    fn cg(&self) -> &ContainerCgroups {
        self.0.as_ref().expect("not yet removed")
    }

    fn kill_all(&self) {
        for dir in self.cg().dirs() {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.parse().ok()) {
                let _ = signal::kill(Pid::from_raw(pid), signal::Signal::SIGKILL);
            }
        }
    }

    /// Removes the cgroups now, returning the error if that fails.
    fn remove(mut self) -> Result<(), cgroups::CgroupError> {
        self.kill_all();
        self.0.take().expect("not yet removed").remove()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.is_some() {
            self.kill_all();
            // ContainerCgroups' own drop removes the directories, patiently.
            self.0.take();
        }
    }
}

fn limits(flags: &[(&str, &str)]) -> ResourceLimits {
    Resources::from_flags(flags)
        .and_then(|r| r.validate())
        .expect("valid limits")
}

/// The directory holding `v1` controller files on a hybrid host, else the v2 one.
fn dir_of(cg: &ContainerCgroups, v1: &str) -> (PathBuf, bool) {
    match cg.v1_dir(v1) {
        Some(d) => (d.to_path_buf(), true),
        None => (cg.unified().to_path_buf(), false),
    }
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// A python3 process that waits for a line on stdin, then runs `script`.
/// Returned before the line is sent, so it can be moved into the cgroup.
fn held_python(script: &str) -> Child {
    let code = format!("import sys\nsys.stdin.readline()\n{script}");
    Command::new("python3")
        .args(["-c", &code])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3")
}

fn release(child: &mut Child) {
    let stdin = child.stdin.as_mut().expect("stdin");
    stdin.write_all(b"go\n").expect("release child");
    stdin.flush().unwrap();
}

/// `MAJ:MIN` of a whole disk of this machine (not a loop, RAM or zram
/// device), for the I/O limits; `None` if it has none (a guest with only
/// shared filesystems).
fn a_disk() -> Option<String> {
    let mut disks: Vec<String> = std::fs::read_dir("/sys/block")
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !["loop", "ram", "zram", "nbd"]
                .iter()
                .any(|p| name.starts_with(p))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("dev")).ok())
        .map(|d| d.trim().to_string())
        .collect();
    disks.sort();
    disks.into_iter().next()
}

#[test]
fn files_hold_the_values() {
    let g = Guard::new();
    let disk = a_disk();
    if disk.is_none() {
        support::skip(
            "files_hold_the_values (I/O limits)",
            "no disk to put I/O limits on",
        );
    }
    let io_flags = disk
        .as_ref()
        .map(|d| (format!("{d} 10M"), format!("{d} 5M")));
    let mut flags = vec![
        ("memory", "64M"),
        ("memory_high", "48M"),
        ("memory_swap", "128M"),
        ("cpu", "0.5"),
        ("cpu_weight", "200"),
        ("cpuset", "0"),
        ("mems", "0"),
        ("pids", "50"),
    ];
    if let Some((read_bps, write_bps)) = &io_flags {
        flags.push(("io_read_bps", read_bps));
        flags.push(("io_write_bps", write_bps));
    }
    let l = limits(&flags);
    cgroups::apply(g.cg(), &l).expect("apply limits");

    let (mem, v1) = dir_of(g.cg(), "memory");
    if v1 {
        assert_eq!(read(mem.join("memory.limit_in_bytes")), "67108864");
        assert_eq!(read(mem.join("memory.soft_limit_in_bytes")), "50331648");
        assert_eq!(read(mem.join("memory.memsw.limit_in_bytes")), "134217728");
    } else {
        assert_eq!(read(mem.join("memory.max")), "67108864");
        assert_eq!(read(mem.join("memory.high")), "50331648");
        assert_eq!(read(mem.join("memory.swap.max")), "67108864");
    }
    let (cpu, v1) = dir_of(g.cg(), "cpu");
    if v1 {
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(cpu.join("cpu.shares")), "2048");
    } else {
        assert_eq!(read(cpu.join("cpu.max")), "50000 100000");
        assert_eq!(read(cpu.join("cpu.weight")), "200");
    }
    let (cpuset, _) = dir_of(g.cg(), "cpuset");
    assert_eq!(read(cpuset.join("cpuset.cpus")), "0");
    assert_eq!(read(cpuset.join("cpuset.mems")), "0");
    let (pids, _) = dir_of(g.cg(), "pids");
    assert_eq!(read(pids.join("pids.max")), "50");
    let (io, v1) = dir_of(g.cg(), "blkio");
    if let Some(disk) = disk.as_ref().filter(|_| v1) {
        assert_eq!(
            read(io.join("blkio.throttle.read_bps_device")),
            format!("{disk} 10485760")
        );
        assert_eq!(
            read(io.join("blkio.throttle.write_bps_device")),
            format!("{disk} 5242880")
        );
    } else if let Some(disk) = &disk {
        let max = read(io.join("io.max"));
        assert!(
            max.contains(&format!("{disk} rbps=10485760 wbps=5242880")),
            "io.max: {max}"
        );
    }
    g.remove().expect("remove cgroups");
}

#[test]
fn device_path_resolves_to_its_number() {
    let g = Guard::new();
    let (io, v1) = dir_of(g.cg(), "blkio");
    if !v1 {
        // The v2 io controller needs delegation, covered by the unit tests.
        support::skip(
            "device_path_resolves_to_its_number",
            "no cgroup v1 blkio hierarchy",
        );
        return;
    }
    let root = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[4] == "/").then(|| f[2].to_string())
        })
        .expect("root mount");
    // Find the whole-disk node for the root's device number, e.g. /dev/vda.
    let dev = std::fs::read_dir("/dev")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            std::fs::metadata(p).is_ok_and(|m| {
                m.file_type().is_block_device()
                    && format!("{}:{}", libc::major(m.rdev()), libc::minor(m.rdev())) == root
            })
        });
    let Some(dev) = dev else {
        support::skip(
            "device_path_resolves_to_its_number",
            &format!("no block device node in /dev for the root filesystem's {root}"),
        );
        return;
    };
    let l = limits(&[("io_read_bps", &format!("{} 1M", dev.display()))]);
    cgroups::apply(g.cg(), &l).expect("apply");
    assert_eq!(
        read(io.join("blkio.throttle.read_bps_device")),
        format!("{root} 1048576")
    );
}

#[test]
fn an_absent_controller_file_is_an_error_naming_it() {
    let g = Guard::new();
    let (io, v1) = dir_of(g.cg(), "blkio");
    let file = if v1 { "blkio.weight" } else { "io.weight" };
    let result = cgroups::apply(g.cg(), &limits(&[("io_weight", "100")]));
    if io.join(file).exists() {
        result.expect("io weight applies where the file exists");
        return;
    }
    // This host's block layer has no weight file (no BFQ / io cost model),
    // or v2 does not delegate io: either way the error says which file.
    let e = result.expect_err("an absent file is not silently skipped");
    let text = e.to_string();
    match e {
        LimitError::Missing { file: f, .. } => {
            assert_eq!(f, io.join(file), "{text}");
            assert!(text.contains("does not exist"), "{text}");
        }
        LimitError::NotDelegated { .. } => assert!(text.contains("io"), "{text}"),
        other => panic!("unexpected error: {other}"),
    }
}

#[test]
fn memory_limit_ooms_a_hog() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let g = Guard::new();
    cgroups::apply(
        g.cg(),
        &limits(&[("memory", "32M"), ("memory_swap", "32M")]),
    )
    .expect("apply");
    assert!(!cgroups::oom_killed(g.cg()));
    let mut child = held_python(
        "b = bytearray(64 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\nprint('survived')",
    );
    g.cg().join(child.id() as i32).expect("join");
    release(&mut child);
    let out = child.wait_with_output().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "{:?} stdout {} stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cgroups::oom_killed(g.cg()), "the OOM kill is reported");
    g.remove().expect("remove cgroups");
}

#[test]
fn pids_limit_makes_fork_fail() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let g = Guard::new();
    cgroups::apply(g.cg(), &limits(&[("pids", "20")])).expect("apply");
    let mut child = held_python(
        r#"
import errno, os, signal
kids, failed = [], 0
for _ in range(60):
    try:
        pid = os.fork()
    except OSError as e:
        assert e.errno == errno.EAGAIN, e
        failed += 1
        continue
    if pid == 0:
        signal.pause()
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print(len(kids), failed)
"#,
    );
    g.cg().join(child.id() as i32).expect("join");
    release(&mut child);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let counts: Vec<u32> = stdout
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let (forked, failed) = (counts[0], counts[1]);
    assert!(
        forked <= 19,
        "at most 19 children beside the parent: {stdout}"
    );
    assert!(failed >= 41, "the rest failed with EAGAIN: {stdout}");
    g.remove()
        .expect("the cgroup is removable after the fork storm");
}

/// CPU time the cgroup has used, in nanoseconds.
fn cpu_usage_ns(cg: &ContainerCgroups) -> u64 {
    match cg.v1_dir("cpuacct") {
        Some(d) => read(d.join("cpuacct.usage")).parse().unwrap(),
        None => {
            let stat = read(cg.unified().join("cpu.stat"));
            let usec: u64 = stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec ")?.parse().ok())
                .expect("usage_usec");
            usec * 1000
        }
    }
}

#[test]
fn cpu_limit_holds_a_busy_loop_to_half_a_cpu() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let g = Guard::new();
    cgroups::apply(g.cg(), &limits(&[("cpu", "0.5")])).expect("apply");
    let mut child = held_python("while True:\n    pass");
    g.cg().join(child.id() as i32).expect("join");
    release(&mut child);
    thread::sleep(Duration::from_millis(300));
    let (t0, u0) = (Instant::now(), cpu_usage_ns(g.cg()));
    thread::sleep(Duration::from_secs(3));
    let (t1, u1) = (Instant::now(), cpu_usage_ns(g.cg()));
    let _ = child.kill();
    let _ = child.wait();
    let share = (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64;
    assert!(
        (0.4..=0.6).contains(&share),
        "busy loop used {share:.3} of a CPU under cpu = 0.5"
    );
    g.remove().expect("remove cgroups");
}

#[test]
fn v2_controller_not_delegated_is_named() {
    // The container as a pure v2 host would have it: no v1 hierarchies.
    // Here the root's cgroup2 offers no controller (all are bound to v1),
    // so enabling memory for palisade must fail, naming the root's file.
    let h = Hierarchies::detect().expect("detect");
    let root_offers_memory = std::fs::read_to_string(h.unified.join("cgroup.subtree_control"))
        .unwrap_or_default()
        .split_whitespace()
        .any(|c| c == "memory");
    let v2_only = Hierarchies {
        unified: h.unified.clone(),
        v1: Vec::new(),
    };
    let name = format!("t-res-{}-v2", std::process::id());
    let cg = v2_only.create(&name).expect("create");
    let result = cgroups::apply(&cg, &limits(&[("memory", "64M")]));
    if root_offers_memory {
        result.expect("memory is delegated: apply works");
        assert_eq!(read(cg.unified().join("memory.max")), "67108864");
    } else {
        let e = result.expect_err("an undelegated controller is an error");
        let text = e.to_string();
        assert!(
            matches!(&e, LimitError::NotDelegated { controller: "memory", file }
                if *file == h.unified.join("cgroup.subtree_control")),
            "{text}"
        );
        assert!(text.contains("echo +memory"), "{text}");
        assert!(!cgroups::oom_killed(&cg));
    }
    cg.remove().expect("remove");
}

#[test]
fn palisade_run_applies_the_policy_resources() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sb = support::Sandbox::new("res-run");
    let policy = sb.policy("[resources]\nmemory = \"32M\"\nmemory_swap = \"32M\"\npids = 10\n");
    let hog = "b = bytearray(64 << 20)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\n";
    let out = sb.run(Some(&policy), &["python3", "-c", hog]);
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGKILL),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
}

/// A control the kernel lacks stops the run before the command starts.
#[test]
fn a_control_the_kernel_lacks_stops_the_run() {
    const TEST: &str = "a_control_the_kernel_lacks_stops_the_run";
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sb = support::Sandbox::new("res-lacks");
    let hier = Hierarchies::detect().expect("detect");
    let weight_file = match hier
        .v1
        .iter()
        .find(|h| h.controllers.iter().any(|c| c == "blkio"))
    {
        Some(h) => h.mount.join("palisade").join(&sb.name).join("blkio.weight"),
        None => {
            support::skip(TEST, "no cgroup v1 blkio hierarchy");
            return;
        }
    };
    let has_weight = hier.v1.iter().any(|h| {
        h.controllers.iter().any(|c| c == "blkio") && h.mount.join("blkio.weight").exists()
    });
    if has_weight {
        support::skip(
            TEST,
            "this kernel has blkio.weight (a control it lacks is needed)",
        );
        return;
    }
    let policy = sb.policy("[resources]\nio_weight = 100\n");
    let out = sb.run(Some(&policy), &["true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains(&weight_file.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("not started"), "{stderr}");
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
}

/// The v1 cpu hierarchy's mount, if it has real-time group scheduling.
fn rt_cpu_mount() -> Option<PathBuf> {
    let hierarchies = Hierarchies::detect().ok()?;
    let cpu = hierarchies
        .v1
        .iter()
        .find(|h| h.controllers.iter().any(|c| c == "cpu"))?;
    cpu.mount
        .join("cpu.rt_runtime_us")
        .exists()
        .then(|| cpu.mount.clone())
}

/// The `palisade` parent's real-time grant (0 before palisade made it).
fn palisade_rt_runtime(mount: &std::path::Path) -> u64 {
    std::fs::read_to_string(mount.join("palisade/cpu.rt_runtime_us"))
        .map_or(0, |t| t.trim().parse().expect("a number"))
}

/// `--cpu-rt-runtime 100000 --cpu-rt-period 1000000`: a SCHED_FIFO busy
/// loop in the container gets about 10% of its CPU, never more than its
/// budget (one period's runtime of slack for where the 3 s window starts),
/// where a container without a budget cannot make a task real-time at
/// all. The `palisade` parent's grant is raised to cover the container
/// and lowered again once it is removed.
#[test]
fn a_real_time_task_takes_no_more_than_its_budget() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mount) = rt_cpu_mount() else {
        support::skip(
            "a_real_time_task_takes_no_more_than_its_budget",
            "no cpu.rt_runtime_us (real-time group scheduling) on this host",
        );
        return;
    };
    let before = palisade_rt_runtime(&mount);
    let sb = support::Sandbox::new("rt");
    let script = "import os, time\n\
                  try:\n\
                  \x20   os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))\n\
                  except OSError as e:\n\
                  \x20   print('refused', e.errno)\n\
                  \x20   raise SystemExit\n\
                  t0, c0 = time.monotonic(), time.process_time()\n\
                  while time.monotonic() - t0 < 3.0:\n\
                  \x20   pass\n\
                  print(time.process_time() - c0, time.monotonic() - t0)\n";
    let run = |name: &str, extra: &[&str]| {
        let out = sb
            .palisade()
            .args([
                "run",
                "--name",
                name,
                "--cap-add",
                "SYS_NICE",
                "--cpuset",
                "0",
            ])
            .args(extra)
            .args(["--", "python3", "-c", script])
            .output()
            .unwrap();
        support::ok(&out)
    };
    assert_eq!(
        run(&format!("{}-none", sb.name), &[]).trim(),
        "refused 1",
        "no budget: EPERM for SCHED_FIFO"
    );
    let out = run(
        &sb.name,
        &["--cpu-rt-runtime", "100000", "--cpu-rt-period", "1000000"],
    );
    let (cpu, wall) = out
        .trim()
        .split_once(' ')
        .map(|(c, w)| (c.parse::<f64>().unwrap(), w.parse::<f64>().unwrap()))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        cpu <= 0.1 * wall + 0.1,
        "{cpu:.3} s of CPU in {wall:.3} s: more than 100 ms per second"
    );
    assert!(
        cpu >= 0.05 * wall,
        "{cpu:.3} s of CPU in {wall:.3} s: the real-time task barely ran"
    );
    assert_eq!(palisade_rt_runtime(&mount), before, "the grant is returned");
    // A runtime longer than its period, or a period alone, is bad input.
    for flags in [
        &["--cpu-rt-runtime", "2000000"][..],
        &["--cpu-rt-period", "100000"][..],
    ] {
        let out = sb
            .palisade()
            .args(["run", "--name", &format!("{}-bad", sb.name)])
            .args(flags)
            .args(["--", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", support::describe(&out));
    }
}
