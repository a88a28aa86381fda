//! `cargo xtask rootfs`: a small busybox root filesystem, from Debian's
//! busybox-static, as a ready example for `palisade run --rootfs`.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Builds (or refreshes) the rootfs at target/rootfs/busybox; returns it.
pub fn build() -> Result<PathBuf> {
    crate::toolchain::install_missing(&[("busybox-static", "the example rootfs")])?;
    let root = crate::root().join("target/rootfs/busybox");
    for dir in [
        "bin", "dev", "etc", "proc", "sys", "tmp", "root", "mnt", "var", "run",
    ] {
        fs::create_dir_all(root.join(dir))
            .with_context(|| format!("cannot create {}", root.join(dir).display()))?;
    }
    let busybox = root.join("bin/busybox");
    fs::copy("/bin/busybox", &busybox).context("cannot copy /bin/busybox (from busybox-static)")?;
    let list = Command::new(&busybox)
        .arg("--list")
        .output()
        .context("cannot run busybox --list")?;
    if !list.status.success() {
        bail!("busybox --list failed");
    }
    for applet in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| *a != "busybox")
    {
        let link = root.join("bin").join(applet);
        if fs::symlink_metadata(&link).is_err() {
            symlink("busybox", &link).with_context(|| format!("cannot link {}", link.display()))?;
        }
    }
    write(
        &root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    write(&root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    write(
        &root.join("etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n",
    )?;
    println!("==> busybox rootfs ready at {}", root.display());
    Ok(root)
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
