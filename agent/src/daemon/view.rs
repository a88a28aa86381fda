//! The agent's view filesystem: a FUSE filesystem on `ROOT/.view` with a
//! directory per container (`ROOT/.view/NAME/meminfo`, `cpuinfo`, `stat`,
//! `uptime`, `loadavg`, `diskstats`, `swaps`, `cpus_online`), each file
//! rendered from the container's cgroup at the moment it is read
//! (`accounting::view`). The files are bound over a container's `/proc`
//! and `/sys` ones (`runtime::view`); nothing is cached between reads
//! but the load averages, which need a history.
//!
//! A container's directory is looked up by name when its files are bound
//! and stands for that one container (its creation time tells a
//! container from a later one of the same name) for as long as the
//! binds last. Two threads answer the kernel; a third samples the load
//! of the containers looked up, every 5 seconds.

use std::{
    collections::HashMap,
    ffi::OsStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, SystemTime},
};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, Request, SessionACL,
};

use crate::{
    accounting::view::{self as render, LOAD_SAMPLE, Subject},
    runtime::{StateRoot, Status, view as binds},
    spec::ViewFile,
};

/// How long the kernel may keep a name or attribute it was told.
const TTL: Duration = Duration::from_secs(1);
const ROOT: u64 = 1;
/// A container's directory is `slot << SLOT_SHIFT`, its files that plus
/// 1 + their index in [`ViewFile::ALL`].
const SLOT_SHIFT: u32 = 4;

/// One container, as looked up.
struct Container {
    name: String,
    created: u64,
    /// Known once its state records its first process and cgroups (a
    /// container's files are looked up while it is being made).
    subject: Mutex<Option<Arc<Subject>>>,
    /// Load over 1, 5 and 15 minutes.
    averages: Mutex<[f64; 3]>,
}

impl Container {
    /// The container's cgroups and first process, read from its state the
    /// first time it has them.
    fn subject(&self, root: &StateRoot) -> Result<Arc<Subject>, Errno> {
        let mut known = lock(&self.subject);
        if let Some(s) = known.as_ref() {
            return Ok(s.clone());
        }
        let state = root.load(&self.name).map_err(|_| Errno::ENOENT)?;
        if state.created != self.created {
            return Err(Errno::ENOENT);
        }
        let (Some(pid), false) = (state.pid, state.cgroups.is_empty()) else {
            return Err(Errno::EAGAIN);
        };
        let s = Arc::new(Subject::new(state.cgroups, pid));
        *known = Some(s.clone());
        Ok(s)
    }
}

#[derive(Default)]
struct Table {
    by_slot: HashMap<u64, Arc<Container>>,
    next_slot: u64,
}

struct ViewFs {
    root: StateRoot,
    table: Arc<Mutex<Table>>,
    /// Each open file's text, rendered when it is read from offset 0.
    open: Mutex<HashMap<u64, Vec<u8>>>,
    next_handle: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn attr(ino: u64, dir: bool) -> FileAttr {
    let now = SystemTime::now();
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if dir { 0o555 } else { 0o444 },
        nlink: if dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// What an inode number names.
enum Node {
    Root,
    Dir,
    File(Arc<Container>, ViewFile),
}

impl ViewFs {
    fn node(&self, ino: u64) -> Option<Node> {
        if ino == ROOT {
            return Some(Node::Root);
        }
        let container = lock(&self.table).by_slot.get(&(ino >> SLOT_SHIFT))?.clone();
        match (ino & ((1 << SLOT_SHIFT) - 1)) as usize {
            0 => Some(Node::Dir),
            i => ViewFile::ALL.get(i - 1).map(|f| Node::File(container, *f)),
        }
    }

    /// The slot of the container `name` now, taken if it is new (or a new
    /// one of that name); slots of containers whose cgroup is gone are
    /// freed on the way.
    fn container_slot(&self, name: &str) -> Result<u64, Errno> {
        crate::runtime::validate_name(name).map_err(|_| Errno::ENOENT)?;
        let state = self.root.load(name).map_err(|_| Errno::ENOENT)?;
        if !matches!(
            state.status,
            Status::Creating | Status::Created | Status::Running
        ) {
            return Err(Errno::ENOENT);
        }
        let mut table = lock(&self.table);
        let root = self.root.dir();
        table
            .by_slot
            .retain(|_, c| match lock(&c.subject).as_ref() {
                Some(s) => s.cgroups.all().first().is_some_and(|d| d.exists()),
                None => root.join(&c.name).exists(),
            });
        if let Some((slot, _)) = table
            .by_slot
            .iter()
            .find(|(_, c)| c.name == name && c.created == state.created)
        {
            return Ok(*slot);
        }
        table.next_slot += 1;
        let slot = table.next_slot;
        table.by_slot.insert(
            slot,
            Arc::new(Container {
                name: name.to_string(),
                created: state.created,
                subject: Mutex::new(None),
                averages: Mutex::new([0.0; 3]),
            }),
        );
        Ok(slot)
    }
}

impl Filesystem for ViewFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_string_lossy();
        let ino = match self.node(parent.0) {
            Some(Node::Root) => self.container_slot(&name).map(|s| s << SLOT_SHIFT),
            Some(Node::Dir) => ViewFile::ALL
                .iter()
                .position(|f| f.name() == name)
                .map(|i| parent.0 + 1 + i as u64)
                .ok_or(Errno::ENOENT),
            _ => Err(Errno::ENOENT),
        };
        match ino {
            Ok(ino) => reply.entry(
                &TTL,
                &attr(ino, ino & ((1 << SLOT_SHIFT) - 1) == 0),
                Generation(0),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino.0) {
            Some(Node::File(..)) => reply.attr(&TTL, &attr(ino.0, false)),
            Some(_) => reply.attr(&TTL, &attr(ino.0, true)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino.0) {
            Some(Node::File(..)) if matches!(flags.acc_mode(), OpenAccMode::O_RDONLY) => {
                let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
                lock(&self.open).insert(handle, Vec::new());
                // Direct: every read comes here, none from a page cache.
                reply.opened(FileHandle(handle), FopenFlags::FOPEN_DIRECT_IO);
            }
            Some(Node::File(..)) => reply.error(Errno::EACCES),
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(Node::File(container, file)) = self.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let mut open = lock(&self.open);
        let Some(text) = open.get_mut(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        // Read from the start (again): rendered now; a later offset reads
        // on in the same text, so one read of the file is consistent.
        if offset == 0 {
            let subject = match container.subject(&self.root) {
                Ok(s) => s,
                Err(e) => return reply.error(e),
            };
            let averages = *lock(&container.averages);
            match render::render(file, &subject, averages) {
                Ok(t) => *text = t.into_bytes(),
                Err(e) => {
                    tracing::debug!(container = %container.name, file = file.name(), error = %e, "view file unreadable");
                    return reply.error(Errno::from(e));
                }
            }
        }
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(text.len());
        let end = start.saturating_add(size as usize).min(text.len());
        reply.data(&text[start..end]);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.open).remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // The root lists nothing: a container's directory is found by name.
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".to_string()),
            (ROOT, FileType::Directory, "..".to_string()),
        ];
        match self.node(ino.0) {
            Some(Node::Root) => {}
            Some(Node::Dir) => {
                for (i, f) in ViewFile::ALL.iter().enumerate() {
                    entries.push((ino.0 + 1 + i as u64, FileType::RegularFile, f.name().into()));
                }
            }
            _ => return reply.error(Errno::ENOTDIR),
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// The view filesystem, served while this lives.
pub struct ViewServer {
    session: Option<fuser::BackgroundSession>,
    /// Its device number (what a bound file's `st_dev` is).
    pub dev: u64,
    stop_sampler: Option<mpsc::Sender<()>>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

/// Mounts the view filesystem on `ROOT/.view` (detaching a dead agent's
/// first) and starts serving it.
pub fn serve(root: &StateRoot) -> std::io::Result<ViewServer> {
    let dir = binds::mount_point(root);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    binds::unmount_point(&dir)?;
    let table = Arc::new(Mutex::new(Table::default()));
    let fs = ViewFs {
        root: root.clone(),
        table: table.clone(),
        open: Mutex::new(HashMap::new()),
        next_handle: AtomicU64::new(1),
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("palisade".into()),
        MountOption::Subtype("palisade-view".into()),
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
    ];
    // Containers read as other users (a user namespace's root, say).
    config.acl = SessionACL::All;
    config.n_threads = Some(2);
    config.clone_fd = true;
    let session = fuser::spawn_mount(fs, &dir, &config)?;
    let dev = binds::served(root)
        .ok_or_else(|| std::io::Error::other("the view filesystem does not answer"))?;
    let (stop, stopped) = mpsc::channel();
    let root = root.clone();
    let sampler = std::thread::Builder::new()
        .name("view-load".into())
        .spawn(move || sample_load(&root, &table, &stopped))?;
    Ok(ViewServer {
        session: Some(session),
        dev,
        stop_sampler: Some(stop),
        sampler: Some(sampler),
    })
}

/// Every [`LOAD_SAMPLE`], the load of each container looked up, until
/// told to stop.
fn sample_load(root: &StateRoot, table: &Mutex<Table>, stop: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(LOAD_SAMPLE) {
        let containers: Vec<_> = lock(table).by_slot.values().cloned().collect();
        for c in containers {
            let Ok(subject) = c.subject(root) else {
                continue;
            };
            let tasks = render::tasks(&subject.cgroups);
            let mut averages = lock(&c.averages);
            *averages = render::next_load(*averages, &tasks);
        }
    }
}

impl ViewServer {
    /// Stops serving: the filesystem is unmounted (containers' binds of
    /// it then fail until an agent binds a new one; see
    /// `runtime::view`).
    pub fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        drop(self.stop_sampler.take());
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        if let Some(session) = self.session.take()
            && let Err(e) = session.umount_and_join()
        {
            tracing::warn!(error = %e, "the view filesystem did not stop cleanly");
        }
    }
}

impl Drop for ViewServer {
    fn drop(&mut self) {
        self.end();
    }
}
