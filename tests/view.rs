//! What a container sees of itself (`--proc-view`): `free`, `nproc`,
//! `/proc/cpuinfo`, `uptime`, python and a JVM tell the container's
//! limits, not the host's; the files are served by the agent, bound at
//! start or later, fail plainly when the agent is killed and come back
//! when it restarts; a stopped agent leaves the host's files.

mod support;

use std::{
    path::Path,
    process::Output,
    thread,
    time::{Duration, Instant},
};

use support::{Sandbox, agent::Agent, ok, skip};

const LIMITS: &[&str] = &["--memory", "256M", "--cpu", "0.5", "--cpuset", "0"];

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `sh -c SCRIPT` inside the container, which must succeed; its stdout.
fn sh(sb: &Sandbox, script: &str) -> String {
    ok(&sb.exec(&["sh", "-c", script]))
}

/// The kB value of `key` in a meminfo text.
fn kb(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {meminfo}"))
}

/// The container's `proc_view` in `ps --json`.
fn ps_view(sb: &Sandbox) -> String {
    let o = sb.palisade().args(["ps", "--json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == sb.name.as_str())
        .map(|r| r["proc_view"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("{} not in ps: {rows}", sb.name))
}

fn host_mem_total_kb() -> u64 {
    kb(
        &std::fs::read_to_string("/proc/meminfo").unwrap(),
        "MemTotal",
    )
}

/// Waits (up to 20 s) until the container's `ps` view state is `want`.
fn wait_view(sb: &Sandbox, want: &str) {
    let deadline = support::deadline(20);
    loop {
        let now = ps_view(sb);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "proc_view stayed {now}, not {want}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn view_mounted(sb: &Sandbox) -> bool {
    let view = sb.root.join(".view");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(view.to_str().unwrap()))
}

#[test]
fn a_container_sees_its_own_memory_cpus_and_uptime() {
    let sb = Sandbox::new("view-limits");
    let _agent = Agent::start(&sb, &[]);
    let mut flags = vec!["--proc-view"];
    flags.extend(LIMITS);
    sb.start_sleeping(&flags);
    assert_eq!(ps_view(&sb), "served");

    let free = sh(&sb, "free -m");
    let total: u64 = free
        .lines()
        .find_map(|l| l.strip_prefix("Mem:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("free -m: {free}"));
    assert_eq!(total, 256, "free -m: {free}");
    assert_eq!(sh(&sb, "nproc").trim(), "1");
    assert_eq!(sh(&sb, "grep -c processor /proc/cpuinfo").trim(), "1");
    assert_eq!(sh(&sb, "cat /sys/devices/system/cpu/online").trim(), "0");
    let up: f64 = sh(&sb, "cat /proc/uptime")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let host_up: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(up < 30.0 && up < host_up, "uptime {up} (host {host_up})");
    let uptime = sh(&sb, "uptime");
    assert!(uptime.contains(" up 0 min"), "uptime: {uptime}");

    // /proc/stat: one CPU, and the container's time.
    let stat = sh(&sb, "cat /proc/stat");
    let cpu_lines: Vec<&str> = stat.lines().filter(|l| l.starts_with("cpu")).collect();
    assert_eq!(cpu_lines.len(), 2, "{stat}");
    assert!(cpu_lines[1].starts_with("cpu0 "), "{stat}");
    assert!(
        stat.contains("\nbtime "),
        "the host's boot time stays: {stat}"
    );

    let py = sh(
        &sb,
        "/usr/bin/python3 -c 'import os; print(os.cpu_count(), len(os.sched_getaffinity(0)))'",
    );
    assert_eq!(py.trim(), "1 1", "python");

    // MemAvailable falls by what a process takes.
    let script = "import time\n\
def avail():\n    return int([l for l in open('/proc/meminfo') if l.startswith('MemAvailable:')][0].split()[1])\n\
before = avail()\n\
b = bytearray(200 << 20)\n\
for i in range(0, len(b), 4096): b[i] = 1\n\
print(before, avail())\n";
    let py = sh(&sb, &format!("/usr/bin/python3 -c \"{script}\""));
    let (before, after) = py
        .split_once(' ')
        .map(|(a, b)| {
            (
                a.trim().parse::<u64>().unwrap(),
                b.trim().parse::<u64>().unwrap(),
            )
        })
        .unwrap();
    assert!(before > 200 * 1024, "{py}");
    let fell = before.saturating_sub(after);
    assert!(
        (195 * 1024..=230 * 1024).contains(&fell),
        "MemAvailable fell by {fell} kB for 200 MiB: {py}"
    );

    if Path::new("/usr/bin/java").exists() {
        // The container's /tmp is its own: the source is written there.
        let java = sh(
            &sb,
            "echo 'public class Cpus { public static void main(String[] a) { System.out.println(Runtime.getRuntime().availableProcessors()); } }' > /tmp/Cpus.java && java -Xmx64m /tmp/Cpus.java",
        );
        assert_eq!(java.trim(), "1", "the JVM's processors");
    } else {
        skip(
            "a_container_sees_its_own_memory_cpus_and_uptime (JVM part)",
            "no /usr/bin/java",
        );
    }
}

/// `MAJ:MIN` of the whole disk holding `path`; `None` when it is on no
/// disk (a tmpfs).
fn whole_disk_of(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).unwrap().dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let sys = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.exists() {
        return None;
    }
    if sys.join("partition").exists() {
        let parent = std::fs::canonicalize(&sys).unwrap();
        return Some(
            std::fs::read_to_string(parent.parent().unwrap().join("dev"))
                .unwrap()
                .trim()
                .to_string(),
        );
    }
    Some(format!("{major}:{minor}"))
}

#[test]
fn load_cpu_time_and_io_are_the_containers() {
    let sb = Sandbox::new("view-load");
    let _agent = Agent::start(&sb, &[]);
    let data = sb.dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mount = format!("{}:/data", data.display());
    // v1's blkio counts a device's I/O only where it is throttled: a
    // limit far above what the test writes.
    let disk = whole_disk_of(&data);
    let limit = disk.as_ref().map(|d| format!("{d} 1000M"));
    let mut flags = vec!["--proc-view", "--cpuset", "0", "--mount", &mount];
    if let Some(limit) = &limit {
        flags.extend(["--io-write-bps", limit.as_str()]);
    }
    sb.start_sleeping(&flags);
    let idle = sh(&sb, "cat /proc/loadavg");
    assert!(idle.starts_with("0.00 0.00 0.00 "), "{idle}");

    // One busy loop for 7 s (no forks: it runs all along), so more than
    // one load sample sees it, read while it still runs; and CPU time.
    let o = sb
        .palisade()
        .args(["exec", &sb.name, "--", "sh", "-c"])
        .arg("timeout 8 sh -c 'while :; do :; done' & sleep 7; cat /proc/loadavg; wait; cat /proc/stat")
        .output()
        .unwrap();
    let text = ok(&o);
    let mut words = text.split_whitespace();
    let one: f64 = words.next().unwrap().parse().unwrap();
    assert!(one > 0.0, "the busy loop shows in the load: {text}");
    let running_total = words.nth(2).unwrap();
    let (running, total) = running_total.split_once('/').unwrap();
    assert!(running.parse::<u32>().unwrap() >= 1, "{text}");
    assert!(total.parse::<u32>().unwrap() >= 2, "{text}");
    let cpu: Vec<u64> = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    // user + system: at least 3 s of the 7 (100 ticks a second), on a
    // shared machine.
    assert!(cpu[0] + cpu[2] >= 300, "{text}");

    if disk.is_none() {
        support::skip(
            "load_cpu_time_and_io_are_the_containers (diskstats)",
            "its scratch directory is on no disk",
        );
        return;
    }
    // Direct writes to a disk: the container's own sectors.
    sh(
        &sb,
        "dd if=/dev/zero of=/data/f bs=1M count=16 oflag=direct 2>/dev/null; sync",
    );
    let disk = sh(&sb, "cat /proc/diskstats");
    let written: u64 = disk
        .lines()
        .filter_map(|l| l.split_whitespace().nth(9)?.parse::<u64>().ok())
        .sum();
    assert!(
        written >= 16 * 2048,
        "16 MiB written shows as sectors written: {disk}"
    );
    let host_devices = std::fs::read_to_string("/proc/diskstats")
        .unwrap()
        .lines()
        .count();
    assert!(
        disk.lines().count() < host_devices,
        "only devices it used: {disk}"
    );
}

#[test]
fn killing_the_agent_fails_the_files_until_it_restarts() {
    let sb = Sandbox::new("view-kill");
    let mut agent = Agent::start(&sb, &[]);
    let pid = sb.start_sleeping(&["--proc-view", "--memory", "256M"]);
    assert_eq!(kb(&sh(&sb, "cat /proc/meminfo"), "MemTotal"), 256 * 1024);

    agent.signal("KILL");
    let _ = agent.child.wait();
    let o = sb.exec(&["cat", "/proc/meminfo"]);
    assert!(
        !o.status.success(),
        "a dead agent's file is read: {}",
        out(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Transport endpoint is not connected"), "{err}");
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container runs on"
    );
    assert_eq!(ps_view(&sb), "failing");

    let mut agent = Agent::start(&sb, &[]);
    assert_eq!(kb(&sh(&sb, "cat /proc/meminfo"), "MemTotal"), 256 * 1024);
    assert_eq!(ps_view(&sb), "served");

    // Stopped cleanly: the host's files, not errors.
    assert!(agent.stop().success());
    assert_eq!(
        kb(&sh(&sb, "cat /proc/meminfo"), "MemTotal"),
        host_mem_total_kb()
    );
    assert_eq!(ps_view(&sb), "host-files");
    assert!(!view_mounted(&sb), "the stopped agent's filesystem is gone");

    // A killed agent's dead mount: `system prune` detaches it.
    let agent = Agent::start(&sb, &[]);
    agent.signal("KILL");
    drop(agent);
    assert!(view_mounted(&sb));
    let o = sb.palisade().args(["system", "prune"]).output().unwrap();
    assert!(
        ok(&o).contains("detached a dead agent's /proc view"),
        "{}",
        out(&o)
    );
    assert!(!view_mounted(&sb));
}

#[test]
fn a_container_started_without_an_agent_gets_its_view_when_one_starts() {
    let sb = Sandbox::new("view-late");
    let o = sb
        .palisade()
        .args(["run", "-d", "--name", &sb.name, "--memory", "128M"])
        .arg("--policy")
        .arg(sb.policy("[view]\nproc = true\n"))
        .args(["--", "sleep", "600"])
        .output()
        .unwrap();
    ok(&o);
    let warned = String::from_utf8_lossy(&o.stderr);
    assert!(warned.contains("no agent serves /proc views"), "{warned}");
    sb.wait_running();
    assert_eq!(
        kb(&sh(&sb, "cat /proc/meminfo"), "MemTotal"),
        host_mem_total_kb()
    );
    assert_eq!(ps_view(&sb), "host-files");

    let _agent = Agent::start(&sb, &[]);
    wait_view(&sb, "served");
    assert_eq!(kb(&sh(&sb, "cat /proc/meminfo"), "MemTotal"), 128 * 1024);
    // Read-only, whoever asks.
    let o = sb.exec(&["sh", "-c", "echo 1 > /proc/meminfo"]);
    assert!(!o.status.success());
    assert_eq!(kb(&sh(&sb, "cat /proc/meminfo"), "MemTotal"), 128 * 1024);
}

#[test]
fn a_view_cannot_be_added_by_policy_apply() {
    let sb = Sandbox::new("view-apply");
    let _agent = Agent::start(&sb, &[]);
    sb.start_sleeping(&["--memory", "128M"]);
    let o = sb.try_apply(&sb.policy("[view]\nproc = true\n"));
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("view.proc"));
    assert_eq!(ps_view(&sb), "off");
    assert_eq!(
        kb(&sh(&sb, "cat /proc/meminfo"), "MemTotal"),
        host_mem_total_kb()
    );
}
