//! The framing of mqwatch's append-only logs (the checkpoint log, the alert journal): after a
//! 6-byte header naming the log, records of key length, value length, CRC-32 of key and value,
//! key, value. A record torn by a crash mid-write, or damaged since, fails its lengths or its
//! checksum, and reading stops there: the records before it stand.

use std::io::Write;

/// The header of the checkpoint log.
pub const LOG_MAGIC: &[u8; 6] = b"MQWL\x01\x00";
/// The header of the alert journal.
pub const JOURNAL_MAGIC: &[u8; 6] = b"MQWJ\x01\x00";
/// Bounds on one record's parts: anything larger is damage, not data.
const MAX_KEY: u32 = 1 << 16;
const MAX_VALUE: u32 = 1 << 28;

/// Bytes of a frame's header and key (plus `value` bytes): where its value starts.
pub fn frame_len(key: usize, value: usize) -> u64 {
    (12 + key + value) as u64
}

/// Writes one record; returns its length in the log.
pub fn write_frame(out: &mut impl Write, key: &[u8], value: &[u8]) -> std::io::Result<u64> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(key);
    crc.update(value);
    out.write_all(&(key.len() as u32).to_le_bytes())?;
    out.write_all(&(value.len() as u32).to_le_bytes())?;
    out.write_all(&crc.finalize().to_le_bytes())?;
    out.write_all(key)?;
    out.write_all(value)?;
    Ok(frame_len(key.len(), value.len()))
}

/// Reads a log's whole records after its header, in order: `each(key, value, value's offset)`.
/// Returns where the last whole record ends (anything after it is torn or damaged).
pub fn scan(bytes: &[u8], mut each: impl FnMut(&[u8], &[u8], u64)) -> u64 {
    let mut at = LOG_MAGIC.len();
    while let Some(head) = bytes.get(at..at + 12) {
        let word = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
        let (k, v, crc) = (word(0), word(4), word(8));
        if k > MAX_KEY || v > MAX_VALUE {
            break;
        }
        let start = at + 12;
        let Some(body) = bytes.get(start..start + k as usize + v as usize) else {
            break;
        };
        if crc32fast::hash(body) != crc {
            break;
        }
        let (key, value) = body.split_at(k as usize);
        each(key, value, (start + k as usize) as u64);
        at = start + body.len();
    }
    at as u64
}
