//! Field offsets of kernel structs, from the kernel's own type information
//! (/sys/kernel/btf/vmlinux). Pure parsing over the bytes; the kernel side reads
//! `task_struct` fields at these offsets, as a CO-RE relocation would place them.
//!
//! Only what is needed is parsed: the type section, walked record by record, and the
//! members of one struct (descending into anonymous structs and unions, where kernels
//! built with randstruct or with `struct_group` put fields).
use std::collections::HashMap;

/// Where the running kernel describes its types.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    #[error("not BTF data (bad magic or header)")]
    BadHeader,
    #[error("BTF type {0} is truncated or of an unknown kind {1}")]
    BadType(u32, u32),
    #[error("struct {0} is not in the kernel's BTF")]
    NoStruct(String),
    #[error("struct {0} has no field {1}")]
    NoField(String, String),
}

/// One type record: its kind, name, and (for structs and unions) members as
/// (name offset, type id, bit offset).
struct Type {
    kind: u32,
    name_off: u32,
    /// The type it refers to (typedefs, modifiers); a size for others.
    size_or_type: u32,
    members: Vec<(u32, u32, u32)>,
}

const STRUCT: u32 = 4;
const UNION: u32 = 5;

/// The kernel's types, as far as struct fields go.
pub struct Btf<'a> {
    strings: &'a [u8],
    /// By type id (id 0 is `void`, not stored: index = id - 1).
    types: Vec<Type>,
    structs: HashMap<&'a str, u32>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    /// Parse little-endian BTF (the only byte order of the kernels we run on).
    pub fn parse(data: &'a [u8]) -> Result<Btf<'a>, BtfError> {
        if u16_at(data, 0) != Some(MAGIC) {
            return Err(BtfError::BadHeader);
        }
        let field = |i: usize| u32_at(data, 4 + 4 * i).ok_or(BtfError::BadHeader);
        let hdr_len = field(0)? as usize;
        let (type_off, type_len) = (field(1)? as usize, field(2)? as usize);
        let (str_off, str_len) = (field(3)? as usize, field(4)? as usize);
        let section = |off: usize, len: usize| {
            data.get(hdr_len + off..hdr_len + off + len)
                .ok_or(BtfError::BadHeader)
        };
        let (type_sec, strings) = (section(type_off, type_len)?, section(str_off, str_len)?);
        let mut types = Vec::new();
        let mut at = 0;
        while at < type_sec.len() {
            let id = types.len() as u32 + 1;
            let word = |k: usize| u32_at(type_sec, at + 4 * k);
            let (Some(name_off), Some(info), Some(size_or_type)) = (word(0), word(1), word(2))
            else {
                return Err(BtfError::BadType(id, 0));
            };
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            at += 12;
            // Bytes that follow the common record, by kind (include/uapi/linux/btf.h).
            let extra = match kind {
                1 | 14 | 17 => 4,            // INT, VAR, DECL_TAG
                3 => 12,                     // ARRAY
                STRUCT | UNION => vlen * 12, // members
                6 | 13 => vlen * 8,          // ENUM, FUNC_PROTO params
                15 | 19 => vlen * 12,        // DATASEC, ENUM64
                2 | 7..=12 | 16 | 18 => 0,   // PTR, FWD, TYPEDEF, modifiers, FUNC, FLOAT, TYPE_TAG
                other => return Err(BtfError::BadType(id, other)),
            };
            let mut members = Vec::new();
            if kind == STRUCT || kind == UNION {
                let kind_flag = info >> 31 == 1;
                for m in 0..vlen {
                    let base = at + m * 12;
                    let read = |k: usize| {
                        u32_at(type_sec, base + 4 * k).ok_or(BtfError::BadType(id, kind))
                    };
                    let offset = read(2)?;
                    // With kind_flag, the top 8 bits are a bitfield's size.
                    let bits = if kind_flag {
                        offset & 0x00ff_ffff
                    } else {
                        offset
                    };
                    members.push((read(0)?, read(1)?, bits));
                }
            }
            at += extra;
            types.push(Type {
                kind,
                name_off,
                size_or_type,
                members,
            });
        }
        let mut btf = Btf {
            strings,
            types,
            structs: HashMap::new(),
        };
        for (i, t) in btf.types.iter().enumerate() {
            if t.kind == STRUCT && t.name_off != 0 {
                // The first definition wins (modules' BTF is not read here).
                btf.structs
                    .entry(string_at(btf.strings, t.name_off))
                    .or_insert(i as u32 + 1);
            }
        }
        Ok(btf)
    }

    /// Byte offset of field `field` in `struct name`.
    pub fn field_offset(&self, name: &str, field: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.into()))?;
        self.find(id, field)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoField(name.into(), field.into()))
    }

    /// Bit offset of `field` within type `id`, looking into anonymous members.
    fn find(&self, id: u32, field: &str) -> Option<u32> {
        let t = self.types.get(id.checked_sub(1)? as usize)?;
        for &(name_off, ty, bits) in &t.members {
            if name_off == 0 {
                if let Some(inner) = self.find(self.skip_modifiers(ty), field) {
                    return Some(bits + inner);
                }
            } else if string_at(self.strings, name_off) == field {
                return Some(bits);
            }
        }
        None
    }

    /// The type behind typedefs and const/volatile/restrict/type tags.
    fn skip_modifiers(&self, mut id: u32) -> u32 {
        // Bounded: a malformed chain must not loop for ever.
        for _ in 0..16 {
            match id.checked_sub(1).and_then(|i| self.types.get(i as usize)) {
                Some(t) if matches!(t.kind, 8..=11 | 18) => id = t.size_or_type,
                _ => break,
            }
        }
        id
    }
}

fn string_at(strings: &[u8], off: u32) -> &str {
    let rest = strings.get(off as usize..).unwrap_or_default();
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob: struct s { int a; union { int b; int c; }; int d; }.
    fn blob() -> Vec<u8> {
        let strings = b"\0s\0a\0b\0c\0d\0int\0".to_vec();
        let (s, a, b, c, d, int) = (1u32, 3, 5, 7, 9, 11);
        let mut types = Vec::new();
        let mut put = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int (INT, size 4, 32 bits)
        put(&[int, 1 << 24, 4, 32]);
        // 2: anonymous union { b at 0, c at 0 }
        put(&[0, (UNION << 24) | 2, 4, b, 1, 0, c, 1, 0]);
        // 3: struct s { a at 0, <anon> at 32, d at 64 } with kind_flag set (bitfield form)
        put(&[
            s,
            (1 << 31) | (STRUCT << 24) | 3,
            12,
            a,
            1,
            0,
            0,
            2,
            32,
            d,
            1,
            64,
        ]);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]); // version, flags
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&types);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn fields_are_found_directly_and_inside_anonymous_members() {
        let data = blob();
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.field_offset("s", "a"), Ok(0));
        assert_eq!(btf.field_offset("s", "c"), Ok(4));
        assert_eq!(btf.field_offset("s", "d"), Ok(8));
        assert_eq!(
            btf.field_offset("s", "e"),
            Err(BtfError::NoField("s".into(), "e".into()))
        );
        assert_eq!(
            btf.field_offset("t", "a"),
            Err(BtfError::NoStruct("t".into()))
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(Btf::parse(b"hello").err(), Some(BtfError::BadHeader));
    }

    #[test]
    fn the_running_kernel_describes_task_struct() {
        // World-readable; present on every kernel we support (BTF is required).
        let Ok(data) = std::fs::read(VMLINUX) else {
            panic!("{VMLINUX} is missing: this kernel has no BTF");
        };
        let btf = Btf::parse(&data).unwrap();
        let pid = btf.field_offset("task_struct", "pid").unwrap();
        let tgid = btf.field_offset("task_struct", "tgid").unwrap();
        assert_eq!(tgid, pid + 4, "pid_t pid; pid_t tgid; are neighbours");
    }
}
