//! Recovery on two cores: a helper thread reads, checks and decodes a journal segment while
//! the caller applies the records decoded before.
//!
//! Decoding (read, CRC, rkyv) costs about a tenth of applying a record, so replay in one
//! thread pays both; with the decoder ahead on the other core, it pays only for applying.
//! Records cross in batches because a channel message per record would cost about as much as
//! decoding it, and batch vectors go back to the decoder to be filled again.

use std::path::Path;
use std::thread;

use ipsx_engine::Command;

use crate::error::StoreError;
use crate::journal::{SegmentScan, scan_segment};

/// Records per batch.
const BATCH: usize = 1_024;
/// Batches the decoder may be ahead: bounds what waits in memory to a few thousand commands.
const AHEAD: usize = 4;

type Batch = Vec<(u64, Command)>;

/// [`scan_segment`] with decoding on a helper thread: `visit` sees the same records in the
/// same order on the caller's thread, and the result is the same. If `visit` fails, the
/// decoder stops at its next batch and `visit`'s error is returned.
pub(crate) fn scan_segment_ahead(
    path: &Path,
    mut visit: impl FnMut(u64, &Command) -> Result<(), StoreError>,
) -> Result<SegmentScan, StoreError> {
    let (to_applier, batches) = crossbeam_channel::bounded::<Batch>(AHEAD);
    let (to_decoder, spares) = crossbeam_channel::bounded::<Batch>(AHEAD + 1);
    thread::scope(|scope| {
        let decoder = thread::Builder::new()
            .name("ipsx-replay-decode".into())
            .spawn_scoped(scope, move || {
                let mut batch = Batch::with_capacity(BATCH);
                let scan = scan_segment(path, |seq, command| {
                    batch.push((seq, command));
                    if batch.len() == BATCH {
                        let next = spares
                            .try_recv()
                            .unwrap_or_else(|_| Batch::with_capacity(BATCH));
                        to_applier
                            .send(std::mem::replace(&mut batch, next))
                            .map_err(|_| applier_stopped())?;
                    }
                    Ok(())
                });
                if !batch.is_empty() {
                    // If the applier has stopped, its own error is the one reported.
                    let _ = to_applier.send(batch);
                }
                scan
            })
            .map_err(|e| StoreError::io(path, e))?;
        let mut applied = Ok(());
        'batches: for mut batch in &batches {
            // Visited in place: a command is a few hundred bytes, and moving each out of the
            // batch costs a copy.
            for (seq, command) in &batch {
                if let Err(error) = visit(*seq, command) {
                    applied = Err(error);
                    break 'batches;
                }
            }
            batch.clear();
            let _ = to_decoder.try_send(batch);
        }
        // A decoder still sending finds the channel closed and stops.
        drop(batches);
        let scan = match decoder.join() {
            Ok(scan) => scan,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        applied?;
        scan
    })
}

/// What the decoder stops with when the applier has gone; never reported, since the applier
/// returns its own error.
fn applier_stopped() -> StoreError {
    StoreError::Corrupt("replay stopped by an earlier error".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{GroupBuffer, encode_group};
    use ipsx_engine::{CommandKind, Timestamp};
    use std::io::Write;

    fn tick(at: u64) -> Command {
        Command {
            at: Timestamp(at),
            kind: CommandKind::Tick,
        }
    }

    /// A segment of `count` tick records numbered from 1, with `tail` bytes appended.
    fn segment(dir: &Path, count: u64, tail: &[u8]) -> std::path::PathBuf {
        let mut group = GroupBuffer::after(0);
        for at in 0..count {
            group.push(tick(at));
        }
        let mut bytes = Vec::new();
        encode_group(&group.take(Vec::new()), &mut bytes, &mut Default::default());
        bytes.extend_from_slice(tail);
        let path = dir.join("segment");
        std::fs::File::create(&path)
            .and_then(|mut file| file.write_all(&bytes))
            .expect("writing the segment");
        path
    }

    #[test]
    fn records_arrive_in_order_across_batches_and_the_scan_matches_one_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let count = (BATCH * (AHEAD + 3) + 17) as u64;
        let path = segment(dir.path(), count, &[7; 5]);
        let mut seen = Vec::new();
        let ahead = scan_segment_ahead(&path, |seq, command| {
            seen.push((seq, command.at.0));
            Ok(())
        })
        .expect("scan ahead");
        let alone = scan_segment(&path, |_, _| Ok(())).expect("scan");
        assert_eq!(
            seen,
            (1..=count).map(|seq| (seq, seq - 1)).collect::<Vec<_>>()
        );
        assert_eq!(
            (ahead.valid_len, ahead.torn_tail),
            (alone.valid_len, alone.torn_tail)
        );
        assert!(ahead.torn_tail, "the five stray bytes are a torn tail");
    }

    #[test]
    fn an_error_from_visit_stops_the_scan_and_is_the_one_returned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = segment(dir.path(), (BATCH * (AHEAD + 8)) as u64, &[]);
        let mut applied = 0;
        let outcome = scan_segment_ahead(&path, |seq, _| {
            if seq == 1_500 {
                return Err(StoreError::Gap {
                    expected: 1,
                    found: seq,
                });
            }
            applied += 1;
            Ok(())
        });
        assert!(matches!(outcome, Err(StoreError::Gap { found: 1_500, .. })));
        assert_eq!(
            applied, 1_499,
            "nothing after the failing record is applied"
        );
    }
}
