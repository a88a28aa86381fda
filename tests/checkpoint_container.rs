//! Checkpoint and restore of whole containers: `palisade checkpoint NAME`
//! freezes the container, dumps its tree and removes it; `palisade
//! restore --dir DIR -d` makes it again from its recipe, under the same
//! policy, with the same pids inside its pid namespace.

use std::{
    fs,
    path::Path,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

mod support;

use sha2::Digest as _;
use support::{Sandbox, describe, listen_tcp};

/// A python3 loop in the container: every 100 ms it prints a counter,
/// and once `/mnt/go` exists, the outcome of a connect to each of the
/// two ports (so no socket is open at the checkpoint).
fn script(allowed: u16, denied: u16) -> String {
    format!(
        "import os, socket, time\n\
         i = 0\n\
         while True:\n\
         \x20   i += 1\n\
         \x20   out = [str(i)]\n\
         \x20   if os.path.exists('/mnt/go'):\n\
         \x20       for port in ({allowed}, {denied}):\n\
         \x20           s = socket.socket()\n\
         \x20           try:\n\
         \x20               s.connect(('127.0.0.1', port))\n\
         \x20               out.append('ok')\n\
         \x20           except PermissionError:\n\
         \x20               out.append('denied')\n\
         \x20           except OSError as e:\n\
         \x20               out.append('errno%d' % e.errno)\n\
         \x20           s.close()\n\
         \x20   print(' '.join(out), flush=True)\n\
         \x20   time.sleep(0.1)\n"
    )
}

fn log_lines(sb: &Sandbox) -> Vec<String> {
    fs::read_to_string(sb.root.join(&sb.name).join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn last_count(sb: &Sandbox) -> u64 {
    log_lines(sb)
        .iter()
        .rev()
        .find_map(|l| l.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = support::deadline(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the counting container detached, with `share` bound at /mnt (a directory the host root has).
fn start(sb: &Sandbox, share: &Path, policy: &Path, script: &str) {
    let out = sb
        .palisade()
        .args(["run", "-d", "--name", &sb.name, "--policy"])
        .arg(policy)
        .arg("--mount")
        .arg(format!("{}:/mnt", share.display()))
        .args(["--", "python3", "-c", script])
        .output()
        .unwrap();
    assert!(out.status.success(), "run: {}", describe(&out));
    sb.wait_running();
    wait_for("the container to count", || last_count(sb) >= 3);
}

/// `palisade checkpoint NAME --dir IMAGE`, which must succeed.
fn checkpoint(sb: &Sandbox, image: &Path) -> std::process::Output {
    let out = sb
        .palisade()
        .args(["checkpoint", &sb.name, "--dir"])
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "checkpoint: {}", describe(&out));
    out
}

fn state(sb: &Sandbox) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(sb.root.join(&sb.name).join("state.json")).unwrap())
        .unwrap()
}

#[test]
fn a_container_restores_under_its_policy_and_counts_on() {
    let sb = Sandbox::new("ckpt-ctr");
    let allowed = listen_tcp(&["127.0.0.1"]);
    let denied = listen_tcp(&["127.0.0.1"]);
    let policy = sb.connect_policy(&[&format!("allow tcp 127.0.0.1/32:{allowed}"), "deny any"]);
    let share = sb.dir.join("share");
    fs::create_dir_all(&share).unwrap();
    start(&sb, &share, &policy, &script(allowed, denied));

    let image = sb.dir.join("image");
    // The log goes with the container: the count it had reached is read
    // just before (it may print one more line before it is frozen).
    let before = last_count(&sb);
    let out = checkpoint(&sb, &image);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ended and removed"),
        "{}",
        describe(&out)
    );
    let out = sb.palisade().args(["ps"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&sb.name),
        "the container is gone: {}",
        describe(&out)
    );
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(image.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["body"]["root"], 1, "pids are the container's own");
    let at_checkpoint = last_count(&sb);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        last_count(&sb),
        at_checkpoint,
        "nothing counts while it is gone"
    );

    let out = sb
        .palisade()
        .args(["restore", "-d", "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", describe(&out));
    let pid = sb.wait_running();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.ends_with("\t1"), "pid 1 of its namespace: {nspid}");
    assert!(status.contains("Seccomp:\t2"), "its seccomp filter is back");
    wait_for("the restored container to count on", || {
        last_count(&sb) >= before + 3
    });
    // The new log starts where the old one ended, not at 1.
    let first: u64 = log_lines(&sb)[0]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first > before && first <= before + 3,
        "it went on from {before}, not from the start: first line {first}"
    );
    // The restored process itself is still under the policy.
    fs::write(share.join("go"), "").unwrap();
    wait_for("a connect report", || {
        log_lines(&sb).iter().any(|l| l.split(' ').count() == 3)
    });
    let report = log_lines(&sb)
        .into_iter()
        .rfind(|l| l.split(' ').count() == 3)
        .unwrap();
    assert!(
        report.ends_with(" ok denied"),
        "allowed then denied: {report}"
    );
    assert_eq!(state(&sb)["status"], "running");
}

#[test]
fn leave_running_keeps_the_container_and_its_image_restores_later() {
    let sb = Sandbox::new("ckpt-ctr-lr");
    let port = listen_tcp(&["127.0.0.1"]);
    let policy = sb.connect_policy(&["deny any"]);
    let share = sb.dir.join("share");
    fs::create_dir_all(&share).unwrap();
    start(&sb, &share, &policy, &script(port, port));
    let pid = state(&sb)["pid"].as_i64().unwrap();
    let image = sb.dir.join("image");
    let out = sb
        .palisade()
        .args(["checkpoint", "--leave-running", &sb.name, "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "checkpoint: {}", describe(&out));
    assert_eq!(state(&sb)["status"], "running");
    assert_eq!(
        state(&sb)["pid"].as_i64().unwrap(),
        pid,
        "the same container"
    );
    let now = last_count(&sb);
    wait_for("it to count on", || last_count(&sb) >= now + 3);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0"), "{status}");

    // While it runs, its name is taken: a restore under it is refused.
    let out = sb
        .palisade()
        .args(["restore", "-d", "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        describe(&out)
    );
    // Under another name it restores beside the original.
    let other = format!("{}-copy", sb.name);
    let out = sb
        .palisade()
        .args(["restore", "-d", "--name", &other, "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", describe(&out));
    let copy_log = sb.root.join(&other).join("log");
    wait_for("the copy to count", || {
        fs::read_to_string(&copy_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
            .any(|n| n > now)
    });
}

#[test]
fn a_process_outside_the_tree_is_refused_and_the_container_runs_on() {
    let sb = Sandbox::new("ckpt-ctr-exec");
    let policy = sb.policy("");
    let share = sb.dir.join("share");
    fs::create_dir_all(&share).unwrap();
    start(&sb, &share, &policy, &script(1, 1));
    let mut exec = sb
        .palisade()
        .args(["exec", &sb.name, "--", "sleep", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cgroup = sb.unified_dir();
    wait_for("the exec'd process", || {
        fs::read_to_string(cgroup.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .count()
            >= 2
    });
    let image = sb.dir.join("image");
    let out = sb
        .palisade()
        .args(["checkpoint", &sb.name, "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a descendant of its first process"),
        "{}",
        describe(&out)
    );
    assert!(!image.exists(), "no image is written");
    assert_eq!(state(&sb)["status"], "running");
    let now = last_count(&sb);
    wait_for("it to count on", || last_count(&sb) >= now + 2);
    let _ = exec.kill();
    let _ = exec.wait();
}

/// Restored in the foreground (no `-d`), the container's output — its log
/// when it was checkpointed — goes to `restore`'s own stdout, and restore
/// waits for it like `run`.
#[test]
fn a_foreground_restore_prints_the_containers_output() {
    use std::io::BufRead;
    let sb = Sandbox::new("ckpt-ctr-fg");
    let policy = sb.policy("");
    let share = sb.dir.join("share");
    fs::create_dir_all(&share).unwrap();
    start(&sb, &share, &policy, &script(1, 1));
    let image = sb.dir.join("image");
    let before = last_count(&sb);
    checkpoint(&sb, &image);
    let mut fg = sb
        .palisade()
        .args(["restore", "--dir"])
        .arg(&image)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(fg.stdout.take().unwrap()).lines();
    let first: u64 = lines
        .next()
        .expect("the restored container prints")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first > before && first <= before + 3,
        "it went on from {before}: first line {first}"
    );
    let second: u64 = lines.next().unwrap().unwrap().parse().unwrap();
    assert_eq!(second, first + 1);
    let out = sb.palisade().args(["rm", "-f", &sb.name]).output().unwrap();
    assert!(out.status.success(), "rm: {}", describe(&out));
    let out = fg.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(137),
        "restore ends with its container: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image's meta.json with its recipe changed by `change`, its CRC
/// made right again so that only the signature can tell.
fn forge_recipe(image: &Path, change: impl FnOnce(&mut palisade::spec::Recipe)) -> String {
    use palisade::checkpoint::image::Image;
    let text = fs::read_to_string(image.join("meta.json")).unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut body: Image = serde_json::from_value(meta["body"].take()).unwrap();
    change(&mut body.container.as_mut().unwrap().recipe);
    meta["body_crc32"] = crc32fast::hash(&serde_json::to_vec(&body).unwrap()).into();
    meta["body"] = serde_json::to_value(&body).unwrap();
    serde_json::to_string_pretty(&meta).unwrap()
}

/// The image's recipe rewritten as the forgery did: the host's
/// root mounted, a host block device, and a policy that allows any
/// connect. Returns the forged meta.json.
fn forge(image: &Path) -> String {
    forge_recipe(image, |recipe| {
        let root = palisade::spec::BindMount::parse("/:/mnt").unwrap();
        recipe.launch.mounts.insert(0, root);
        let loop0 = palisade::spec::DeviceRequest::parse("/dev/loop0:rwm").unwrap();
        let rule = palisade::spec::DeviceRule::parse("b 7:0 rwm").unwrap();
        recipe.launch.devices.push((loop0, rule));
        recipe.policy = Some("[network]\nconnect = [\"allow any\"]\n".into());
        recipe.applied_policy = None;
    })
}

/// A copy of `image` whose meta.json is `meta` (unsigned: restored only
/// with --trust-image).
fn unsigned_copy(sb: &Sandbox, image: &Path, name: &str, meta: &str) -> std::path::PathBuf {
    let dir = sb.dir.join(name);
    fs::create_dir(&dir).unwrap();
    for f in ["pages.img", "files.img"] {
        fs::copy(image.join(f), dir.join(f)).unwrap();
    }
    fs::write(dir.join("meta.json"), meta).unwrap();
    dir
}

/// `restore -d --dir DIR [extra]` of a bad image: exit 2, naming
/// `expect`, and no container, state or cgroup made.
fn refused_and_nothing_made(sb: &Sandbox, dir: &Path, extra: &[&str], expect: &str) {
    refused_with(sb, dir, extra, 2, expect);
}

/// As [`refused_and_nothing_made`], with exit status `code`.
fn refused_with(sb: &Sandbox, dir: &Path, extra: &[&str], code: i32, expect: &str) {
    let out = sb
        .palisade()
        .args(["restore", "-d", "--dir"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(expect),
        "expected {expect:?}: {}",
        describe(&out)
    );
    assert!(!sb.root.join(&sb.name).exists(), "no container state");
    assert!(sb.leftover_cgroups().is_empty(), "no cgroup");
    let ps = sb.palisade().args(["ps"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ps.stdout).contains(&sb.name));
}

/// The counting container under a deny-all connect policy, checkpointed
/// (and so removed) into `DIR/image`.
fn checkpointed(sb: &Sandbox) -> std::path::PathBuf {
    let policy = sb.connect_policy(&["deny any"]);
    let share = sb.dir.join("share");
    fs::create_dir_all(&share).unwrap();
    start(sb, &share, &policy, &script(1, 1));
    let image = sb.dir.join("image");
    checkpoint(sb, &image);
    image
}

#[test]
fn a_forged_container_image_is_refused_and_nothing_is_made() {
    let sb = Sandbox::new("ckpt-ctr-forge");
    let image = checkpointed(&sb);
    let good_meta = fs::read_to_string(image.join("meta.json")).unwrap();
    let good_manifest = fs::read_to_string(image.join("manifest.json")).unwrap();
    let forged = forge(&image);
    assert!(forged.contains("\"/mnt\"") && forged.contains("allow any"));

    // The forgery is a well-formed image on its checksums alone.
    let unsigned = unsigned_copy(&sb, &image, "unsigned", &forged);
    let read = palisade::checkpoint::image::open(&unsigned, None).expect("CRCs hold");
    let recipe = &read.image.container.as_ref().unwrap().recipe;
    assert_eq!(recipe.launch.mounts[0].describe(), "/:/mnt");
    // Unsigned, it is refused.
    refused_and_nothing_made(&sb, &unsigned, &[], "unsigned");

    // Forged meta.json: its digest in the manifest differs.
    fs::write(image.join("meta.json"), &forged).unwrap();
    refused_and_nothing_made(&sb, &image, &[], "meta.json: does not match");

    // The manifest's entry rewritten to the forgery's size and digest:
    // its signature no longer holds.
    let (head, body) = good_manifest.split_at(
        good_manifest
            .match_indices('\n')
            .nth(2)
            .map(|(i, _)| i + 1)
            .unwrap(),
    );
    let mut entries: serde_json::Value = serde_json::from_str(body).unwrap();
    let digest: String = sha2::Sha256::digest(forged.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    entries["meta.json"]["size"] = forged.len().into();
    entries["meta.json"]["sha256"] = digest.into();
    let rewritten = format!("{head}{}", serde_json::to_string_pretty(&entries).unwrap());
    fs::write(image.join("manifest.json"), rewritten).unwrap();
    refused_and_nothing_made(
        &sb,
        &image,
        &[],
        "its signature does not match its contents",
    );

    // meta.json a link to /dev/zero: refused at once.
    fs::write(image.join("manifest.json"), &good_manifest).unwrap();
    fs::remove_file(image.join("meta.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", image.join("meta.json")).unwrap();
    refused_and_nothing_made(&sb, &image, &[], "symbolic link");

    // The real image, with its own key, restores.
    fs::remove_file(image.join("meta.json")).unwrap();
    fs::write(image.join("meta.json"), &good_meta).unwrap();
    fs::set_permissions(
        image.join("meta.json"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = sb
        .palisade()
        .args(["restore", "-d", "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", describe(&out));
    sb.wait_running();
}

/// A checkpoint refused for its --dir leaves the container as it was:
/// running, the same pid, untraced, not frozen, counting on.
#[test]
fn a_refused_container_checkpoint_leaves_it_running() {
    let sb = Sandbox::new("ckpt-ctr-dir");
    let policy = sb.policy("");
    let share = sb.dir.join("share");
    fs::create_dir_all(&share).unwrap();
    start(&sb, &share, &policy, &script(1, 1));
    let pid = state(&sb)["pid"].as_i64().unwrap();
    let victim = sb.dir.join("victim");
    fs::write(&victim, "precious").unwrap();
    let image = sb.dir.join("image");
    fs::create_dir(&image).unwrap();
    std::os::unix::fs::symlink(&victim, image.join("meta.json")).unwrap();
    let out = sb
        .palisade()
        .args(["checkpoint", &sb.name, "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not empty"),
        "{}",
        describe(&out)
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert_eq!(state(&sb)["status"], "running");
    assert_eq!(state(&sb)["pid"].as_i64().unwrap(), pid);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0"), "{status}");
    let events = fs::read_to_string(sb.unified_dir().join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 0"), "{events}");
    let now = last_count(&sb);
    wait_for("it to count on", || last_count(&sb) >= now + 3);
}

/// A recipe whose policy, limits or devices cannot be applied as recorded
/// is refused (even from an image trusted without a signature): never a
/// default policy in its place, never another device, and nothing is
/// left behind. The untouched image then restores.
#[test]
fn a_recipe_that_cannot_be_applied_as_recorded_is_refused() {
    let sb = Sandbox::new("ckpt-ctr-recipe");
    let image = checkpointed(&sb);
    let trusted = ["--trust-image"];

    // The enforced policy no longer parses: refused, not Policy::default().
    let meta = forge_recipe(&image, |r| {
        r.policy = Some("[network]\nconnect = [\"allow bogus\"]\n".into());
    });
    let dir = unsigned_copy(&sb, &image, "bad-policy", &meta);
    refused_and_nothing_made(&sb, &dir, &trusted, "the image's recipe");

    // The last applied policy is the one in force: it must parse too.
    let meta = forge_recipe(&image, |r| r.applied_policy = Some("[network\n".into()));
    let dir = unsigned_copy(&sb, &image, "bad-applied", &meta);
    refused_and_nothing_made(&sb, &dir, &trusted, "<recorded policy>");

    // A recorded device whose host node is now another device.
    let meta = forge_recipe(&image, |r| {
        let null = palisade::spec::DeviceRequest::parse("/dev/null:/dev/mine:rw").unwrap();
        let rule = palisade::spec::DeviceRule::parse("c 1:5 rw").unwrap();
        r.launch.devices.push((null, rule));
    });
    let dir = unsigned_copy(&sb, &image, "bad-device", &meta);
    refused_and_nothing_made(&sb, &dir, &trusted, "not c 1:5");

    // A recipe of another format.
    let meta = forge_recipe(&image, |r| r.version += 1);
    let dir = unsigned_copy(&sb, &image, "bad-version", &meta);
    refused_and_nothing_made(&sb, &dir, &trusted, "this palisade reads");

    // Limits the kernel refuses (a CPU this host lacks): the restore
    // fails at setup and leaves nothing.
    let meta = forge_recipe(&image, |r| r.launch.resources.cpuset = Some("1000".into()));
    let dir = unsigned_copy(&sb, &image, "bad-cpuset", &meta);
    refused_with(&sb, &dir, &trusted, 125, "cpuset");

    // The image itself restores.
    let out = sb
        .palisade()
        .args(["restore", "-d", "--dir"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", describe(&out));
    sb.wait_running();
}
