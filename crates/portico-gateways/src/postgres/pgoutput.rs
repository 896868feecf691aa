//! The messages of PostgreSQL's `pgoutput` logical decoding plugin, protocol version 1, as
//! `pg_logical_slot_peek_binary_changes` returns them (one message per row).
//!
//! Rules: every integer is big-endian; a string ends with a NUL byte; an LSN is 64 bits; a
//! timestamp is microseconds since 2000-01-01 00:00 UTC. [`parse`] never panics: bytes that
//! are short, too long or of an unknown kind give a [`Malformed`] naming what was read.
//! `Type` and `Origin` messages (and the logical decoding `Message`) are [`Message::Skipped`].

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// A transaction starts; its changes follow, then its [`Message::Commit`].
    Begin {
        /// The LSN of the transaction's commit record.
        final_lsn: u64,
        /// The commit time, in microseconds since 2000-01-01 UTC.
        timestamp: i64,
        /// The transaction id.
        xid: u32,
    },
    /// The transaction ends.
    Commit {
        /// The LSN of the commit record.
        commit_lsn: u64,
        /// The LSN just past the commit record: where decoding goes on after it.
        end_lsn: u64,
        /// The commit time, in microseconds since 2000-01-01 UTC.
        timestamp: i64,
    },
    /// What a relation (table) is: sent before its first change in a decoding session.
    Relation(Relation),
    /// A row was inserted.
    Insert {
        /// The relation's OID.
        relation: u32,
        /// The new row.
        new: Tuple,
    },
    /// A row was updated.
    Update {
        /// The relation's OID.
        relation: u32,
        /// The old row: its key columns (`Key`, when the key changed) or all of it (`Old`, with
        /// `REPLICA IDENTITY FULL`).
        old: Option<(OldKind, Tuple)>,
        /// The new row.
        new: Tuple,
    },
    /// A row was deleted.
    Delete {
        /// The relation's OID.
        relation: u32,
        /// The old row: its key columns, or all of it.
        old: (OldKind, Tuple),
    },
    /// Relations were truncated.
    Truncate {
        /// `CASCADE` was given.
        cascade: bool,
        /// `RESTART IDENTITY` was given.
        restart_identity: bool,
        /// The relations' OIDs.
        relations: Vec<u32>,
    },
    /// A message of no interest here (`Type`, `Origin`, a logical decoding message).
    Skipped(u8),
}

/// What the old row of an update or delete holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OldKind {
    /// The replica identity's (key) columns; the others are null.
    Key,
    /// Every column (`REPLICA IDENTITY FULL`).
    Full,
}

/// A relation as a `Relation` message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    /// Its OID.
    pub oid: u32,
    /// Its schema (namespace).
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Its columns, in order.
    pub columns: Vec<Column>,
}

/// A column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    /// Its name.
    pub name: String,
    /// The OID of its type.
    pub type_oid: u32,
    /// It is part of the replica identity (the key).
    pub key: bool,
}

/// The values of one row, in column order.
pub(crate) type Tuple = Vec<Value>;

/// One column's value in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// SQL `NULL`.
    Null,
    /// A TOASTed value that did not change (not sent).
    Unchanged,
    /// The value's text representation (its type's output function).
    Text(String),
    /// The value in its type's binary representation (only with the `binary` option).
    Binary(Vec<u8>),
}

/// Bytes that are not a `pgoutput` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed pgoutput message: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// Reads the fields of one message, front to back.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Malformed> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(Malformed(format!(
                "{what}: {n} bytes wanted at offset {}, {} left",
                self.at,
                self.bytes.len().saturating_sub(self.at)
            ))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Malformed> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &str) -> Result<i64, Malformed> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, what: &str) -> Result<String, Malformed> {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(Malformed(format!(
                "{what}: no terminating NUL after offset {}",
                self.at
            )));
        };
        let s = self.take(len, what)?;
        self.at += 1;
        String::from_utf8(s.to_vec()).map_err(|_| Malformed(format!("{what}: not UTF-8")))
    }

    fn done(&self, kind: char) -> Result<(), Malformed> {
        match self.bytes.len() - self.at.min(self.bytes.len()) {
            0 => Ok(()),
            n => Err(Malformed(format!("{kind}: {n} bytes left over"))),
        }
    }

    fn tuple(&mut self) -> Result<Tuple, Malformed> {
        let n = self.u16("tuple: column count")?;
        // Each column takes at least one byte: a count beyond what is left is malformed, and
        // checking it first keeps a bad count from reserving memory.
        if usize::from(n) > self.bytes.len().saturating_sub(self.at) {
            return Err(Malformed(format!("tuple: {n} columns in fewer bytes")));
        }
        let mut values = Vec::with_capacity(usize::from(n));
        for i in 0..n {
            let value = match self.u8("tuple: column kind")? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                kind @ (b't' | b'b') => {
                    let len = self.u32("tuple: value length")?;
                    let bytes =
                        self.take(usize::try_from(len).unwrap_or(usize::MAX), "tuple: value")?;
                    if kind == b't' {
                        Value::Text(String::from_utf8(bytes.to_vec()).map_err(|_| {
                            Malformed(format!("tuple: the text of column {i} is not UTF-8"))
                        })?)
                    } else {
                        Value::Binary(bytes.to_vec())
                    }
                }
                other => {
                    return Err(Malformed(format!(
                        "tuple: column {i} has unknown kind {other:#04x}"
                    )));
                }
            };
            values.push(value);
        }
        Ok(values)
    }

    fn old(&mut self, kind: u8) -> Result<(OldKind, Tuple), Malformed> {
        let old = match kind {
            b'K' => OldKind::Key,
            b'O' => OldKind::Full,
            other => {
                return Err(Malformed(format!(
                    "old row: kind {other:#04x}, expected K or O"
                )));
            }
        };
        Ok((old, self.tuple()?))
    }
}

/// Decodes one message.
pub(crate) fn parse(bytes: &[u8]) -> Result<Message, Malformed> {
    let mut r = Reader { bytes, at: 0 };
    let kind = r.u8("message kind")?;
    let message = match kind {
        b'B' => Message::Begin {
            final_lsn: r.u64("Begin: final LSN")?,
            timestamp: r.i64("Begin: commit time")?,
            xid: r.u32("Begin: xid")?,
        },
        b'C' => {
            let _flags = r.u8("Commit: flags")?;
            Message::Commit {
                commit_lsn: r.u64("Commit: commit LSN")?,
                end_lsn: r.u64("Commit: end LSN")?,
                timestamp: r.i64("Commit: commit time")?,
            }
        }
        b'R' => {
            let oid = r.u32("Relation: OID")?;
            let schema = r.string("Relation: schema")?;
            let name = r.string("Relation: name")?;
            let _identity = r.u8("Relation: replica identity")?;
            let n = r.u16("Relation: column count")?;
            let mut columns = Vec::with_capacity(usize::from(n).min(bytes.len()));
            for _ in 0..n {
                let flags = r.u8("Relation: column flags")?;
                let name = r.string("Relation: column name")?;
                let type_oid = r.u32("Relation: column type")?;
                let _typmod = r.u32("Relation: column type modifier")?;
                columns.push(Column {
                    name,
                    type_oid,
                    key: flags & 1 == 1,
                });
            }
            Message::Relation(Relation {
                oid,
                schema,
                name,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32("Insert: relation")?;
            match r.u8("Insert: tuple kind")? {
                b'N' => {}
                other => {
                    return Err(Malformed(format!(
                        "Insert: tuple kind {other:#04x}, expected N"
                    )));
                }
            }
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32("Update: relation")?;
            let (old, next) = match r.u8("Update: tuple kind")? {
                b'N' => (None, b'N'),
                kind => (Some(r.old(kind)?), r.u8("Update: tuple kind")?),
            };
            if next != b'N' {
                return Err(Malformed(format!(
                    "Update: tuple kind {next:#04x}, expected N"
                )));
            }
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32("Delete: relation")?;
            let kind = r.u8("Delete: tuple kind")?;
            Message::Delete {
                relation,
                old: r.old(kind)?,
            }
        }
        b'T' => {
            let n = r.u32("Truncate: relation count")?;
            let options = r.u8("Truncate: options")?;
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            let mut relations = Vec::with_capacity(n.min(bytes.len() / 4));
            for _ in 0..n {
                relations.push(r.u32("Truncate: relation")?);
            }
            Message::Truncate {
                cascade: options & 1 == 1,
                restart_identity: options & 2 == 2,
                relations,
            }
        }
        // Type, Origin, logical decoding Message: nothing to check, nothing kept.
        b'Y' | b'O' | b'M' => return Ok(Message::Skipped(kind)),
        other => {
            return Err(Malformed(format!("unknown message kind {other:#04x}")));
        }
    };
    r.done(char::from(kind))?;
    Ok(message)
}

/// An LSN as PostgreSQL writes it: `X/X`, the high and low 32 bits in upper-case hex.
pub(crate) fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Microseconds since 2000-01-01 UTC (PostgreSQL's epoch) as a time; `None` out of range.
pub(crate) fn pg_time(micros: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    const PG_EPOCH_UNIX_SECONDS: i64 = 946_684_800;
    let epoch = chrono::DateTime::from_timestamp(PG_EPOCH_UNIX_SECONDS, 0)?;
    epoch.checked_add_signed(chrono::TimeDelta::microseconds(micros))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A message as hex, the way `encode(data, 'hex')` shows it.
    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn text(s: &str) -> Value {
        Value::Text(s.to_string())
    }

    // The bytes below are what PostgreSQL 15 wrote for a table
    // `zz_probe(id int primary key, v text, b bool, j jsonb)`.

    #[test]
    fn begin_and_commit() {
        assert_eq!(
            parse(&hex("420000000001d9e200000304c5e6aba3cc000002d9")).unwrap(),
            Message::Begin {
                final_lsn: 0x1D9E200,
                timestamp: 0x0304c5e6aba3cc,
                xid: 729
            }
        );
        assert_eq!(
            parse(&hex("43000000000001d9e2000000000001d9e230000304c5e6aba3cc")).unwrap(),
            Message::Commit {
                commit_lsn: 0x1D9E200,
                end_lsn: 0x1D9E230,
                timestamp: 0x0304c5e6aba3cc
            }
        );
        assert_eq!(lsn_text(0x1D9E230), "0/1D9E230");
        assert_eq!(lsn_text(0x1_0000_00AB), "1/AB");
        let t = pg_time(0x0304c5e6aba3cc).unwrap();
        assert!(t.to_rfc3339().starts_with("202"), "{t}");
        assert_eq!(
            pg_time(0).unwrap().to_rfc3339(),
            "2000-01-01T00:00:00+00:00"
        );
        assert_eq!(pg_time(i64::MAX), None);
    }

    #[test]
    fn relation_and_row_changes() {
        let relation = hex(concat!(
            "52",
            "00004003",
            "7075626c696300",
            "7a7a5f70726f626500",
            "64",
            "0004",
            "01",
            "696400",
            "00000017",
            "ffffffff",
            "00",
            "7600",
            "00000019",
            "ffffffff",
            "00",
            "6200",
            "00000010",
            "ffffffff",
            "00",
            "6a00",
            "00000eda",
            "ffffffff",
        ));
        let Message::Relation(r) = parse(&relation).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(
            (r.oid, r.schema.as_str(), r.name.as_str()),
            (0x4003, "public", "zz_probe")
        );
        let columns: Vec<_> = r
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.type_oid, c.key))
            .collect();
        assert_eq!(
            columns,
            [
                ("id", 23, true),
                ("v", 25, false),
                ("b", 16, false),
                ("j", 3802, false)
            ]
        );

        let insert = hex(concat!(
            "49", "00004003", "4e", "0004", "74", "00000001", "31", "74", "00000001", "61", "74",
            "00000001", "74", "6e"
        ));
        assert_eq!(
            parse(&insert).unwrap(),
            Message::Insert {
                relation: 0x4003,
                new: vec![text("1"), text("a"), text("t"), Value::Null]
            }
        );
        // The key changed: the old key comes first (K), the new row after.
        let update = hex(concat!(
            "55", "00004003", "4b", "0004", "74", "00000001", "31", "6e", "6e", "6e", "4e", "0004",
            "74", "00000001", "32", "75", "6e", "6e"
        ));
        assert_eq!(
            parse(&update).unwrap(),
            Message::Update {
                relation: 0x4003,
                old: Some((
                    OldKind::Key,
                    vec![text("1"), Value::Null, Value::Null, Value::Null]
                )),
                new: vec![text("2"), Value::Unchanged, Value::Null, Value::Null]
            }
        );
        let delete = hex("44000040034f0001620000000201ff");
        assert_eq!(
            parse(&delete).unwrap(),
            Message::Delete {
                relation: 0x4003,
                old: (OldKind::Full, vec![Value::Binary(vec![1, 0xff])])
            }
        );
        assert_eq!(
            parse(&hex("5400000002030000400300004004")).unwrap(),
            Message::Truncate {
                cascade: true,
                restart_identity: true,
                relations: vec![0x4003, 0x4004]
            }
        );
        assert_eq!(parse(&hex("5900004003")).unwrap(), Message::Skipped(b'Y'));
        assert_eq!(parse(b"O\0").unwrap(), Message::Skipped(b'O'));
    }

    #[test]
    fn malformed_bytes_say_what() {
        for (bytes, says) in [
            (hex(""), "message kind"),
            (hex("5a"), "unknown message kind 0x5a"),
            (hex("4200"), "Begin: final LSN"),
            (
                hex("420000000001d9e200000304c5e6aba3cc000002d9ff"),
                "1 bytes left over",
            ),
            (hex("4900004003"), "Insert: tuple kind"),
            (hex("49000040034b0000"), "expected N"),
            (hex("49000040034e0005"), "5 columns in fewer bytes"),
            (hex("49000040034e00017400000005616263"), "tuple: value"),
            (hex("49000040034e000178"), "unknown kind 0x78"),
            (hex("49000040034e00017400000001ff"), "not UTF-8"),
            (hex("5200004003707562"), "no terminating NUL"),
            (hex("44000040034e0000"), "expected K or O"),
            (hex("5400000003000000400300004004"), "Truncate: relation"),
        ] {
            let e = parse(&bytes).unwrap_err().to_string();
            assert!(e.contains(says), "{bytes:02x?}: {e}");
        }
    }

    proptest! {
        /// Any bytes: a message or an error, never a panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes);
        }

        /// Any bytes after a known kind byte (the paths that read fields).
        #[test]
        fn random_fields_never_panic(
            kind in proptest::sample::select(b"BCRIUDTYOM".to_vec()),
            rest in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let mut bytes = vec![kind];
            bytes.extend(rest);
            let _ = parse(&bytes);
        }
    }
}
