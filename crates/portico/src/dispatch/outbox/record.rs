//! The record format of the outbox's log.
//!
//! A record is `len: u32 | crc32: u32 | seq: u64 | accepted_ms: u64 | payload`, little endian,
//! where the CRC-32 covers `seq`, `accepted_ms` and the payload (the CloudEvent in the JSON
//! event format). A torn write fails its CRC. Within a segment sequence numbers only grow,
//! from the one in its name: a record with an older number is a leftover of the segment's
//! previous life, and ends the segment.

/// Bytes of a record's header.
pub(super) const HEADER: usize = 24;

/// The header of the record of `payload`.
pub(super) fn header(seq: u64, accepted_ms: u64, payload: &[u8]) -> [u8; HEADER] {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(&accepted_ms.to_le_bytes());
    crc.update(payload);
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..24].copy_from_slice(&accepted_ms.to_le_bytes());
    h
}

/// A record's header and payload found at `at`, or `None` at a torn or corrupt record.
pub(super) fn decode_at(buf: &[u8], at: usize) -> Option<Found<'_>> {
    let header = buf.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let ms = u64::from_le_bytes(header[16..24].try_into().ok()?);
    let payload = buf.get(at + HEADER..at + HEADER + len)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&header[8..24]);
    h.update(payload);
    (h.finalize() == crc).then_some((seq, ms, payload))
}

/// A record found in a segment: sequence number, acceptance time (ms), payload.
pub(super) type Found<'a> = (u64, u64, &'a [u8]);

/// Every valid record of the bytes of the segment that starts at sequence number `first`, and
/// the length of the valid prefix. Numbers only grow within a segment (a failed write may
/// leave gaps): a record numbered lower than `first` or than its predecessor is a leftover of
/// the file's previous life as another segment.
pub(super) fn scan(buf: &[u8], first: u64) -> (Vec<Found<'_>>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    let mut least = first;
    while at < buf.len() {
        match decode_at(buf, at) {
            Some((seq, ms, payload)) if seq >= least => {
                at += HEADER + payload.len();
                least = seq + 1;
                out.push((seq, ms, payload));
            }
            _ => break,
        }
    }
    (out, at)
}
