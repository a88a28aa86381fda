//! `linux.devices` (nodes the container must have) and
//! `linux.resources.devices` (device cgroup rules) into palisade's device
//! nodes and rules.
//!
//! A node is a bind mount of the host's node at the same path, which must
//! be the device the bundle names; it gets rwm, as runc grants it. Rules
//! only grant, on top of palisade's default allowlist (runc too appends
//! its defaults): an allow entry becomes a rule, a deny of every device
//! (runc's `{"allow": false, "access": "rwm"}`) drops the bundle's allows
//! before it, and any other deny is refused.

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::{Cx, OciError};
use crate::spec::{DeviceRequest, DeviceRule, DeviceType};

impl Cx {
    /// `linux.devices`: each a host node to bind at its path, with rwm,
    /// and the device the bundle says it is (the runtime checks the host's
    /// node against it before anything is created).
    pub(super) fn device_nodes(
        &mut self,
        devices: &[LinuxDevice],
    ) -> Result<Vec<(DeviceRequest, DeviceRule)>, OciError> {
        let mut nodes = Vec::new();
        for (i, d) in devices.iter().enumerate() {
            let field = format!("linux.devices[{i}] ({})", d.path().display());
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => DeviceType::Char,
                LinuxDeviceType::B => DeviceType::Block,
                LinuxDeviceType::P => {
                    return Err(self.err(field, "FIFOs are not supported; remove it"));
                }
                LinuxDeviceType::A => {
                    return Err(self.err(field, "type must be c, u or b"));
                }
            };
            let request = DeviceRequest {
                host: d.path().clone(),
                container: d.path().clone(),
                access: RWM,
            };
            let (Ok(major), Ok(minor)) = (u32::try_from(d.major()), u32::try_from(d.minor()))
            else {
                return Err(self.err(field, "major and minor must be 0 or more"));
            };
            let expected = DeviceRule::exact(kind, major, minor, RWM);
            if d.file_mode().is_some() || d.uid().is_some() || d.gid().is_some() {
                self.warn(
                    &format!("linux.devices[{i}]"),
                    "fileMode, uid and gid ignored: the node keeps the host's mode and owner",
                );
            }
            nodes.push((request, expected));
        }
        Ok(nodes)
    }

    /// `linux.resources.devices`: the allow entries as rules.
    pub(super) fn device_rules(
        &mut self,
        entries: &[LinuxDeviceCgroup],
    ) -> Result<Vec<DeviceRule>, OciError> {
        let mut rules = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let field = format!("linux.resources.devices[{i}]");
            let kind = match e.typ().unwrap_or(LinuxDeviceType::A) {
                LinuxDeviceType::A => 'a',
                LinuxDeviceType::B => 'b',
                LinuxDeviceType::C | LinuxDeviceType::U => 'c',
                LinuxDeviceType::P => {
                    return Err(self.err(field, "type p (FIFO) is not a device type"));
                }
            };
            let number = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
            let access = e
                .access()
                .as_deref()
                .filter(|a| !a.is_empty())
                .unwrap_or("rwm");
            let text = format!(
                "{kind} {}:{} {access}",
                number(e.major()),
                number(e.minor())
            );
            let rule = DeviceRule::parse(&text)
                .map_err(|err| self.err(&field, format!("{text:?}: {err}")))?;
            if e.allow() {
                rules.push(rule);
            } else if kind == 'a' && rule.major.is_none() && rule.access == RWM {
                rules.clear();
            } else {
                return Err(self.err(
                    field,
                    format!(
                        "deny {text:?} is not supported: palisade's device rules only grant (everything not granted is denied); only a deny of every device (\"a *:* rwm\") is accepted"
                    ),
                ));
            }
        }
        Ok(rules)
    }
}

const RWM: u32 = palisade_common::DEVICE_ACC_READ
    | palisade_common::DEVICE_ACC_WRITE
    | palisade_common::DEVICE_ACC_MKNOD;
