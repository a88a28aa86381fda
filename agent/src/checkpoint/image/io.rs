//! Writing an image into its directory and reading it back: authenticated
//! (`sign.rs`) and validated whole before restore creates anything.

use std::{io::Write, path::Path};

use serde::{Deserialize, Serialize};

use super::{
    FILES, FORMAT, Image, MANIFEST, MAX_FILES, MAX_MANIFEST, MAX_META, META, OLDEST_FORMAT, PAGES,
    ParentRef, PreDump, Run, unhex,
};
use crate::checkpoint::{
    CheckpointError,
    imagedir::{ImageDir, ImageReader},
    pages::{PageFile, PageWriter},
    sign::{self, Digest, ImageKey, Manifest, Whole},
};

/// The file as written: format, checksum of `body`, body.
#[derive(Debug, Serialize, Deserialize)]
struct MetaFile {
    format: u32,
    /// [`PRE_DUMP`] for a pre-dump; absent for an image restore reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    /// CRC32 of the body serialised compactly (as `serde_json::to_vec`).
    body_crc32: u32,
    body: serde_json::Value,
}

/// Creates pages.img in `dir`, for the dump to stream page runs into;
/// `progress` is called with the bytes written so far.
pub fn create_pages<'p>(
    dir: &ImageDir,
    progress: &'p mut dyn FnMut(u64),
) -> Result<PageWriter<'p>, CheckpointError> {
    let file = dir.create_file(PAGES)?;
    Ok(PageWriter::new(file, dir.path().join(PAGES), progress))
}

/// meta.json's `kind` for a pre-dump.
const PRE_DUMP: &str = "pre-dump";
/// The most images a chain may hold (pre-dumps and the final image).
pub const MAX_CHAIN: usize = 64;

/// Writes files.img and meta.json into `dir`, after its pages.img is
/// complete (`pages`: its length and piece digests), then, last, the
/// manifest that `key` signs.
pub fn write(
    dir: &ImageDir,
    image: &Image,
    files: &[u8],
    pages: (u64, Vec<Digest>),
    key: &ImageKey,
) -> Result<(), CheckpointError> {
    write_meta(dir, None, image, files, pages, key).map(drop)
}

/// Writes a pre-dump's meta.json (and an empty files.img) into `dir`
/// after its pages.img, then its signed manifest; returns the digest a
/// child names it by ([`ParentRef::manifest_blake3`]).
pub fn write_pre_dump(
    dir: &ImageDir,
    pre: &mut PreDump,
    pages: (u64, Vec<Digest>),
    key: &ImageKey,
) -> Result<String, CheckpointError> {
    let index = pre.encode_index();
    write_meta(dir, Some(PRE_DUMP), pre, &index, pages, key).map(|d| super::hex(&d.0))
}

/// A pre-dump's metadata with its index (files.img) read into it.
fn parse_pre_dump(dir: &Path, read: &Authentic) -> Result<PreDump, CheckpointError> {
    let mut pre: PreDump = parse_meta(&dir.join(META), &read.meta, Some(PRE_DUMP))?;
    pre.decode_index(&read.files)
        .map_err(|e| CheckpointError::Image(format!("{}: {e}", dir.join(FILES).display())))?;
    Ok(pre)
}

/// meta.json: a [`MetaFile`] whose body is serialised once, compactly,
/// and checksummed as it is (a body of many runs costs one pass), one
/// top-level field per line.
fn meta_text<T: Serialize>(kind: Option<&str>, body: &T) -> Result<Vec<u8>, CheckpointError> {
    let body = serde_json::to_vec(body).map_err(|e| CheckpointError::Write(e.to_string()))?;
    let mut text = format!("{{\n  \"format\": {FORMAT},\n").into_bytes();
    if let Some(kind) = kind {
        let kind = serde_json::to_string(kind).expect("a string serialises");
        text.extend_from_slice(format!("  \"kind\": {kind},\n").as_bytes());
    }
    let crc = crc32fast::hash(&body);
    text.extend_from_slice(format!("  \"body_crc32\": {crc},\n  \"body\": ").as_bytes());
    text.extend_from_slice(&body);
    text.extend_from_slice(b"\n}\n");
    Ok(text)
}

fn write_meta<T: Serialize>(
    dir: &ImageDir,
    kind: Option<&str>,
    body: &T,
    files: &[u8],
    pages: (u64, Vec<Digest>),
    key: &ImageKey,
) -> Result<Digest, CheckpointError> {
    let put = |name: &'static str, bytes: &[u8], max: u64| {
        let path = dir.path().join(name);
        if bytes.len() as u64 > max {
            return Err(CheckpointError::Write(format!(
                "{}: {} bytes, more than the {max} restore reads",
                path.display(),
                bytes.len()
            )));
        }
        let mut f = dir.create_file(name)?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| CheckpointError::Write(format!("{}: {e}", path.display())))
    };
    put(FILES, files, MAX_FILES)?;
    let text = meta_text(kind, body)?;
    put(META, &text, MAX_META)?;
    let manifest = Manifest {
        meta: Whole {
            size: text.len() as u64,
            digest: Digest::of(&text),
        },
        files: Whole {
            size: files.len() as u64,
            digest: Digest::of(files),
        },
        pages_size: pages.0,
        pages: pages.1,
    };
    let signed = manifest.encode(key);
    put(MANIFEST, &signed, MAX_MANIFEST)?;
    dir.complete();
    Ok(Digest::of(&signed))
}

/// An image read and checked whole: what restore may use.
#[derive(Debug)]
pub struct Verified {
    pub image: Image,
    /// Its pages.img, holding those of its pre-dump chain's ancestors.
    pub pages: PageFile,
    /// files.img.
    pub files: Vec<u8>,
    /// Its manifest was signed by the key restore was given (false only
    /// with `--trust-image`).
    pub authenticated: bool,
}

/// A verified image passed to a container's monitor, which takes it once
/// (its pages.img is then closed once the tree is restored).
#[derive(Debug, Clone)]
pub struct Handoff(std::sync::Arc<std::sync::Mutex<Option<Verified>>>);

impl Handoff {
    pub fn new(verified: Verified) -> Self {
        Handoff(std::sync::Arc::new(std::sync::Mutex::new(Some(verified))))
    }

    /// The image, the first time.
    pub fn take(&self) -> Option<Verified> {
        self.0.lock().ok()?.take()
    }
}

/// Reads and checks the image in `dir` before anything is created: with
/// a key, the manifest's signature first, then every file against its
/// size and digest in the manifest, then (with or without a key) the
/// format, the checksums of the metadata, of every page run (unsigned
/// images only: a manifest's digests cover them) and of every
/// file blob, and the image's structure. Without a key (`--trust-image`)
/// an image with no manifest is read on its checksums alone.
pub fn open(dir: &Path, key: Option<&ImageKey>) -> Result<Verified, CheckpointError> {
    let read = read_authentic(dir, key)?;
    let image: Image = parse_meta(&dir.join(META), &read.meta, None)?;
    check_files(&dir.join(FILES), &image, &read.files)?;
    let (ancestors, lens) = open_chain(dir, image.parent.as_ref(), key)?;
    let mut pages = check_pages(&read.reader, &image, read.manifest.as_ref(), &lens)?;
    pages.set_ancestors(ancestors);
    Ok(Verified {
        image,
        pages,
        files: read.files,
        authenticated: key.is_some(),
    })
}

/// Opens the pre-dump chain above the image in `child` whose parent is
/// `parent`, each ancestor authenticated (with `key`), checked whole and
/// matched to the digest its child recorded; returns their pages.img and
/// lengths, nearest first.
fn open_chain(
    child: &Path,
    parent: Option<&ParentRef>,
    key: Option<&ImageKey>,
) -> Result<(Vec<PageFile>, Vec<u64>), CheckpointError> {
    let (mut files, mut lens) = (Vec::new(), Vec::new());
    let mut child = child.to_path_buf();
    let mut next = parent.cloned();
    while let Some(p) = next {
        if files.len() + 1 >= MAX_CHAIN {
            return Err(CheckpointError::Image(format!(
                "{}: its pre-dump chain is longer than {MAX_CHAIN} images",
                child.display()
            )));
        }
        let (pre, pages) = open_parent(&child, &p, key, true)?;
        lens.push(pages.len());
        files.push(pages);
        child = p.dir;
        next = pre.parent;
    }
    Ok((files, lens))
}

/// Opens the pre-dump `parent` that the image in `child` names: refused,
/// naming both, if it is missing, unauthentic, or not the image the child
/// was made from (its manifest's digest or generation differ). With
/// `whole`, its pages.img is checked against its manifest too.
pub fn open_parent(
    child: &Path,
    parent: &ParentRef,
    key: Option<&ImageKey>,
    whole: bool,
) -> Result<(PreDump, PageFile), CheckpointError> {
    let dir = &parent.dir;
    let named = |e: CheckpointError| {
        CheckpointError::Image(format!(
            "{}: its parent pre-dump {}: {e}",
            child.display(),
            dir.display()
        ))
    };
    let read = read_authentic(dir, key).map_err(named)?;
    let mismatch = |what: String| {
        named(CheckpointError::Image(format!(
            "{what}: it is not the pre-dump this image was made from (altered, replaced or from another chain)"
        )))
    };
    match read.manifest_digest {
        Some(d) if super::hex(&d.0) == parent.manifest_blake3 => {}
        Some(_) => return Err(mismatch("its manifest differs".into())),
        None => return Err(mismatch("it has no manifest".into())),
    }
    let pre = parse_pre_dump(dir, &read).map_err(named)?;
    if pre.generation != parent.generation {
        return Err(mismatch(format!(
            "it is generation {}, not {}",
            pre.generation, parent.generation
        )));
    }
    let manifest = read.manifest.as_ref().expect("a digest means a manifest");
    let (file, len) = read
        .reader
        .require_file(PAGES, pre.pages_len.saturating_add(1))
        .map_err(named)?;
    if len != pre.pages_len || len != manifest.pages_size {
        return Err(named(CheckpointError::Image(format!(
            "{}: {len} bytes, its metadata says {} (truncated or altered)",
            dir.join(PAGES).display(),
            pre.pages_len
        ))));
    }
    let pages = PageFile::new(file, len);
    if whole {
        let (_, digests) = pages.check(&[], true).map_err(|e| {
            named(CheckpointError::Image(format!(
                "{}: {e}",
                dir.join(PAGES).display()
            )))
        })?;
        if digests.is_some_and(|d| d != manifest.pages) {
            return Err(named(CheckpointError::Image(format!(
                "{}: does not match its digests in the manifest: the image was altered or damaged",
                dir.join(PAGES).display()
            ))));
        }
    }
    Ok((pre, pages))
}

/// Reads the pre-dump in `dir` (authenticated with `key`) for the next
/// step of its chain, its pages.img not read; returns it with its
/// manifest's digest.
pub fn read_pre_dump(dir: &Path, key: &ImageKey) -> Result<(PreDump, String), CheckpointError> {
    let read = read_authentic(dir, Some(key))?;
    let pre = parse_pre_dump(dir, &read)?;
    let digest = read.manifest_digest.expect("a key means a manifest");
    Ok((pre, super::hex(&digest.0)))
}

/// What an image directory holds, its manifest checked (with `key`, its
/// signature) and meta.json and files.img read and matched to it.
struct Authentic {
    reader: ImageReader,
    manifest: Option<Manifest>,
    /// BLAKE3 of manifest.json as it is on disk.
    manifest_digest: Option<Digest>,
    meta: Vec<u8>,
    files: Vec<u8>,
}

fn read_authentic(dir: &Path, key: Option<&ImageKey>) -> Result<Authentic, CheckpointError> {
    let reader = ImageReader::open(dir)?;
    let manifest_bytes = reader.read_file(MANIFEST, MAX_MANIFEST)?;
    let manifest_digest = manifest_bytes.as_deref().map(Digest::of);
    let manifest = match (manifest_bytes, key) {
        (None, Some(_)) => {
            return Err(CheckpointError::Image(format!(
                "{}: unsigned (no {MANIFEST}): refused, as its contents cannot be authenticated (restore it unauthenticated with --trust-image only if you know where it comes from)",
                dir.display()
            )));
        }
        (None, None) => None,
        (Some(bytes), key) => {
            Some(
                Manifest::decode(&bytes, key).map_err(|source| CheckpointError::Manifest {
                    dir: dir.display().to_string(),
                    source,
                })?,
            )
        }
    };
    let whole = |name: &'static str, max: u64, want: Option<&Whole>| match want {
        None => reader.require(name, max),
        Some(want) => {
            let altered = || {
                CheckpointError::Image(format!(
                    "{}: does not match its size and digest in the manifest: the image was altered or damaged",
                    dir.join(name).display()
                ))
            };
            // The size first: a file of another size is not even read.
            let (file, len) = reader.require_file(name, max)?;
            if len != want.size {
                return Err(altered());
            }
            let data = reader.read_opened(name, file, len)?;
            if Digest::of(&data) != want.digest {
                return Err(altered());
            }
            Ok(data)
        }
    };
    let meta = whole(META, MAX_META, manifest.as_ref().map(|m| &m.meta))?;
    let files = whole(FILES, MAX_FILES, manifest.as_ref().map(|m| &m.files))?;
    Ok(Authentic {
        reader,
        manifest,
        manifest_digest,
        meta,
        files,
    })
}

/// Checks files.img against the image's file objects (every blob inside
/// it, with its checksum; fds and objects consistent).
fn check_files(path: &Path, image: &Image, data: &[u8]) -> Result<(), CheckpointError> {
    let bad = |e: String| CheckpointError::Image(format!("{}: {e}", path.display()));
    // A bad files.img is bad input: the image error's text is its whole cause.
    let bad_step = |e: crate::checkpoint::StepError| bad(e.to_string());
    crate::checkpoint::files::validate(&image.files, &[], data).map_err(bad_step)?;
    for p in &image.processes {
        crate::checkpoint::files::validate(&image.files, &p.fds, data)
            .map_err(|e| bad(format!("pid {}: {e}", p.pid)))?;
    }
    Ok(())
}

/// meta.json's bytes: its format, kind and checksum, then the body: an
/// [`Image`] (`kind` None) or a [`PreDump`].
fn parse_meta<T: serde::de::DeserializeOwned + Serialize>(
    meta_path: &Path,
    text: &[u8],
    kind: Option<&str>,
) -> Result<T, CheckpointError> {
    let bad = |msg: String| CheckpointError::Image(format!("{}: {msg}", meta_path.display()));
    let raw: serde_json::Value = serde_json::from_slice(text)
        .map_err(|e| bad(format!("not valid JSON (truncated?): {e}")))?;
    match raw.get("format").and_then(|f| f.as_u64()) {
        Some(f) if (u64::from(OLDEST_FORMAT)..=u64::from(FORMAT)).contains(&f) => {}
        Some(f) => {
            return Err(bad(format!(
                "image format {f}, this palisade reads formats {OLDEST_FORMAT} to {FORMAT}"
            )));
        }
        None => return Err(bad("no \"format\" field".into())),
    }
    let meta: MetaFile = serde_json::from_value(raw).map_err(|e| bad(e.to_string()))?;
    match (meta.kind.as_deref(), kind) {
        (a, b) if a == b => {}
        (Some(PRE_DUMP), None) => {
            return Err(bad(
                "a pre-dump (memory only; the process ran on): restore the checkpoint made with --parent naming the last pre-dump of its chain".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(bad(
                "a checkpoint, not a pre-dump: only a pre-dump can be a parent".into(),
            ));
        }
        (a, _) => return Err(bad(format!("unknown kind {a:?}"))),
    }
    let image: T = serde_json::from_value(meta.body).map_err(|e| bad(format!("body: {e}")))?;
    let crc = crc32fast::hash(&serde_json::to_vec(&image).expect("image serialises"));
    if crc != meta.body_crc32 {
        return Err(bad("metadata checksum mismatch: the file is corrupt".into()));
    }
    Ok(image)
}

/// Opens pages.img and checks it: its length against the metadata (and
/// the manifest), every run inside it and its mapping, the image's
/// structure, then in one pass every run's checksum and, with a
/// manifest, every piece's digest.
fn check_pages(
    reader: &ImageReader,
    image: &Image,
    manifest: Option<&Manifest>,
    ancestors: &[u64],
) -> Result<PageFile, CheckpointError> {
    let bad = |msg: String| CheckpointError::Image(msg);
    let meta_path = reader.path().join(META);
    let pages_path = reader.path().join(PAGES);
    let (file, len) = reader.require_file(PAGES, image.pages_len.saturating_add(1))?;
    if len != image.pages_len {
        return Err(bad(format!(
            "{}: {len} bytes, the metadata says {} (truncated or wrong file)",
            pages_path.display(),
            image.pages_len
        )));
    }
    if let Some(m) = manifest
        && m.pages_size != len
    {
        return Err(bad(format!(
            "{}: {len} bytes, the manifest says {}: the image was altered or damaged",
            pages_path.display(),
            m.pages_size
        )));
    }
    if image.container.is_some() && image.root != 1 {
        return Err(bad(format!(
            "{}: a container's tree has root pid {}, not 1",
            meta_path.display(),
            image.root
        )));
    }
    let pages = PageFile::new(file, len);
    // Every run inside pages.img and its mapping; their checksums are
    // computed together at the end (on several threads).
    let mut spans: Vec<(String, Run)> = Vec::new();
    let mut check_run = |run: &Run, lo: u64, hi: u64, where_: String| {
        let file_len = match run.from {
            0 => image.pages_len,
            k => *ancestors.get(k as usize - 1).ok_or_else(|| {
                bad(format!(
                    "{where_}: in ancestor {k}, and its chain has {}",
                    ancestors.len()
                ))
            })?,
        };
        if run
            .offset
            .checked_add(run.len)
            .is_none_or(|end| end > file_len)
        {
            return Err(bad(format!("{where_}: outside the {PAGES} it is in")));
        }
        if run.addr < lo || run.addr.saturating_add(run.len) > hi {
            return Err(bad(format!("{where_}: outside its mapping")));
        }
        // An ancestor's bytes were checked against its own digests.
        if run.from == 0 {
            spans.push((where_, *run));
        }
        Ok(())
    };
    for (i, shm) in image.shared_memory.iter().enumerate() {
        if shm.runs.iter().any(|r| r.from != 0) {
            return Err(bad(format!(
                "shared memory {i}: a run in an ancestor (shared memory is dumped whole)"
            )));
        }
        for run in &shm.runs {
            check_run(
                run,
                0,
                shm.size,
                format!("shared memory {i} run at offset {:x}", run.addr),
            )?;
        }
    }
    let structure = |msg: String| bad(format!("{}: {msg}", meta_path.display()));
    let mut seen = std::collections::HashSet::new();
    if image.processes.first().map(|p| p.pid) != Some(image.root) {
        return Err(structure("the root is not the first process".into()));
    }
    for p in &image.processes {
        if p.pid != image.root && !seen.contains(&p.parent) {
            return Err(structure(format!(
                "pid {} comes before its parent {}",
                p.pid, p.parent
            )));
        }
        if p.zombie.is_none() && p.threads.first().map(|t| t.tid) != Some(p.pid) {
            return Err(structure(format!("pid {}: no main thread", p.pid)));
        }
        for t in &p.threads {
            if !seen.insert(t.tid) && t.tid != p.pid {
                return Err(structure(format!("tid {} appears twice", t.tid)));
            }
            if unhex(&t.xstate).is_none() {
                return Err(structure(format!("tid {}: xstate is not hex", t.tid)));
            }
        }
        seen.insert(p.pid);
        for vma in &p.vmas {
            if let Some(i) = vma.shared_memory
                && i >= image.shared_memory.len()
            {
                return Err(structure(format!(
                    "pid {} vma {:x}: no shared memory object {i}",
                    p.pid, vma.start
                )));
            }
            for run in &vma.runs {
                let where_ = format!(
                    "pid {} vma {:x}-{:x} run at {:x}",
                    p.pid, vma.start, vma.end, run.addr
                );
                check_run(run, vma.start, vma.end, where_)?;
            }
        }
    }
    // With a manifest, every byte is covered by an authenticated piece
    // digest: the runs' CRCs would only read the file a second time.
    if manifest.is_some() {
        spans.clear();
    }
    let offsets: Vec<(u64, u64)> = spans.iter().map(|(_, r)| (r.offset, r.len)).collect();
    let (crcs, digests) = pages
        .check(&offsets, manifest.is_some())
        .map_err(|e| bad(format!("{}: {e}", pages_path.display())))?;
    if let (Some(m), Some(digests)) = (manifest, digests)
        && let Some(k) = (0..digests.len()).find(|&k| digests[k] != m.pages[k])
    {
        return Err(bad(format!(
            "{}: bytes {} to {} do not match their digest in the manifest: the image was altered or damaged",
            pages_path.display(),
            k as u64 * sign::PIECE,
            ((k as u64 + 1) * sign::PIECE).min(len)
        )));
    }
    for ((where_, run), crc) in spans.iter().zip(crcs) {
        if crc != run.crc32 {
            return Err(bad(format!(
                "{}: pages of {where_} (offset {}): checksum mismatch: the file is corrupt",
                pages_path.display(),
                run.offset,
            )));
        }
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::image::*;

    fn sample(pages: &[u8]) -> Image {
        let zero = Registers {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            rbp: 0,
            rbx: 7,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rax: 0,
            rcx: 0,
            rdx: 0,
            rsi: 0,
            rdi: 0,
            orig_rax: u64::MAX,
            rip: 0x401000,
            cs: 0x33,
            eflags: 0x202,
            rsp: 0x7fff0000,
            ss: 0x2b,
            fs_base: 0,
            gs_base: 0,
            ds: 0,
            es: 0,
            fs: 0,
            gs: 0,
        };
        Image {
            root: 4242,
            processes: vec![Process {
                pid: 4242,
                parent: 0,
                pgid: 4242,
                sid: 4242,
                zombie: None,
                comm: "x".into(),
                exe: "/bin/x".into(),
                cwd: "/".into(),
                root: "/".into(),
                sigactions: vec![],
                mm: MmLayout::default(),
                auxv: vec![6, 4096, 0, 0],
                vmas: vec![Vma {
                    start: 0x10000,
                    end: 0x10000 + pages.len() as u64,
                    read: true,
                    write: true,
                    exec: false,
                    kind: VmaKind::Anonymous,
                    path: None,
                    offset: 0,
                    shared_memory: None,
                    runs: vec![Run {
                        addr: 0x10000,
                        offset: 0,
                        len: pages.len() as u64,
                        crc32: crc32fast::hash(pages),
                        from: 0,
                    }],
                    may_write: false,
                    noreserve: false,
                    advice: vec![],
                    file: None,
                }],
                fds: vec![],
                state: Default::default(),
                threads: vec![Thread {
                    tid: 4242,
                    comm: "x".into(),
                    regs: zero,
                    xstate: hex(&[1, 2, 3]),
                    sigmask: 0,
                    rseq: None,
                    tid_address: 0,
                    robust_list: 0,
                    robust_list_len: 0,
                    state: Default::default(),
                }],
            }],
            shared_memory: vec![],
            files: vec![],
            pages_len: pages.len() as u64,
            container: None,
            parent: None,
        }
    }

    fn tempdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("palisade-image-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn pieces(data: &[u8]) -> (u64, Vec<Digest>) {
        let mut h = sign::PieceHasher::default();
        h.update(data);
        (data.len() as u64, h.finish())
    }

    #[test]
    fn image_round_trips_and_damage_is_named() {
        let pages = vec![0x5au8; 8192];
        let image = sample(&pages);
        let path = tempdir("rt");
        let key = ImageKey::from_bytes([3; 32], "/k".into());
        let dir = ImageDir::create(&path).unwrap();
        dir.create_file(PAGES).unwrap().write_all(&pages).unwrap();
        write(&dir, &image, &[], pieces(&pages), &key).unwrap();
        let v = open(&path, Some(&key)).unwrap();
        assert!(v.files.is_empty() && v.authenticated);
        assert_eq!(v.image, image);
        assert_eq!(v.pages.read(0, v.pages.len()).unwrap(), pages);
        // A second image is not written over the first.
        assert!(matches!(
            ImageDir::create(&path),
            Err(CheckpointError::BadDir { .. })
        ));

        let put = |name: &str, data: &[u8]| std::fs::write(path.join(name), data).unwrap();
        let err = |key: Option<&ImageKey>| open(&path, key).unwrap_err().to_string();
        let mut bad = pages.clone();
        bad[5000] ^= 1;
        put(PAGES, &bad);
        assert!(
            err(Some(&key)).contains("do not match their digest"),
            "{}",
            err(Some(&key))
        );
        assert!(err(None).contains("do not match their digest"));

        put(PAGES, &pages[..4096]);
        assert!(err(Some(&key)).contains("truncated"));

        put(PAGES, &pages);
        let meta = std::fs::read_to_string(path.join(META)).unwrap();
        put(META, meta.replace("4242", "4243").as_bytes());
        assert!(err(Some(&key)).contains("does not match its size and digest"));
        assert!(err(None).contains("does not match its size and digest"));
        put(META, other_format(&meta).as_bytes());
        assert!(err(Some(&key)).contains("does not match its size and digest"));
        put(META, meta.as_bytes());
        assert!(open(&path, Some(&key)).is_ok());
        let other = ImageKey::from_bytes([4; 32], "/other".into());
        assert!(err(Some(&other)).contains("signed by another key"));
        std::fs::remove_file(path.join(MANIFEST)).unwrap();
        assert!(err(Some(&key)).contains("unsigned"));
        assert!(open(&path, None).is_ok());
        // Unsigned and unauthenticated, the checksums still hold.
        put(PAGES, &bad);
        let e = err(None);
        assert!(
            e.contains("checksum mismatch") && e.contains("10000-12000 run at 10000"),
            "{e}"
        );
        put(PAGES, &pages);
        put(META, meta.replace("4242", "4243").as_bytes());
        assert!(err(None).contains("metadata checksum mismatch"));
        put(META, other_format(&meta).as_bytes());
        assert!(err(None).contains(&format!("image format {}", FORMAT + 1)));
        std::fs::remove_dir_all(&path).unwrap();
    }

    /// The metadata as a palisade one format ahead would have written it.
    fn other_format(meta: &str) -> String {
        let now = format!("\"format\": {FORMAT}");
        assert!(meta.contains(&now), "{meta}");
        meta.replace(&now, &format!("\"format\": {}", FORMAT + 1))
    }
}
