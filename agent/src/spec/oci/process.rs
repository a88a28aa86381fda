//! `process` into palisade's terms: the command, its environment, user
//! and capabilities.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxCapabilities, PosixRlimit, Process};

use super::{Cx, OciError, Rlimit};

impl Cx {
    pub(super) fn process(&mut self, p: &Process) -> Result<ProcessPart, OciError> {
        let terminal = p.terminal() == Some(true);
        if p.console_size().is_some() {
            self.warn(
                "process.consoleSize",
                "ignored: the terminal's size is the caller's to set on the terminal it receives",
            );
        }
        self.refuse(
            p.command_line().is_some(),
            "process.commandLine",
            "is for Windows; give the command in process.args",
        )?;
        let args = p.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Err(self.err("process.args", "is required and must not be empty"));
        }
        for (i, a) in args.iter().enumerate() {
            self.refuse(
                a.contains('\0'),
                &format!("process.args[{i}]"),
                "contains a NUL byte",
            )?;
        }
        let env = p.env().clone().unwrap_or_default();
        for (i, kv) in env.iter().enumerate() {
            let ok =
                matches!(kv.split_once('='), Some((k, _)) if !k.is_empty()) && !kv.contains('\0');
            if !ok {
                return Err(self.err(
                    format!("process.env[{i}]"),
                    format!("{kv:?}: expected KEY=VALUE"),
                ));
            }
        }
        let cwd = p.cwd().clone();
        if !cwd.is_absolute() {
            return Err(self.err(
                "process.cwd",
                format!("{:?} must be an absolute path", cwd.display().to_string()),
            ));
        }

        let u = p.user();
        self.refuse(
            u.username().is_some(),
            "process.user.username",
            "is for Windows; give a numeric uid and gid",
        )?;
        // (uid_t)-1 means "unchanged" to set*id(2).
        self.refuse(
            u.uid() == u32::MAX || u.gid() == u32::MAX,
            "process.user",
            "uid and gid must be below 4294967295",
        )?;
        let user = (u.uid() != 0 || u.gid() != 0).then_some((u.uid(), u.gid()));
        if u.additional_gids().as_ref().is_some_and(|g| !g.is_empty()) {
            self.warn(
                "process.user.additionalGids",
                "ignored: palisade runs the command with no supplementary groups",
            );
        }
        if u.umask().is_some() {
            self.warn(
                "process.user.umask",
                "ignored: the command inherits palisade's umask",
            );
        }

        let capabilities = p
            .capabilities()
            .as_ref()
            .map(|c| self.capabilities(c, user.is_some_and(|(uid, _)| uid != 0)));

        let rlimits = self.rlimits(p.rlimits().as_deref().unwrap_or_default())?;
        if p.apparmor_profile().is_some() {
            self.warn(
                "process.apparmorProfile",
                "ignored: palisade applies no AppArmor profile",
            );
        }
        if p.selinux_label().is_some() {
            self.warn(
                "process.selinuxLabel",
                "ignored: palisade sets no SELinux label",
            );
        }
        if p.oom_score_adj().is_some() {
            self.warn(
                "process.oomScoreAdj",
                "ignored: the command inherits palisade's OOM score adjustment",
            );
        }
        let unsupported = "is not supported by palisade; remove it";
        self.refuse(p.io_priority().is_some(), "process.ioPriority", unsupported)?;
        self.refuse(p.scheduler().is_some(), "process.scheduler", unsupported)?;
        self.refuse(
            p.exec_cpu_affinity().is_some(),
            "process.execCPUAffinity",
            unsupported,
        )?;

        Ok(ProcessPart {
            args,
            env,
            cwd,
            user,
            capabilities,
            no_new_privileges: p.no_new_privileges().unwrap_or(false),
            terminal,
            rlimits,
        })
    }

    /// `process.rlimits`, each type known to this kernel's headers and
    /// listed once, with its soft limit at most its hard one.
    fn rlimits(&self, list: &[PosixRlimit]) -> Result<Vec<Rlimit>, OciError> {
        let mut out: Vec<Rlimit> = Vec::new();
        for (i, r) in list.iter().enumerate() {
            let field = format!("process.rlimits[{i}]");
            let name = match serde_json::to_value(r.typ()) {
                Ok(serde_json::Value::String(s)) => s,
                _ => return Err(self.err(field, "unreadable type")),
            };
            let Some(&(_, resource)) = RLIMITS.iter().find(|(n, _)| *n == name) else {
                return Err(self.err(field, format!("{name} is not a Linux resource limit")));
            };
            if out.iter().any(|o| o.resource == resource) {
                return Err(self.err(field, format!("{name} is listed twice")));
            }
            if r.soft() > r.hard() {
                return Err(self.err(
                    field,
                    format!(
                        "{name}: soft limit {} is above the hard limit {}",
                        r.soft(),
                        r.hard()
                    ),
                ));
            }
            out.push(Rlimit {
                resource,
                soft: r.soft(),
                hard: r.hard(),
            });
        }
        Ok(out)
    }

    fn capabilities(&mut self, c: &LinuxCapabilities, non_root: bool) -> Vec<String> {
        if non_root && c.ambient().as_ref().is_some_and(|a| !a.is_empty()) {
            self.warn(
                "process.capabilities.ambient",
                "ignored: palisade runs a non-root user with no capabilities",
            );
        }
        let mut names: Vec<String> = c
            .bounding()
            .iter()
            .flatten()
            // Serialized, a capability is its OCI name: "CAP_NET_RAW".
            .filter_map(|cap| match serde_json::to_value(cap) {
                Ok(serde_json::Value::String(s)) => Some(s),
                _ => None,
            })
            .collect();
        names.sort();
        names
    }
}

pub(super) struct ProcessPart {
    pub(super) args: Vec<String>,
    pub(super) env: Vec<String>,
    pub(super) cwd: PathBuf,
    pub(super) user: Option<(u32, u32)>,
    pub(super) capabilities: Option<Vec<String>>,
    pub(super) no_new_privileges: bool,
    pub(super) terminal: bool,
    pub(super) rlimits: Vec<Rlimit>,
}

/// The resource limits a bundle may set, by their OCI names.
const RLIMITS: &[(&str, i32)] = &[
    ("RLIMIT_AS", libc::RLIMIT_AS as i32),
    ("RLIMIT_CORE", libc::RLIMIT_CORE as i32),
    ("RLIMIT_CPU", libc::RLIMIT_CPU as i32),
    ("RLIMIT_DATA", libc::RLIMIT_DATA as i32),
    ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE as i32),
    ("RLIMIT_LOCKS", libc::RLIMIT_LOCKS as i32),
    ("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK as i32),
    ("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE as i32),
    ("RLIMIT_NICE", libc::RLIMIT_NICE as i32),
    ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE as i32),
    ("RLIMIT_NPROC", libc::RLIMIT_NPROC as i32),
    ("RLIMIT_RSS", libc::RLIMIT_RSS as i32),
    ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO as i32),
    ("RLIMIT_RTTIME", libc::RLIMIT_RTTIME as i32),
    ("RLIMIT_SIGPENDING", libc::RLIMIT_SIGPENDING as i32),
    ("RLIMIT_STACK", libc::RLIMIT_STACK as i32),
];
