//! The container's filesystem, built in its first process inside its new
//! mount namespace: a root (the given rootfs, or the host's root read-only),
//! a private /proc, a read-only /sys, a minimal /dev with its own devpts,
//! /dev/shm, a private /tmp, bind mounts, then pivot_root, masked and
//! read-only paths. Nothing here propagates to the host: / is made
//! private first.

use std::{
    fs::File,
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::fs::symlink,
    },
    path::{Path, PathBuf},
};

use nix::{
    fcntl::OFlag,
    mount::{MntFlags, MsFlags, mount, umount2},
    unistd::{chdir, pivot_root},
};

use crate::{
    spec::{BindMount, MountRestrictions},
    sys::fs,
};

/// Whether the tree at `path` (one mount and the mounts under it) holds a
/// cgroup filesystem, by filesystem type: from such a mount a container
/// could move itself out of its cgroup.
pub fn holds_cgroupfs(path: &Path) -> Result<bool, String> {
    let why = |e: std::io::Error| format!("cannot tell the filesystem of {}: {e}", path.display());
    if fs::is_cgroupfs(path).map_err(why)? {
        return Ok(true);
    }
    let real = std::fs::canonicalize(path).map_err(why)?;
    Ok(fs::mounts().map_err(why)?.iter().any(|(point, fstype)| {
        (fstype == "cgroup" || fstype == "cgroup2") && point.starts_with(&real)
    }))
}

/// Checks the mounts against the root they go into (`None`: the host's)
/// before anything is created: a destination reached through a symlink
/// there is refused (the mount would land wherever the link points, and
/// be lost). Returns what to tell the user: sources holding a cgroup
/// filesystem, which are mounted read-only.
pub fn check_mounts(rootfs: Option<&Path>, mounts: &[BindMount]) -> Result<Vec<String>, String> {
    let root = rootfs.unwrap_or(Path::new("/"));
    let mut notes = Vec::new();
    for m in mounts {
        match fs::open_in_root(root, &m.target) {
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(format!(
                    "--mount {}: the destination is reached through a symbolic link in {}; give the path the link points to",
                    m.describe(),
                    root.display()
                ));
            }
            // A missing destination is reported when the filesystem is
            // built (it may be made by an earlier mount).
            _ => {}
        }
        if m.tmpfs.is_none() && holds_cgroupfs(&m.source)? {
            notes.push(format!(
                "--mount {}: the source is or holds a cgroup filesystem: mounted read-only (a container must not move itself out of its cgroups)",
                m.describe()
            ));
        }
    }
    Ok(notes)
}

/// How the container's filesystem is built.
#[derive(Debug, Clone, Default)]
pub struct RootfsSpec {
    /// None: the host's root, read-only.
    pub rootfs: Option<PathBuf>,
    /// Make the given rootfs read-only too.
    pub read_only: bool,
    pub mounts: Vec<BindMount>,
    /// Host device nodes bound into /dev: (host path, path inside, under
    /// /dev), checked by `devices`.
    pub devices: Vec<(PathBuf, PathBuf)>,
    /// An empty directory owned by this container, used as the mount
    /// point of the new root before pivot_root.
    pub staging: PathBuf,
    /// Built inside a user namespace (which limits what may be mounted).
    pub userns: bool,
    /// The container has a network namespace of its own.
    pub own_netns: bool,
    /// Masked and read-only paths beyond the defaults (an OCI bundle's).
    pub extra_masked: Vec<PathBuf>,
    pub extra_read_only: Vec<PathBuf>,
    /// The host directory bound read-only onto /run/palisade (the
    /// container's limits.json), if any.
    pub limits: Option<PathBuf>,
    /// The container's directory in the agent's view filesystem, if it
    /// asked for its own `/proc` figures (see `runtime::view`).
    pub view: Option<PathBuf>,
}

/// What [`enter`] opened while it still could (before the process became
/// a user namespace's root), for [`build`].
pub struct Entered {
    /// The limits directory, as an `O_PATH` descriptor.
    limits: Option<OwnedFd>,
    /// The view's files, if an agent serves them.
    view: Option<Vec<(crate::spec::ViewFile, OwnedFd)>>,
}

/// Files hidden behind /dev/null (or an empty read-only tmpfs for
/// directories), as OCI runtimes do.
const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Device nodes the container gets, bound from the host's.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

fn mnt(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(source, target, fstype, flags, data).map_err(|e| {
        format!(
            "cannot mount {} on {}: {e}",
            fstype.or(source).unwrap_or("bind"),
            target.display()
        )
    })
}

fn bind(source: &Path, target: &Path, flags: MsFlags) -> Result<(), String> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | flags,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "cannot bind {} on {}: {e}",
            source.display(),
            target.display()
        )
    })
}

fn remount_read_only(target: &Path, extra: MsFlags) -> Result<(), String> {
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | extra,
        None::<&str>,
    )
    .map_err(|e| format!("cannot make {} read-only: {e}", target.display()))
}

fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Mounts the new root on the staging directory and enters it (makes it
/// the working directory). Runs in the container's first process, in its
/// new mount namespace, before it becomes the user namespace's root: the
/// staging directory is in the state root, which the host's root may
/// traverse and the container's mapped root (another host uid) may not
/// (a state root of mode 0700). Everything after goes through the
/// working directory, never through the state root's path.
pub fn enter(spec: &RootfsSpec) -> Result<Entered, String> {
    // Opened before anything else: the state root is reachable by path
    // only as the host uid that made it.
    let limits = spec
        .limits
        .as_deref()
        .map(|dir| {
            nix::fcntl::open(
                dir,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| format!("cannot open {}: {e}", dir.display()))
        })
        .transpose()?;
    // Likewise; without an agent serving them, the host's files stay.
    let view = spec.view.as_deref().and_then(super::view::open_files);
    mnt(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    let root = spec.staging.as_path();
    match &spec.rootfs {
        // The rootfs and its submounts, as a mount point of its own.
        Some(dir) => bind(dir, root, MsFlags::MS_REC)?,
        // The host's root filesystem only: none of the host's other mounts
        // (cgroupfs, bpffs, /run…) come along. In a user namespace the
        // kernel allows only a recursive bind of a tree with submounts
        // (hiding them would unlock what they cover).
        None if spec.userns => bind(Path::new("/"), root, MsFlags::MS_REC)?,
        None => bind(Path::new("/"), root, MsFlags::empty())?,
    }
    chdir(root).map_err(|e| format!("cannot enter {}: {e}", root.display()))?;
    Ok(Entered { limits, view })
}

/// Builds the filesystem in the new root `enter` made the working
/// directory, and pivots into it. Runs in the container's first process,
/// in its new mount namespace, before exec.
pub fn build(spec: &RootfsSpec, entered: Entered) -> Result<(), String> {
    let root = Path::new(".");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(Some("proc"), &root.join("proc"), Some("proc"), flags, None)?;
    if spec.userns && !spec.own_netns {
        // sysfs may only be mounted by the owner of the network namespace;
        // a user namespace on the host's network gets the host's, bound.
        bind(Path::new("/sys"), &root.join("sys"), MsFlags::MS_REC)?;
        remount_read_only(&root.join("sys"), flags)?;
    } else {
        mnt(
            Some("sysfs"),
            &root.join("sys"),
            Some("sysfs"),
            flags | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    mnt(
        Some("tmpfs"),
        &root.join("tmp"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    build_dev(&root.join("dev"), &spec.devices)?;
    for (file, source) in entered.view.iter().flatten() {
        bind_view_file(root, *file, source)?;
    }

    for m in &spec.mounts {
        bind_mount(root, m)?;
    }
    // After the bundle's mounts, so a tmpfs it puts on /run does not
    // hide it.
    if let Some(limits) = entered.limits {
        mount_limits(root, limits, spec.rootfs.is_none())?;
    }

    // pivot_root(".", "."): the old root ends up stacked under the new
    // one, and is detached at once.
    pivot_root(".", ".")
        .map_err(|e| format!("cannot pivot_root into {}: {e}", spec.staging.display()))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("cannot detach the old root: {e}"))?;
    chdir("/").map_err(|e| format!("cannot chdir to /: {e}"))?;

    let masked = MASKED
        .iter()
        .map(Path::new)
        .chain(spec.extra_masked.iter().map(PathBuf::as_path));
    for path in masked.filter(|p| p.exists()) {
        if path.is_dir() {
            mnt(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, None)?;
        } else {
            bind(Path::new("/dev/null"), path, MsFlags::empty())?;
        }
    }
    let read_only = READ_ONLY
        .iter()
        .map(Path::new)
        .chain(spec.extra_read_only.iter().map(PathBuf::as_path));
    for path in read_only.filter(|p| p.exists()) {
        bind(path, path, MsFlags::MS_REC)?;
        remount_read_only(
            path,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        )?;
    }
    if spec.rootfs.is_none() || spec.read_only {
        remount_read_only(Path::new("/"), MsFlags::empty())?;
    }
    Ok(())
}

/// Binds one `--mount` into the new root. The destination is opened
/// without following any symlink and without leaving the root, and the
/// mount made on that descriptor: a link swapped in cannot redirect it. A
/// read-only mount is read-only with every mount under it, and so is any
/// mount holding a cgroup filesystem, whatever was asked.
fn bind_mount(root: &Path, m: &BindMount) -> Result<(), String> {
    let why = |what: &str, e: std::io::Error| match e.raw_os_error() {
        Some(libc::ELOOP) => format!(
            "mount target {} is reached through a symbolic link in the container's root: refused",
            m.target.display()
        ),
        Some(libc::ENOENT) => format!(
            "mount target {} does not exist in the container's root",
            m.target.display()
        ),
        _ => format!(
            "cannot open mount target {} {what}: {e}",
            m.target.display()
        ),
    };
    let open = |what: &str| fs::open_in_root(root, &m.target).map_err(|e| why(what, e));
    let target = match fs::open_in_root(root, &m.target) {
        Ok(target) => target,
        // A missing target is made, as runc does (a directory for a
        // directory, else an empty file), component by component inside
        // the root and never through a link.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            make_target(root, &m.target, m.tmpfs.is_some() || m.source.is_dir())?;
            open("to mount on it")?
        }
        Err(e) => return Err(why("to mount on it", e)),
    };
    let via = PathBuf::from(format!("/proc/self/fd/{}", target.as_raw_fd()));
    let mounted = match &m.tmpfs {
        Some(options) => mount(
            Some("tmpfs"),
            &via,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(options.as_str()),
        ),
        None => mount(
            Some(&m.source),
            &via,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ),
    };
    mounted.map_err(|e| {
        format!(
            "cannot bind {} on {}: {e}",
            m.source.display(),
            m.target.display()
        )
    })?;
    drop(target);
    // Opened again: now the mount's root, which the checks look at
    // through the descriptor, not by a path that could change.
    let mounted = open("after mounting")?;
    // A fresh tmpfs holds no cgroup filesystem (and, in a user namespace,
    // its path may not be one the container's root can walk).
    let read_only = m.read_only
        || (m.tmpfs.is_none()
            && holds_cgroupfs(Path::new(&format!("/proc/self/fd/{}", mounted.as_raw_fd())))?);
    let mut attrs = fs::MountAttrs::empty();
    for (on, attr) in [
        (read_only, fs::MountAttrs::READ_ONLY),
        (m.restrict.nosuid, fs::MountAttrs::NO_SUID),
        (m.restrict.nodev, fs::MountAttrs::NO_DEV),
        (m.restrict.noexec, fs::MountAttrs::NO_EXEC),
    ] {
        if on {
            attrs = attrs | attr;
        }
    }
    if !attrs.is_empty() {
        fs::set_attrs_recursive(mounted.as_fd(), attrs)
            .map_err(|e| format!("cannot restrict the mount on {}: {e}", m.target.display()))?;
    }
    Ok(())
}

/// Binds one file of the agent's view (an `O_PATH` descriptor) over the
/// file it covers in the new root's /proc or /sys, opened without
/// following a link; read-only, nosuid, nodev, noexec.
fn bind_view_file(
    root: &Path,
    file: crate::spec::ViewFile,
    source: &OwnedFd,
) -> Result<(), String> {
    let covers = Path::new(file.covers());
    let fail = |e: &dyn std::fmt::Display| {
        format!(
            "cannot bind the container's view of {}: {e}",
            covers.display()
        )
    };
    let target = fs::open_in_root(root, covers).map_err(|e| fail(&e))?;
    mount(
        Some(Path::new(&format!("/proc/self/fd/{}", source.as_raw_fd()))),
        Path::new(&format!("/proc/self/fd/{}", target.as_raw_fd())),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| fail(&e))?;
    let mounted = fs::open_in_root(root, covers).map_err(|e| fail(&e))?;
    fs::set_attrs_recursive(mounted.as_fd(), super::view::bind_attrs()).map_err(|e| fail(&e))
}

/// Binds the limits directory read-only (and nosuid, nodev, noexec) onto
/// /run/palisade, made if missing; a link on the way is refused. With the
/// host's root as the container's, /run first gets a read-only tmpfs of
/// its own, so nothing is made in the host's filesystems.
fn mount_limits(root: &Path, limits: OwnedFd, host_root: bool) -> Result<(), String> {
    let restrict = MountRestrictions {
        nosuid: true,
        nodev: true,
        noexec: true,
    };
    let run = Path::new("/run");
    if host_root {
        bind_mount(
            root,
            &BindMount {
                source: PathBuf::from("tmpfs"),
                target: run.to_path_buf(),
                read_only: false,
                restrict,
                tmpfs: Some("mode=755,size=64k".into()),
            },
        )?;
    }
    bind_mount(
        root,
        &BindMount {
            source: PathBuf::from(format!("/proc/self/fd/{}", limits.as_raw_fd())),
            target: PathBuf::from(super::limits::MOUNT_POINT),
            read_only: true,
            restrict,
            tmpfs: None,
        },
    )?;
    drop(limits);
    if host_root {
        let tmpfs = fs::open_in_root(root, run)
            .map_err(|e| format!("cannot open {} in the container's root: {e}", run.display()))?;
        fs::set_read_only_recursive(tmpfs.as_fd())
            .map_err(|e| format!("cannot make {} read-only: {e}", run.display()))?;
    }
    Ok(())
}

/// Makes the mount target `target` inside `root`: its missing parent
/// directories, then the target itself (a directory if `dir`, else an empty
/// file). What exists already is kept; a link on the way is refused.
fn make_target(root: &Path, target: &Path, dir: bool) -> Result<(), String> {
    use nix::{fcntl::OFlag, sys::stat::Mode};
    let refuse = |e: &dyn std::fmt::Display| {
        format!(
            "cannot create mount target {} in the container's root: {e}",
            target.display()
        )
    };
    let parts: Vec<_> = target
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect();
    let mut at = PathBuf::from("/");
    for (i, part) in parts.iter().enumerate() {
        let parent = fs::open_in_root(root, &at).map_err(|e| refuse(&e))?;
        let last = i + 1 == parts.len();
        let made = if last && !dir {
            nix::fcntl::openat(
                &parent,
                part.as_os_str(),
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .map(drop)
        } else {
            nix::sys::stat::mkdirat(&parent, part.as_os_str(), Mode::from_bits_truncate(0o755))
        };
        match made {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(refuse(&e)),
        }
        at.push(part);
    }
    Ok(())
}

/// A tmpfs /dev holding only the standard nodes, the container's devices,
/// a new devpts instance and /dev/shm. Nodes are bind mounts of the host's
/// on empty files: creating one costs no mknod (which the container's
/// device rules may refuse, and a user namespace always does).
fn build_dev(dev: &Path, devices: &[(PathBuf, PathBuf)]) -> Result<(), String> {
    mnt(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        let target = dev.join(name);
        File::create(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
        bind(&Path::new("/dev").join(name), &target, MsFlags::empty())?;
    }
    for (host, inside_dev) in devices {
        let target = inside(dev.parent().unwrap_or(dev), inside_dev);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        if !target.exists() {
            File::create(&target)
                .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
        }
        bind(host, &target, MsFlags::empty())?;
    }
    for dir in ["pts", "shm"] {
        std::fs::create_dir(dev.join(dir)).map_err(|e| format!("cannot create /dev/{dir}: {e}"))?;
    }
    mnt(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mnt(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    let links = [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    for (to, name) in links {
        symlink(to, dev.join(name)).map_err(|e| format!("cannot link /dev/{name}: {e}"))?;
    }
    Ok(())
}
