//! The record format of the outbox's log, and reading a segment back whatever damage it took.
//!
//! A record is `magic: [u8; 4] | len: u32 | crc32: u32 | seq: u64 | accepted_ms: u64 |
//! payload`, little endian, where the CRC-32 covers `len`, `seq`, `accepted_ms` and the payload
//! (the CloudEvent in the JSON event format). Within a segment sequence numbers only grow,
//! from the one in its name.
//!
//! A reader that meets a record it cannot take (a torn write, a flipped bit, a bad length)
//! looks for the next magic after it whose record is whole and numbered after the last good
//! one, and goes on from there: only the damaged records are lost, and the gap in the numbers
//! says exactly how many. A whole record numbered lower than its predecessor is a leftover of
//! the file's previous life as another segment (segments are reused): it ends the segment.
//!
//! Segments written before the magic existed (`len | crc32 | seq | accepted_ms | payload`, the
//! CRC over all but `len`) are still read, without resynchronisation.

/// The first bytes of every record.
pub(super) const MAGIC: [u8; 4] = [b'P', b'O', b'R', 0xC7];

/// Bytes of a record's header.
pub(super) const HEADER: usize = 28;

/// Bytes of a record's header in the format without magic.
const HEADER_V1: usize = 24;

/// The header of the record of `payload`.
pub(super) fn header(seq: u64, accepted_ms: u64, payload: &[u8]) -> [u8; HEADER] {
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(&seq.to_le_bytes());
    crc.update(&accepted_ms.to_le_bytes());
    crc.update(payload);
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&len);
    h[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
    h[12..20].copy_from_slice(&seq.to_le_bytes());
    h[20..28].copy_from_slice(&accepted_ms.to_le_bytes());
    h
}

/// A record found in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found<'a> {
    /// Its sequence number.
    pub(super) seq: u64,
    /// When it was accepted (ms since the Unix epoch).
    pub(super) accepted_ms: u64,
    /// The CloudEvent, in the JSON event format.
    pub(super) payload: &'a [u8],
}

/// A stretch of a segment that holds no record that can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Damage {
    /// Its first byte.
    pub(super) start: usize,
    /// One past its last byte.
    pub(super) end: usize,
    /// How many records it lost, when a good record follows it (the gap in the numbers);
    /// `None` at the end of the segment, where nothing follows to count against.
    pub(super) lost: Option<u64>,
}

/// What a segment holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Scan<'a> {
    /// Every good record, in order.
    pub(super) records: Vec<Found<'a>>,
    /// Every damaged stretch, in order.
    pub(super) damage: Vec<Damage>,
    /// Where the segment's own bytes end: past the last good record or damaged stretch; what
    /// follows is a leftover of the file's previous life.
    pub(super) end: usize,
}

/// The record at `at`, if one starts there whole and sound.
fn decode_at(buf: &[u8], at: usize) -> Option<(Found<'_>, usize)> {
    if buf.get(at..at.checked_add(MAGIC.len())?)? != MAGIC {
        return None;
    }
    decode_fields(buf, at + MAGIC.len(), true)
}

/// The record whose `len | crc | seq | accepted_ms` start at `fields`, its payload right after,
/// if it is whole and its CRC holds; `crc_over_len`: the CRC covers `len` too (the format with
/// magic does, the one before it does not).
fn decode_fields(buf: &[u8], fields: usize, crc_over_len: bool) -> Option<(Found<'_>, usize)> {
    let h = buf.get(fields..fields.checked_add(HEADER_V1)?)?;
    let len = u32::from_le_bytes(h[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(h[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(h[8..16].try_into().ok()?);
    let accepted_ms = u64::from_le_bytes(h[16..24].try_into().ok()?);
    let start = fields + HEADER_V1;
    let end = start.checked_add(len)?;
    let payload = buf.get(start..end)?;
    let mut c = crc32fast::Hasher::new();
    if crc_over_len {
        c.update(&h[0..4]);
    }
    c.update(&h[8..24]);
    c.update(payload);
    (c.finalize() == crc).then_some((
        Found {
            seq,
            accepted_ms,
            payload,
        },
        end,
    ))
}

/// The next sound record at or after `from` numbered at least `least`, and where it starts.
fn resync(buf: &[u8], from: usize, least: u64) -> Option<(usize, Found<'_>, usize)> {
    let mut at = from;
    while let Some(i) = buf.get(at..)?.windows(MAGIC.len()).position(|w| w == MAGIC) {
        let start = at + i;
        if let Some((found, end)) = decode_at(buf, start)
            && found.seq >= least
        {
            return Some((start, found, end));
        }
        at = start + 1;
    }
    None
}

/// Every good record of the bytes of the segment whose first record is `first`, every damaged
/// stretch, and where the segment's own bytes end (see the module docs).
pub(super) fn scan(buf: &[u8], first: u64) -> Scan<'_> {
    if !buf.is_empty() && !buf.starts_with(&MAGIC) && decode_v1(buf, 0).is_some() {
        return scan_v1(buf, first);
    }
    let mut out = Scan::default();
    let mut at = 0;
    let mut least = first;
    while at < buf.len() {
        match decode_at(buf, at) {
            Some((found, end)) if found.seq >= least => {
                least = found.seq + 1;
                out.records.push(found);
                at = end;
            }
            // A whole record from before the file was reused: the segment ends here.
            Some(_) => break,
            None => match resync(buf, at + 1, least) {
                Some((start, found, end)) => {
                    out.damage.push(Damage {
                        start: at,
                        end: start,
                        lost: Some(found.seq - least),
                    });
                    least = found.seq + 1;
                    out.records.push(found);
                    at = end;
                }
                None => {
                    // Nothing good follows: a torn append, damage at the end, or bytes of
                    // the file's previous life that no longer parse.
                    let end = leftover_start(buf, at + 1, least).unwrap_or(buf.len());
                    out.damage.push(Damage {
                        start: at,
                        end,
                        lost: None,
                    });
                    at = end;
                    break;
                }
            },
        }
    }
    out.end = at;
    out
}

/// Where, after `from`, a whole record of the file's previous life starts (numbered below
/// `least`), if one does.
fn leftover_start(buf: &[u8], from: usize, least: u64) -> Option<usize> {
    let mut at = from;
    while let Some(i) = buf.get(at..)?.windows(MAGIC.len()).position(|w| w == MAGIC) {
        let start = at + i;
        if decode_at(buf, start).is_some_and(|(found, _)| found.seq < least) {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

/// A record in the format without magic at `at`, if one is there whole and sound.
fn decode_v1(buf: &[u8], at: usize) -> Option<(Found<'_>, usize)> {
    decode_fields(buf, at, false)
}

/// [`scan`] of a segment written before the magic: its records up to the first that cannot be
/// read, which ends it.
fn scan_v1(buf: &[u8], first: u64) -> Scan<'_> {
    let mut out = Scan::default();
    let mut at = 0;
    let mut least = first;
    while let Some((found, end)) = decode_v1(buf, at).filter(|(f, _)| f.seq >= least) {
        least = found.seq + 1;
        out.records.push(found);
        at = end;
    }
    if at < buf.len() && decode_v1(buf, at).is_none() {
        out.damage.push(Damage {
            start: at,
            end: buf.len(),
            lost: None,
        });
        at = buf.len();
    }
    out.end = at;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(seqs: impl IntoIterator<Item = u64>) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut buf = Vec::new();
        let mut spans = Vec::new();
        for seq in seqs {
            let payload = format!("{{\"n\":{seq}}}");
            let start = buf.len();
            buf.extend_from_slice(&header(seq, 7, payload.as_bytes()));
            buf.extend_from_slice(payload.as_bytes());
            spans.push((start, buf.len()));
        }
        (buf, spans)
    }

    fn seqs(s: &Scan<'_>) -> Vec<u64> {
        s.records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn a_damaged_record_costs_itself_only() {
        let (mut buf, spans) = log(1..=5);
        buf[spans[1].0 + HEADER + 2] ^= 0x40;
        let s = scan(&buf, 1);
        assert_eq!(seqs(&s), [1, 3, 4, 5]);
        assert_eq!(
            s.damage,
            [Damage {
                start: spans[1].0,
                end: spans[2].0,
                lost: Some(1)
            }]
        );
        assert_eq!(s.end, buf.len());
    }

    #[test]
    fn a_bad_length_and_a_torn_tail() {
        let (mut buf, spans) = log(1..=4);
        buf[spans[0].0 + 5] = 0xff; // record 1's length
        buf.truncate(spans[3].1 - 3); // record 4 torn
        let s = scan(&buf, 1);
        assert_eq!(seqs(&s), [2, 3]);
        assert_eq!(s.damage.len(), 2);
        assert_eq!(s.damage[0].lost, Some(1));
        assert_eq!((s.damage[1].start, s.damage[1].lost), (spans[3].0, None));
    }

    #[test]
    fn older_records_after_the_last_one_end_the_segment() {
        let (old, _) = log(1..=6);
        let (new, _) = log(21..=23);
        let mut buf = new.clone();
        buf.extend_from_slice(&old[new.len()..]);
        let s = scan(&buf, 21);
        assert_eq!(seqs(&s), [21, 22, 23]);
        // The bytes right after are the tail of an old record: damage up to the next old one.
        assert!(s.damage.iter().all(|d| d.lost.is_none()));
        let mut whole = new.clone();
        whole.extend_from_slice(&old);
        let s = scan(&whole, 21);
        assert_eq!(seqs(&s), [21, 22, 23]);
        assert!(s.damage.is_empty());
        assert_eq!(s.end, new.len());
    }
}
