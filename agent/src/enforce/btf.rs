//! Where fields of a kernel structure are, from the kernel's BTF
//! (`/sys/kernel/btf/vmlinux`): the exit program reads three fields of
//! `struct task_struct`, whose layout differs by kernel version and
//! configuration. aya relocates only C programs' CO-RE accesses, and its
//! BTF types keep their members private, so the few lines of the format
//! needed here are read directly (Documentation/bpf/btf.rst): the header,
//! then every type record in id order, each sized by its kind.

use std::{collections::HashMap, path::Path};

/// The kernel's own BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
/// Nested anonymous structs and unions followed when looking for a member.
const MAX_DEPTH: usize = 8;

/// A type record: its kind, name, and the byte range of its members.
#[derive(Clone, Copy)]
struct Record {
    kind: u32,
    name: u32,
    kind_flag: bool,
    vlen: u32,
    /// Where its kind-specific data starts, in the type section.
    data: usize,
}

/// A parsed BTF blob: the type section, the string section, and each
/// type's record (index = type id - 1).
pub struct Btf {
    types: Vec<u8>,
    strings: Vec<u8>,
    records: Vec<Record>,
}

impl Btf {
    /// Reads and parses the BTF at `path`.
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a BTF blob (little-endian, as on this host).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let u16_at = |at: usize| {
            bytes
                .get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        if u16_at(0) != Some(MAGIC) {
            return Err("not BTF (bad magic)".into());
        }
        let header = |at| u32_at(bytes, at).ok_or("a truncated header");
        let hdr_len = header(4)? as usize;
        let (type_off, type_len) = (header(8)? as usize, header(12)? as usize);
        let (str_off, str_len) = (header(16)? as usize, header(20)? as usize);
        let section = |off: usize, len: usize| {
            bytes
                .get(hdr_len + off..hdr_len + off + len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| "a section past the end".to_string())
        };
        let types = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;
        let mut records = Vec::new();
        let mut at = 0;
        while at < types.len() {
            let word = |i: usize| u32_at(&types, at + 4 * i).ok_or("a truncated type");
            let (name, info) = (word(0)?, word(1)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let data = at + 12;
            let extra = match kind {
                1 | 14 | 17 => 4,             // int, var, decl_tag
                3 => 12,                      // array
                4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
                6 | 13 => 8 * vlen,           // enum, func_proto
                2 | 7..=12 | 16 | 18 => 0,    // ptr, fwd, modifiers, func, float, type_tag
                other => return Err(format!("unknown BTF kind {other}")),
            } as usize;
            records.push(Record {
                kind,
                name,
                kind_flag: info >> 31 == 1,
                vlen,
                data,
            });
            at = data + extra;
        }
        Ok(Self {
            types,
            strings,
            records,
        })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// The byte offset of member `member` of `struct name`, looking into
    /// anonymous structs and unions it holds.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u64, String> {
        let record = self
            .records
            .iter()
            .find(|r| r.kind == KIND_STRUCT && r.vlen > 0 && self.name(r.name) == name.as_bytes())
            .ok_or_else(|| format!("no struct {name}"))?;
        let bits = self
            .find_member(record, member.as_bytes(), 0)
            .ok_or_else(|| format!("struct {name} has no member {member}"))?;
        if bits % 8 != 0 {
            return Err(format!("{name}.{member} is a bitfield"));
        }
        Ok(bits / 8)
    }

    /// The bit offset of `member` in the struct or union `record`.
    fn find_member(&self, record: &Record, member: &[u8], depth: usize) -> Option<u64> {
        let mut anonymous = Vec::new();
        for i in 0..record.vlen as usize {
            let at = record.data + 12 * i;
            let (name, ty, offset) = (
                u32_at(&self.types, at)?,
                u32_at(&self.types, at + 4)?,
                u32_at(&self.types, at + 8)?,
            );
            // With kind_flag set, the top 8 bits are a bitfield's size.
            let bits = u64::from(if record.kind_flag {
                offset & 0xff_ffff
            } else {
                offset
            });
            if self.name(name) == member {
                return Some(bits);
            }
            if name == 0 {
                anonymous.push((ty, bits));
            }
        }
        if depth == MAX_DEPTH {
            return None;
        }
        anonymous.into_iter().find_map(|(ty, bits)| {
            let inner = self.records.get((ty as usize).checked_sub(1)?)?;
            matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                .then(|| self.find_member(inner, member, depth + 1))
                .flatten()
                .map(|b| bits + b)
        })
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Offsets of the `task_struct` fields the exit program reads, by the
/// names of the object's globals that take them.
pub fn task_offsets() -> Result<HashMap<&'static str, u64>, String> {
    use palisade_common::task_offset;
    let btf = Btf::read(Path::new(VMLINUX))?;
    [
        (task_offset::NVCSW, "nvcsw"),
        (task_offset::NIVCSW, "nivcsw"),
        (task_offset::START_BOOTTIME, "start_boottime"),
    ]
    .into_iter()
    .map(|(global, field)| Ok((global, btf.member_offset("task_struct", field)?)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob from type records (each: name, info, size/type, then
    /// its data words) and a string section.
    fn blob(types: &[Vec<u32>], strings: &[u8]) -> Vec<u8> {
        let type_bytes: Vec<u8> = types
            .iter()
            .flatten()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let mut out = Vec::new();
        out.extend(MAGIC.to_le_bytes());
        out.extend([1u8, 0]);
        for w in [
            24,
            0,
            type_bytes.len() as u32,
            type_bytes.len() as u32,
            strings.len() as u32,
        ] {
            out.extend(w.to_le_bytes());
        }
        out.extend(type_bytes);
        out.extend(strings);
        out
    }

    #[test]
    fn members_are_found_directly_and_in_anonymous_unions() {
        // Strings: 1 "int", 5 "task", 10 "a", 12 "b", 14 "c".
        let strings = b"\0int\0task\0a\0b\0c\0";
        let int = vec![1, 1 << 24, 8, 64];
        // A union of one member "c" (type 1) at 0.
        let union = vec![0, (5 << 24) | 1, 8, 14, 1, 0];
        // struct task { a at byte 8; <anonymous union> at byte 16; b at 24 },
        // with kind_flag set (a bitfield size in the top bits of `a`).
        let task = vec![
            5,
            (1 << 31) | (4 << 24) | 3,
            32,
            10,
            1,
            (4 << 24) | 64,
            0,
            2,
            128,
            12,
            1,
            192,
        ];
        let btf = Btf::parse(&blob(&[int, union, task], strings)).unwrap();
        assert_eq!(btf.member_offset("task", "a"), Ok(8));
        assert_eq!(btf.member_offset("task", "b"), Ok(24));
        assert_eq!(btf.member_offset("task", "c"), Ok(16));
        assert!(
            btf.member_offset("task", "d")
                .unwrap_err()
                .contains("no member d")
        );
        assert!(
            btf.member_offset("mm", "a")
                .unwrap_err()
                .contains("no struct mm")
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Btf::parse(b"not btf at all").is_err());
        let mut truncated = blob(&[vec![1, 1 << 24, 8, 64]], b"\0x\0");
        truncated.truncate(30);
        assert!(Btf::parse(&truncated).is_err());
    }

    #[test]
    fn this_kernels_task_struct_has_the_fields() {
        let offsets = task_offsets().expect("this kernel has BTF");
        let nvcsw = offsets[palisade_common::task_offset::NVCSW];
        // Declared one after the other, both unsigned long.
        assert_eq!(offsets[palisade_common::task_offset::NIVCSW], nvcsw + 8);
        assert!(offsets[palisade_common::task_offset::START_BOOTTIME] > 0);
    }
}
