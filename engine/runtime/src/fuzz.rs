//! Entry point for `cargo fuzz` (the `fuzz/` folder), compiled only with `--cfg fuzzing`: the
//! journal decoder on bytes as a damaged disk might hold them.

use std::path::Path;

use ipsx_engine::{Command, Engine, EngineConfig};

use crate::error::StoreError;
use crate::journal::{SegmentScan, encode, scan_records};

/// Scans `data` as a journal segment. When the first byte is odd, every record's checksum is
/// fixed first, so the command decoder behind the checksum sees the fuzzer's bytes. Whatever
/// decodes must re-encode to the same commands and replay into an engine without a panic.
pub fn journal(data: &[u8]) {
    let Some((flag, rest)) = data.split_first() else {
        return;
    };
    let mut segment = rest.to_vec();
    if flag & 1 == 1 {
        fix_checksums(&mut segment);
    }
    let Ok((scan, decoded)) = decode(&segment) else {
        return;
    };
    assert!(scan.valid_len <= segment.len() as u64);
    let mut again = Vec::new();
    for (seq, command) in &decoded {
        encode(*seq, command, &mut again);
    }
    let (rescanned, redecoded) = decode(&again).expect("re-encoded records scan");
    assert!(!rescanned.torn_tail);
    assert_eq!(redecoded, decoded, "records survive a round trip");
    let mut engine = Engine::new(EngineConfig::default());
    let mut events = Vec::new();
    for (_, command) in &decoded {
        events.clear();
        let _ = engine.apply(command, &mut events);
    }
}

/// Every record of `segment`, with what the scan found.
fn decode(segment: &[u8]) -> Result<(SegmentScan, Vec<(u64, Command)>), StoreError> {
    let mut decoded = Vec::new();
    let scan = scan_records(
        segment,
        segment.len() as u64,
        Path::new("fuzz"),
        |seq, command| {
            decoded.push((seq, command));
            Ok(())
        },
    )?;
    Ok((scan, decoded))
}

/// Rewrites each record's checksum (and a length running past the end) in place.
fn fix_checksums(segment: &mut [u8]) {
    let mut at = 0;
    while segment.len() - at >= 16 {
        let left = segment.len() - at - 16;
        let mut len = u32::from_le_bytes(segment[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len > left {
            len = left;
            segment[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&segment[at + 8..at + 16]);
        crc.update(&segment[at + 16..at + 16 + len]);
        segment[at + 4..at + 8].copy_from_slice(&crc.finalize().to_le_bytes());
        at += 16 + len;
    }
}
