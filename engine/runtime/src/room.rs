//! Zero-filled room ahead of the journal's writes, made on a thread of its own.
//!
//! A write that grows a file makes its `fdatasync` write the inode too (the size changed), a
//! second write and device round trip on every answer's path. A write into room that already
//! holds zeros on disk changes no size, and its sync writes the data alone. Measured here (ext4
//! on a virtual disk, a 14–40 KB write then `fdatasync`, in a loop): appending, 170–233 µs and
//! 79–95 µs of CPU a sync; into zero-filled room, 95–117 µs and 43–45 µs. Through a shard with
//! 64 requests in flight (`engine-load --only journal`, same sitting), 0.12–0.14 → 0.16–0.20 M
//! acked requests a second, and an ack p50 of 424–495 → 276–349 µs (p99 1.1 → 1.2–1.5 ms,
//! under its 2 ms aim: the helper's syncs share the disk).
//!
//! Zero-filling on the write path would cost the group that needs the room the whole fill (a
//! 4 MiB fill and its sync took 3.3 ms, a slow answer every few thousand). So a helper thread
//! keeps [`AHEAD`] bytes filled past the writer's end, [`PART`] at a time, each part synced on
//! its own, as the snapshot writer paces its writes (see `crate::disk`). PostgreSQL zero-fills
//! its WAL segments for the same reason (`wal_init_zero`).
//!
//! What keeps it safe: the helper writes only zeros, and only into a region it claimed, under
//! the lock, at or past the filled end; the writer's data never goes into a claimed region
//! (a write that reaches past the filled end waits for a claim in flight, then moves the
//! filled end past itself). Zeros left after the last record (a crash, a stop) read as the
//! journal's clean end (see `journal::scan_records`), and the writer cuts them when it opens
//! the segment again. Room has a cost under a power cut: the file's size no longer marks what
//! a sync finished, and a write cut short may leave a sector of zeros with written sectors
//! after it. Recovery tells that apart from damage by the sector of zeros (`journal.rs`) and
//! cuts the write there. If filling fails (a full disk), the helper stops for that segment and
//! the writer appends as it always could: room is only ever a speed-up.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};

/// Bytes zero-filled past the writer's end at most: at a few hundred thousand acknowledged
/// leases a second (~230 bytes each), a tenth of a second of journal. A segment gets as much
/// room as it holds data, from one [`PART`] up to this: a quiet store (and each of the many a
/// test run makes) fills one part, a busy one the whole of it.
pub(crate) const AHEAD: u64 = 8 << 20;

/// What the helper fills and syncs in one step: what a journal sync may find queued ahead of
/// it (the same pacing as `crate::disk`).
pub(crate) const PART: u64 = 1 << 20;

static ZEROS: [u8; PART as usize] = [0; PART as usize];

/// The room wanted past `written` bytes of data.
fn ahead(written: u64) -> u64 {
    written.clamp(PART, AHEAD)
}

/// The room of the journal's current segment, and the helper that fills it.
pub(crate) struct Room {
    shared: Arc<Shared>,
    helper: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    /// The segment written now.
    file: Arc<File>,
    /// Where the writer's data ends.
    written: u64,
    /// Everything before this is the writer's data or zeros the helper wrote and synced.
    filled: u64,
    /// Whether the helper is writing `[filled, filled + PART)` now, outside the lock. Nothing
    /// else moves `filled` or the file meanwhile: the writer waits if it would.
    filling: bool,
    /// A fill of this segment failed: no more tries until the next one.
    failed: bool,
    stop: bool,
}

impl Room {
    /// Starts filling past `len`, the end of the data in `file`.
    pub(crate) fn start(file: Arc<File>, len: u64) -> std::io::Result<Room> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                file,
                written: len,
                filled: len,
                filling: false,
                failed: false,
                stop: false,
            }),
            changed: Condvar::new(),
        });
        let helper = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("ipsx-journal-room".into())
                .spawn(move || fill(&shared))?
        };
        Ok(Room {
            shared,
            helper: Some(helper),
        })
    }

    /// Call before writing data up to `end` of the current segment: once it returns, no fill
    /// is writing anywhere the data goes.
    pub(crate) fn before_write(&self, end: u64) {
        let mut state = self.wait_for_claims(|state| end > state.filled);
        if end > state.filled {
            // The writer outran the helper: the data grows the file itself, and filling goes
            // on past it.
            state.filled = end;
        }
        state.written = end;
        if state.filled + PART <= end + ahead(end) {
            self.shared.changed.notify_all();
        }
    }

    /// Moves to a new segment whose data starts empty; returns once no fill is writing to
    /// the old one, which the caller may then cut to its data.
    pub(crate) fn switch_to(&self, file: Arc<File>) {
        let mut state = self.wait_for_claims(|_| true);
        state.file = file;
        state.written = 0;
        state.filled = 0;
        state.failed = false;
        self.shared.changed.notify_all();
    }

    /// The state, locked, once no fill is in flight if `blocks` says one would be in the way.
    fn wait_for_claims(&self, blocks: impl Fn(&State) -> bool) -> MutexGuard<'_, State> {
        let state = lock(&self.shared);
        self.shared
            .changed
            .wait_while(state, |state| state.filling && blocks(state))
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        lock(&self.shared).stop = true;
        self.shared.changed.notify_all();
        if let Some(helper) = self.helper.take() {
            let _ = helper.join();
        }
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // The lock guards plain numbers: a panic elsewhere leaves them consistent.
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The helper: fills a part at a time while the room is short, and sleeps otherwise.
fn fill(shared: &Shared) {
    let mut state = lock(shared);
    loop {
        if state.stop {
            return;
        }
        let short = state.filled < state.written + ahead(state.written);
        if !short || state.failed || state.filling {
            state = shared
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            continue;
        }
        let (from, file) = (state.filled, state.file.clone());
        state.filling = true;
        drop(state);
        let filled = file
            .write_all_at(&ZEROS, from)
            .and_then(|()| file.sync_data());
        state = lock(shared);
        state.filling = false;
        match filled {
            Ok(()) => state.filled += PART,
            Err(error) => {
                tracing::warn!(%error, "could not zero-fill journal room; appending instead");
                state.failed = true;
            }
        }
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Polls `done` until it holds, or fails after a generous deadline.
    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 30 s");
            thread::yield_now();
        }
    }

    fn len(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).expect("metadata").len()
    }

    /// An empty segment named `name` in `dir`, and room started on it.
    fn segment(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, Arc<File>, Room) {
        let path = dir.join(name);
        let file = Arc::new(File::create(&path).expect("create"));
        let room = Room::start(file.clone(), 0).expect("start");
        (path, file, room)
    }

    #[test]
    fn room_is_filled_ahead_of_the_data_and_never_over_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (path, file, room) = segment(dir.path(), "segment");
        eventually("a part filled before any write", || len(&path) >= PART);

        // Data written while the helper fills: every byte of it stays, and all past it is zero.
        let mut written = 0u64;
        for round in 0..64u8 {
            let data = vec![round | 1; 300_000];
            room.before_write(written + data.len() as u64);
            file.write_all_at(&data, written).expect("write");
            written += data.len() as u64;
        }
        eventually("room made past the data", || len(&path) >= written + AHEAD);
        assert!(written > AHEAD, "enough data for the whole room");
        drop(room);
        let bytes = std::fs::read(&path).expect("read");
        for (round, chunk) in bytes[..written as usize].chunks(300_000).enumerate() {
            assert!(chunk.iter().all(|b| *b == round as u8 | 1), "round {round}");
        }
        assert!(bytes[written as usize..].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_switch_leaves_the_old_segment_to_its_owner_and_fills_the_new_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (old_path, old, room) = segment(dir.path(), "old");
        let new_path = dir.path().join("new");
        room.before_write(1000);
        old.write_all_at(&[7; 1000], 0).expect("write");
        let new = Arc::new(File::create(&new_path).expect("create"));
        room.switch_to(new);
        // Once switched, the old segment is the caller's: cut to its data, it stays so.
        old.set_len(1000).expect("cut");
        eventually("the new segment filled", || len(&new_path) >= PART);
        drop(room);
        assert_eq!(len(&old_path), 1000);
    }

    #[test]
    fn a_writer_past_the_room_grows_the_file_and_filling_goes_on_after_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (path, file, room) = segment(dir.path(), "segment");
        // Far past anything filled: the data makes its own room.
        let end = 3 * AHEAD;
        room.before_write(end);
        file.write_all_at(&[9; 4096], end - 4096).expect("write");
        eventually("room made past the far write", || len(&path) >= end + AHEAD);
        drop(room);
        let bytes = std::fs::read(&path).expect("read");
        assert!(
            bytes[(end - 4096) as usize..end as usize]
                .iter()
                .all(|b| *b == 9)
        );
        assert!(bytes[end as usize..].iter().all(|b| *b == 0));
    }
}
