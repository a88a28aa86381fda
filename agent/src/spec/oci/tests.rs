use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::*;
use crate::spec::{CpuQuota, Device, DeviceRate, RtBandwidth, Swap};

/// A bundle directory with an empty `rootfs/`, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "palisade-oci-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("rootfs")).unwrap();
        Dir(dir)
    }

    fn with_config(config: &Value) -> Self {
        let d = Dir::new();
        d.write(config);
        d
    }

    fn write(&self, config: &Value) {
        fs::write(
            self.0.join("config.json"),
            serde_json::to_string_pretty(config).unwrap(),
        )
        .unwrap();
    }

    fn config_path(&self) -> String {
        self.0.join("config.json").display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The smallest bundle palisade runs without a warning.
fn minimal() -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "cwd": "/"
        },
        "root": {"path": "rootfs"},
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "mount"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "cgroup"}
            ]
        }
    })
}

/// `minimal()` with `edit` applied.
fn with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = minimal();
    edit(&mut v);
    v
}

fn load(config: &Value) -> Result<Bundle, OciError> {
    let d = Dir::with_config(config);
    load_bundle(&d.0)
}

/// The refusal's field and its whole message (which must start with the
/// config file's path).
fn refused(config: &Value) -> (String, String) {
    let d = Dir::with_config(config);
    let err = load_bundle(&d.0).expect_err("the bundle should be refused");
    let text = err.to_string();
    assert!(text.starts_with(&d.config_path()), "{text}");
    match err {
        OciError::Field { field, .. } => (field, text),
        other => panic!("expected a field error, got {other:?}"),
    }
}

/// The warnings for a bundle that loads.
fn warnings(config: &Value) -> Vec<String> {
    load(config).expect("the bundle should load").warnings
}

fn has_warning(config: &Value, field: &str) -> String {
    let w = warnings(config);
    let hit = w
        .iter()
        .find(|w| w.contains(&format!("config.json: {field}: ")));
    hit.unwrap_or_else(|| panic!("no warning for {field} in {w:?}"))
        .clone()
}

#[test]
fn minimal_bundle() {
    let d = Dir::with_config(&minimal());
    let b = load_bundle(&d.0).unwrap();
    assert_eq!(b.args, ["sh"]);
    assert!(b.env.is_empty());
    assert_eq!(b.cwd, Path::new("/"));
    assert_eq!(b.user, None);
    assert_eq!(b.rootfs, fs::canonicalize(&d.0).unwrap().join("rootfs"));
    assert!(!b.read_only);
    assert_eq!(b.hostname, None);
    assert!(b.mounts.is_empty());
    assert!(!b.net_none);
    assert_eq!(b.capabilities, None);
    assert!(!b.no_new_privileges);
    assert!(b.resources.is_empty());
    assert!(b.masked_paths.is_empty() && b.readonly_paths.is_empty());
    assert!(!b.user_namespace);
    assert!(b.uid_mappings.is_empty() && b.gid_mappings.is_empty());
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
}

#[test]
fn full_bundle_maps_every_field() {
    let d = Dir::new();
    fs::create_dir(d.0.join("data")).unwrap();
    let config = json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": {"uid": 1000, "gid": 100},
            "args": ["/bin/server", "--port", "80"],
            "env": ["PATH=/bin", "EMPTY="],
            "cwd": "/srv",
            "capabilities": {
                "bounding": ["CAP_NET_RAW", "CAP_CHOWN", "NET_BIND_SERVICE"],
                "effective": ["CAP_CHOWN"],
                "permitted": ["CAP_CHOWN"]
            },
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "web",
        "annotations": {"org.example.note": "fine silently"},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/data", "type": "bind", "source": "data", "options": ["ro"]},
            {"destination": "/etc/hosts", "source": "/etc/hosts", "options": ["rbind", "rprivate"]},
            {"destination": "/opt", "type": "none", "source": "/", "options": ["bind", "ro", "rw"]}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "cgroup"}, {"type": "user"}, {"type": "time"}
            ],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [
                {"containerID": 0, "hostID": 200000, "size": 1000},
                {"containerID": 1000, "hostID": 1000, "size": 1}
            ],
            "resources": {
                "memory": {"limit": 268435456, "reservation": 134217728, "swap": 536870912},
                "cpu": {
                    "shares": 1024, "quota": 50000, "period": 200000,
                    "realtimeRuntime": 20000, "realtimePeriod": 100000,
                    "cpus": "0-1,3", "mems": "0"
                },
                "pids": {"limit": 100},
                "blockIO": {
                    "weight": 500,
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 10485760}],
                    "throttleWriteBpsDevice": [
                        {"major": 8, "minor": 16, "rate": 1048576},
                        {"major": 254, "minor": 0, "rate": 2048}
                    ]
                }
            },
            "maskedPaths": ["/proc/kcore", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys"]
        }
    });
    d.write(&config);
    let b = load_bundle(&d.0).unwrap();
    let base = fs::canonicalize(&d.0).unwrap();

    assert_eq!(b.args, ["/bin/server", "--port", "80"]);
    assert_eq!(b.env, ["PATH=/bin", "EMPTY="]);
    assert_eq!(b.cwd, Path::new("/srv"));
    assert_eq!(b.user, Some((1000, 100)));
    assert_eq!(b.rootfs, base.join("rootfs"));
    assert!(b.read_only);
    assert_eq!(b.hostname.as_deref(), Some("web"));
    assert_eq!(
        b.mounts,
        [
            BindMount {
                source: base.join("data"),
                target: "/data".into(),
                read_only: true,
                restrict: Default::default(),
                tmpfs: None,
            },
            BindMount {
                source: "/etc/hosts".into(),
                target: "/etc/hosts".into(),
                read_only: false,
                restrict: Default::default(),
                tmpfs: None,
            },
            BindMount {
                source: "/".into(),
                target: "/opt".into(),
                read_only: false,
                restrict: Default::default(),
                tmpfs: None,
            },
        ]
    );
    assert!(b.net_none);
    assert_eq!(
        b.capabilities.as_deref(),
        Some(&["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"].map(String::from)[..])
    );
    assert!(b.no_new_privileges);
    assert_eq!(
        b.resources,
        ResourceLimits {
            memory: Some(256 << 20),
            memory_high: Some(128 << 20),
            memory_swap: Some(Swap::Total(512 << 20)),
            cpu: Some(CpuQuota {
                quota_us: 50_000,
                period_us: 200_000
            }),
            // 1 + (1024 - 2) * 9999 / 262142
            cpu_weight: Some(39),
            cpu_rt: Some(RtBandwidth {
                runtime_us: 20_000,
                period_us: 100_000
            }),
            cpuset: Some("0-1,3".into()),
            mems: Some("0".into()),
            pids: Some(100),
            // 1 + (500 - 10) * 9999 / 990
            io_weight: Some(4950),
            io_read_bps: vec![DeviceRate {
                device: Device::Number { major: 8, minor: 0 },
                bytes_per_sec: 10 << 20
            }],
            io_write_bps: vec![
                DeviceRate {
                    device: Device::Number {
                        major: 8,
                        minor: 16
                    },
                    bytes_per_sec: 1 << 20
                },
                DeviceRate {
                    device: Device::Number {
                        major: 254,
                        minor: 0
                    },
                    bytes_per_sec: 2048
                },
            ],
        }
    );
    assert_eq!(
        b.masked_paths,
        [Path::new("/proc/kcore"), Path::new("/sys/firmware")]
    );
    assert_eq!(b.readonly_paths, [Path::new("/proc/sys")]);
    assert!(b.user_namespace);
    assert_eq!(b.uid_mappings, [(0, 100_000, 65_536)]);
    assert_eq!(b.gid_mappings, [(0, 200_000, 1000), (1000, 1000, 1)]);
    // The reservation's different v2 meaning is the only thing to say.
    assert_eq!(b.warnings.len(), 1, "{:?}", b.warnings);
    assert!(b.warnings[0].contains("linux.resources.memory.reservation"));
}

#[test]
fn weight_conversions_cover_the_ranges() {
    let weights = |shares: u64, blkio: u16| {
        let b = load(&with(|v| {
            v["linux"]["resources"] =
                json!({"cpu": {"shares": shares}, "blockIO": {"weight": blkio}});
        }))
        .unwrap();
        (b.resources.cpu_weight, b.resources.io_weight)
    };
    assert_eq!(weights(2, 10), (Some(1), Some(1)));
    assert_eq!(weights(262_144, 1000), (Some(10_000), Some(10_000)));
    // blkio weight and palisade's blkio_weight() round-trip within one unit.
    let io = weights(1024, 500).1;
    let back = ResourceLimits {
        io_weight: io,
        ..Default::default()
    }
    .blkio_weight()
    .unwrap();
    assert!((499..=500).contains(&back), "{back}");
}

#[test]
fn unlimited_and_unset_values_limit_nothing() {
    let b = load(&with(|v| {
        v["linux"]["resources"] = json!({
            "memory": {"limit": -1, "reservation": 0},
            "cpu": {"shares": 0, "quota": -1, "period": 100000, "cpus": "", "mems": ""},
            "pids": {"limit": -1},
            "blockIO": {"weight": 0}
        });
    }))
    .unwrap();
    assert!(b.resources.is_empty(), "{:?}", b.resources);
    let b = load(&with(|v| {
        v["linux"]["resources"] = json!({"memory": {"limit": 1048576, "swap": -1}});
    }))
    .unwrap();
    assert_eq!(b.resources.memory_swap, Some(Swap::Unlimited));
}

#[test]
fn takes_terminal_rlimits_hooks_and_annotations() {
    let b = load(&with(|v| {
        v["process"]["terminal"] = json!(true);
        v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}]);
        v["hooks"] = json!({"prestart": [{"path": "/bin/true", "args": ["true", "x"], "timeout": 5}],
                            "poststop": [{"path": "/bin/false"}]});
        v["annotations"] = json!({"io.palisade.policy-file": "/p.toml"});
    }))
    .unwrap();
    assert!(b.terminal);
    assert_eq!(
        b.rlimits,
        [Rlimit {
            resource: libc::RLIMIT_NOFILE as i32,
            soft: 512,
            hard: 1024
        }]
    );
    assert_eq!(b.hooks.prestart[0].args, ["true", "x"]);
    assert_eq!(b.hooks.prestart[0].timeout, Some(5));
    assert_eq!(b.hooks.poststop[0].path, PathBuf::from("/bin/false"));
    assert_eq!(b.annotations["io.palisade.policy-file"], "/p.toml");
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
}

#[test]
fn refuses_hooks_and_rlimits_it_cannot_honour() {
    let (field, text) = refused(&with(|v| {
        v["hooks"] = json!({"startContainer": [{"path": "/bin/true"}]})
    }));
    assert_eq!(field, "hooks.startContainer");
    assert!(text.contains("not supported"), "{text}");
    let (field, _) = refused(&with(|v| {
        v["hooks"] = json!({"poststart": [{"path": "true"}]})
    }));
    assert_eq!(field, "hooks.poststart[0]");
    let (field, text) = refused(&with(|v| {
        v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 2}])
    }));
    assert_eq!(field, "process.rlimits[0]");
    assert!(text.contains("above the hard limit"), "{text}");
}

#[test]
fn refuses_other_spec_versions() {
    for version in ["2.0.0", "0.5.0", ""] {
        let (field, text) = refused(&with(|v| v["ociVersion"] = json!(version)));
        assert_eq!(field, "ociVersion");
        assert!(
            text.contains(&format!("{version:?} is not supported")),
            "{text}"
        );
    }
}

#[test]
fn refuses_non_bind_mounts() {
    let (field, text) = refused(&with(|v| {
        v["mounts"] = json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/data", "type": "nfs", "source": "server:/export"}
        ]);
    }));
    assert_eq!(field, "mounts[3] (/data, type nfs)");
    assert!(
        text.ends_with("config.json: mounts[3] (/data, type nfs): only bind mounts are supported (palisade mounts /proc, /dev, /dev/pts, /dev/shm, /sys and /tmp itself)"),
        "{text}"
    );
    // A provided destination with another filesystem type is not skipped.
    let (field, _) = refused(&with(|v| {
        v["mounts"] = json!([{"destination": "/tmp", "type": "ext4", "source": "/dev/sda1"}]);
    }));
    assert_eq!(field, "mounts[0] (/tmp, type ext4)");
}

#[test]
fn refuses_bind_mounts_palisade_cannot_honour() {
    let mount = |m: Value| with(|v| v["mounts"] = json!([m]));
    let (field, text) = refused(&mount(
        json!({"destination": "/x", "type": "bind", "source": "/", "options": ["rbind", "shared"]}),
    ));
    assert_eq!(field, "mounts[0] (/x, type bind)");
    assert!(
        text.contains("option \"shared\" is not supported"),
        "{text}"
    );
    let (_, text) = refused(&mount(
        json!({"destination": "/x", "type": "bind", "source": "no-such-dir"}),
    ));
    assert!(text.contains("no-such-dir does not exist"), "{text}");
    let (_, text) = refused(&mount(json!({"destination": "/x", "type": "bind"})));
    assert!(text.contains("needs a source"), "{text}");
    let (_, text) = refused(&mount(
        json!({"destination": "x", "type": "bind", "source": "/"}),
    ));
    assert!(text.contains("absolute"), "{text}");
    let (_, text) = refused(&mount(json!({
        "destination": "/x", "type": "bind", "source": "/",
        "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
        "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]
    })));
    assert!(text.contains("id-mapped"), "{text}");
}

#[test]
fn refuses_joining_namespaces() {
    for typ in ["network", "pid", "user", "mount"] {
        let (field, text) = refused(&with(|v| {
            v["linux"]["namespaces"] = json!([{"type": typ, "path": "/proc/1/ns/x"}]);
        }));
        assert_eq!(field, format!("linux.namespaces[0] ({typ})"));
        assert!(
            text.contains("joining an existing namespace (/proc/1/ns/x) is not supported"),
            "{text}"
        );
    }
    let (field, _) = refused(&with(|v| {
        v["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "pid"}]);
    }));
    assert_eq!(field, "linux.namespaces[1] (pid)");
}

#[test]
fn refuses_missing_rootfs() {
    let (field, text) = refused(&with(|v| v["root"]["path"] = json!("nowhere")));
    assert_eq!(field, "root.path");
    assert!(text.contains("nowhere is not a directory"), "{text}");
    let (field, _) = refused(&with(|v| {
        v.as_object_mut().unwrap().remove("root");
    }));
    assert_eq!(field, "root");
}

#[test]
fn refuses_relative_cwd() {
    let (field, text) = refused(&with(|v| v["process"]["cwd"] = json!("srv")));
    assert_eq!(field, "process.cwd");
    assert!(text.contains("\"srv\" must be an absolute path"), "{text}");
}

#[test]
fn refuses_bad_process() {
    let (field, _) = refused(&with(|v| v["process"]["args"] = json!([])));
    assert_eq!(field, "process.args");
    let (field, text) = refused(&with(|v| v["process"]["env"] = json!(["A=1", "NOVALUE"])));
    assert_eq!(field, "process.env[1]");
    assert!(text.contains("\"NOVALUE\": expected KEY=VALUE"), "{text}");
    let (field, _) = refused(&with(|v| v["process"]["env"] = json!(["=x"])));
    assert_eq!(field, "process.env[0]");
    let (field, _) = refused(&with(|v| {
        v.as_object_mut().unwrap().remove("process");
    }));
    assert_eq!(field, "process");
    let (field, _) = refused(&with(|v| {
        v["process"]["scheduler"] = json!({"policy": "SCHED_FIFO", "priority": 1});
    }));
    assert_eq!(field, "process.scheduler");
}

#[test]
fn refuses_id_mappings_without_their_namespace() {
    let (field, text) = refused(&with(|v| {
        v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    }));
    assert_eq!(field, "linux.uidMappings");
    assert!(text.contains("need a user namespace"), "{text}");
    let (field, text) = refused(&with(|v| {
        v["linux"]["namespaces"] = json!([{"type": "user"}]);
    }));
    assert_eq!(field, "linux.uidMappings");
    assert!(text.contains("needs mappings"), "{text}");
}

#[test]
fn refuses_unsupported_linux_fields() {
    let (field, text) = refused(&with(|v| {
        v["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    }));
    assert_eq!(field, "linux.sysctl");
    assert!(text.contains("net.ipv4.ip_forward"), "{text}");
    let (field, _) = refused(&with(|v| {
        v["linux"]["rootfsPropagation"] = json!("rshared")
    }));
    assert_eq!(field, "linux.rootfsPropagation");
    let (field, _) = refused(&with(|v| {
        v["linux"]["personality"] = json!({"domain": "LINUX32"});
    }));
    assert_eq!(field, "linux.personality");
}

#[test]
fn refuses_unsupported_or_inconsistent_resources() {
    let res = |r: Value| refused(&with(|v| v["linux"]["resources"] = r)).0;
    assert_eq!(
        res(json!({"unified": {"memory.max": "1G"}})),
        "linux.resources.unified"
    );
    assert_eq!(
        res(json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]})),
        "linux.resources.hugepageLimits"
    );
    assert_eq!(
        res(json!({"memory": {"limit": 1048576, "swap": 1024}})),
        "linux.resources.memory.swap"
    );
    assert_eq!(
        res(json!({"memory": {"swap": 2097152}})),
        "linux.resources.memory.swap"
    );
    assert_eq!(
        res(json!({"memory": {"swappiness": 10}})),
        "linux.resources.memory.swappiness"
    );
    assert_eq!(
        res(json!({"cpu": {"shares": 1}})),
        "linux.resources.cpu.shares"
    );
    assert_eq!(
        res(json!({"cpu": {"quota": 10}})),
        "linux.resources.cpu.quota"
    );
    assert_eq!(
        res(json!({"cpu": {"cpus": "3-1"}})),
        "linux.resources.cpu.cpus"
    );
    assert_eq!(
        res(json!({"cpu": {"realtimeRuntime": 200000, "realtimePeriod": 100000}})),
        "linux.resources.cpu.realtimeRuntime"
    );
    assert_eq!(
        res(json!({"cpu": {"realtimeRuntime": 1000, "realtimePeriod": 10}})),
        "linux.resources.cpu.realtimePeriod"
    );
    assert_eq!(
        res(json!({"blockIO": {"weight": 5}})),
        "linux.resources.blockIO.weight"
    );
    assert_eq!(
        res(json!({"blockIO": {"throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 10}]}})),
        "linux.resources.blockIO.throttleReadIOPSDevice"
    );
    assert_eq!(
        res(
            json!({"blockIO": {"throttleWriteBpsDevice": [{"major": -1, "minor": 0, "rate": 10}]}})
        ),
        "linux.resources.blockIO.throttleWriteBpsDevice[0]"
    );
}

#[test]
fn warns_about_what_palisade_does_instead() {
    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit)] = &[
        ("linux.seccomp", |v| {
            v["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW"})
        }),
        ("process.apparmorProfile", |v| {
            v["process"]["apparmorProfile"] = json!("docker-default")
        }),
        ("process.selinuxLabel", |v| {
            v["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0")
        }),
        ("linux.devices[0]", |v| {
            v["linux"]["devices"] = json!([
                {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 438}
            ])
        }),
        ("linux.cgroupsPath", |v| {
            v["linux"]["cgroupsPath"] = json!("/mine")
        }),
        ("process.user.additionalGids", |v| {
            v["process"]["user"]["additionalGids"] = json!([10, 20])
        }),
        (
            "mounts[0] (/dev/mqueue, type mqueue)",
            |v| {
                v["mounts"] =
                    json!([{"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"}])
            },
        ),
        (
            "mounts[0] (/sys/fs/cgroup, type cgroup)",
            |v| {
                v["mounts"] =
                    json!([{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}])
            },
        ),
        ("linux.namespaces", |v| {
            v["linux"]["namespaces"] = json!([{"type": "pid"}])
        }),
        ("process.capabilities.ambient", |v| {
            v["process"]["user"]["uid"] = json!(1000);
            v["process"]["capabilities"] =
                json!({"bounding": ["CAP_KILL"], "ambient": ["CAP_KILL"]})
        }),
        ("process.frobnicate", |v| {
            v["process"]["frobnicate"] = json!(true)
        }),
    ];
    for (field, edit) in cases {
        let config = with(edit);
        has_warning(&config, field);
        // Exactly one warning per case: nothing else is said by accident.
        assert_eq!(
            warnings(&config).len(),
            1,
            "{field}: {:?}",
            warnings(&config)
        );
    }
    let w = has_warning(
        &with(|v| v["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW"})),
        "linux.seccomp",
    );
    assert!(w.contains("its own default seccomp profile"), "{w}");
    let w = has_warning(
        &with(|v| v["linux"]["namespaces"] = json!([{"type": "pid"}])),
        "linux.namespaces",
    );
    assert!(w.contains("no mount, ipc, uts, cgroup namespace"), "{w}");
}

#[test]
fn annotations_and_nulls_are_fine_silently() {
    let config = with(|v| {
        v["annotations"] = json!({"io.example/a": "b"});
        v["hostname"] = Value::Null;
    });
    assert!(warnings(&config).is_empty(), "{:?}", warnings(&config));
}

#[test]
fn unreadable_or_malformed_config() {
    let d = Dir::new();
    let err = load_bundle(&d.0).unwrap_err();
    assert!(matches!(err, OciError::Read { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read {}: ", d.config_path()))
    );

    fs::write(
        d.0.join("config.json"),
        "{\"ociVersion\": \"1.0.0\",\n \"process\": 3}",
    )
    .unwrap();
    let err = load_bundle(&d.0).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, OciError::Parse { .. }), "{err:?}");
    assert!(
        text.starts_with(&format!(
            "{}: not a valid OCI runtime spec: ",
            d.config_path()
        )),
        "{text}"
    );
    assert!(text.contains("line 2"), "{text}");
}

/// The bundle `runc spec` writes, with `terminal` turned off, loads; only
/// when runc is installed.
#[test]
fn runc_default_spec_loads() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let Some(runc) = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("runc"))
        .find(|p| p.is_file())
    else {
        eprintln!("runc is not installed: skipped");
        return;
    };
    let d = Dir::new();
    let status = std::process::Command::new(&runc)
        .arg("spec")
        .current_dir(&d.0)
        .status()
        .unwrap();
    assert!(status.success());
    let mut config: Value =
        serde_json::from_str(&fs::read_to_string(d.0.join("config.json")).unwrap()).unwrap();
    config["process"]["terminal"] = json!(false);
    d.write(&config);

    let b = load_bundle(&d.0).unwrap();
    assert_eq!(b.args, ["sh"]);
    assert_eq!(b.cwd, Path::new("/"));
    assert_eq!(b.user, None);
    assert!(b.read_only);
    assert_eq!(b.hostname.as_deref(), Some("runc"));
    assert!(b.mounts.is_empty());
    assert!(b.net_none);
    assert!(b.no_new_privileges);
    assert!(
        b.capabilities
            .as_ref()
            .unwrap()
            .contains(&"CAP_KILL".to_string())
    );
    assert!(b.masked_paths.contains(&PathBuf::from("/proc/kcore")));
    assert!(b.readonly_paths.contains(&PathBuf::from("/proc/sys")));
    // runc's deny-all leaves palisade's default allowlist.
    assert!(b.device_rules.is_empty(), "{:?}", b.device_rules);
    let field = "/dev/mqueue";
    assert!(
        b.warnings.iter().any(|w| w.contains(field)),
        "{field}: {:?}",
        b.warnings
    );
}

#[test]
fn linux_devices_are_host_nodes_bound_with_rwm() {
    let b = load(&with(|v| {
        v["linux"]["devices"] = json!([
            {"path": "/dev/null", "type": "c", "major": 1, "minor": 3},
            {"path": "/dev/zero", "type": "u", "major": 1, "minor": 5}
        ])
    }))
    .unwrap();
    let nodes: Vec<(String, String)> = b
        .devices
        .iter()
        .map(|(d, rule)| (d.container.display().to_string(), rule.to_string()))
        .collect();
    assert_eq!(
        nodes,
        [
            ("/dev/null".to_string(), "c 1:3 rwm".to_string()),
            ("/dev/zero".to_string(), "c 1:5 rwm".to_string())
        ]
    );
    assert_eq!(b.devices[0].0.host, Path::new("/dev/null"));
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);

    let device = |d: Value| with(|v| v["linux"]["devices"] = json!([d]));
    let cases = [(
        json!({"path": "/dev/fifo", "type": "p", "major": 0, "minor": 0}),
        "FIFOs are not supported",
    )];
    for (entry, needle) in cases {
        let (field, text) = refused(&device(entry.clone()));
        assert!(field.starts_with("linux.devices[0] ("), "{field}");
        assert!(text.contains(needle), "{entry}: {text}");
    }
}

#[test]
fn resource_device_rules_grant_and_only_deny_all_is_accepted() {
    let rules = |entries: Value| {
        load(&with(|v| {
            v["linux"]["resources"] = json!({"devices": entries})
        }))
        .map(|b| {
            b.device_rules
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        rules(json!([
            {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "r"},
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "b", "major": 7, "access": "rw"},
            {"allow": true, "type": "c", "major": 1, "minor": 4},
            {"allow": true, "access": "m"}
        ]))
        .unwrap(),
        ["b 7:* rw", "c 1:4 rwm", "a *:* m"]
    );
    for (entries, needle) in [
        (
            json!([{"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]),
            "only grant",
        ),
        (json!([{"allow": false, "access": "w"}]), "only grant"),
        (
            json!([{"allow": true, "type": "c", "minor": 3, "access": "r"}]),
            "wildcard major",
        ),
        (
            json!([{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rx"}]),
            "invalid access",
        ),
        (json!([{"allow": true, "type": "p", "access": "r"}]), "FIFO"),
    ] {
        let (field, text) = refused(&with(|v| {
            v["linux"]["resources"] = json!({"devices": entries})
        }));
        assert_eq!(field, "linux.resources.devices[0]", "{text}");
        assert!(text.contains(needle), "{text}");
    }
}
