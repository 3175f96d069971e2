//! The append-only command journal.
//!
//! A journal is a folder of segment files `journal-<first seq>.log`. Each record is
//!
//! ```text
//! u32 LE payload length | u32 LE CRC-32 of (seq ‖ payload) | u64 LE seq | payload (rkyv Command)
//! ```
//!
//! Commands are gathered into a [`GroupBuffer`] by the thread that applies them, then encoded
//! and written in one `write` per group commit, followed by `fdatasync` when the [`FsyncPolicy`]
//! asks for it, by the [`JournalWriter`] on the journal's own thread. A synced policy writes into
//! zero-filled room (see `crate::room`), so zeros after the last record are the clean end. A
//! crash can leave a torn record at the tail of the last segment; recovery stops there and the
//! writer truncates it away. A power cut during a sync can also leave a sector of the last write
//! unwritten (zeros, with written sectors after it): that write was never acknowledged, and it
//! is cut where it tore. A bad record anywhere else is corruption and stops recovery with an
//! error.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipsx_engine::Command;
use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::error::StoreError;
use crate::room::Room;

/// Bytes before a record's payload.
const HEADER: usize = 16;
/// Largest payload accepted when reading; larger lengths mean a torn or corrupt header.
const MAX_PAYLOAD: usize = 64 * 1024 * 1024;
/// A new segment starts once the current one passes this size.
const SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

/// When the journal forces its writes to stable storage.
///
/// Every policy writes a group to the file (the OS page cache) before its commands are
/// acknowledged, so an acknowledged command survives the process being killed. Only `Always`
/// also survives the machine losing power.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` after every group commit, before acknowledging it.
    Always,
    /// `fdatasync` at most once per interval (a power loss may lose that much).
    Interval(Duration),
    /// Never `fdatasync`; the OS flushes when it likes.
    Never,
}

/// A journal segment on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) first_seq: u64,
    pub(crate) path: PathBuf,
}

/// The segments of a journal folder, oldest first.
pub(crate) fn segments(dir: &Path) -> Result<Vec<Segment>, StoreError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_prefix("journal-"))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push(Segment {
            first_seq: seq,
            path: entry.path(),
        });
    }
    found.sort_by_key(|s| s.first_seq);
    Ok(found)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("journal-{first_seq:020}.log"))
}

/// Reads every record of a journal folder in order, without applying them (for tools and to
/// measure decoding alone); returns how many there were. A torn tail ends the scan.
pub fn scan(dir: &Path, mut visit: impl FnMut(u64, Command)) -> Result<u64, StoreError> {
    let mut count = 0;
    for segment in segments(dir)? {
        scan_segment(&segment.path, |seq, command| {
            visit(seq, command);
            count += 1;
            Ok(())
        })?;
    }
    Ok(count)
}

/// Encodes one record (the fuzz target's way in).
#[cfg(fuzzing)]
pub(crate) fn encode(seq: u64, command: &Command, out: &mut Vec<u8>) {
    encode_with(seq, command, out, &mut AlignedVec::new());
}

/// Encodes one record, serialising through `scratch` (kept for the next record: a record
/// costs no allocation once it has grown).
fn encode_with(seq: u64, command: &Command, out: &mut Vec<u8>, scratch: &mut AlignedVec) {
    scratch.clear();
    let payload =
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(command, std::mem::take(scratch))
            .expect("serialising an owned command into memory cannot fail");
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(&payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&payload);
    *scratch = payload;
}

/// Splits whole records encoded back to back (a group commit, or what a replicated log
/// carries) into `(seq, the record's bytes with its header)`, without decoding them. A
/// truncated tail ends the iteration; the bytes come from this process, so it cannot happen
/// short of a bug, and [`decode_records`] is the checked way in for bytes from elsewhere.
pub fn split_records(group: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut rest = group;
    std::iter::from_fn(move || {
        if rest.len() < HEADER {
            return None;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let seq = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
        let (record, after) = rest.split_at_checked(HEADER + len)?;
        rest = after;
        Some((seq, record))
    })
}

/// Decodes records received from elsewhere (a replicated log): each must be whole, pass its
/// checksum and decode, or the bytes are refused as corrupt.
pub fn decode_records(
    bytes: &[u8],
    source: &str,
    visit: impl FnMut(u64, Command) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let scan = scan_records(bytes, bytes.len() as u64, Path::new(source), visit)?;
    if scan.torn_tail {
        return Err(StoreError::Corrupt(format!(
            "{source}: a record is cut short or fails its checksum at byte {}",
            scan.valid_len
        )));
    }
    Ok(())
}

/// What reading a segment found.
pub(crate) struct SegmentScan {
    /// Bytes of whole, valid records from the start.
    pub(crate) valid_len: u64,
    /// Whether something (a torn or corrupt record) follows them.
    pub(crate) torn_tail: bool,
}

/// Reads a segment's records in order, calling `visit` with each `(seq, command)`.
pub(crate) fn scan_segment(
    path: &Path,
    visit: impl FnMut(u64, Command) -> Result<(), StoreError>,
) -> Result<SegmentScan, StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let total = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
    scan_records(BufReader::with_capacity(1 << 20, file), total, path, visit)
}

/// [`scan_segment`] over any source of `total` bytes (`path` names it in errors): the whole
/// decoder, which the fuzz target drives from memory.
pub(crate) fn scan_records<R: Read>(
    mut reader: R,
    total: u64,
    path: &Path,
    mut visit: impl FnMut(u64, Command) -> Result<(), StoreError>,
) -> Result<SegmentScan, StoreError> {
    let mut offset = 0u64;
    let mut header = [0u8; HEADER];
    let mut payload = AlignedVec::<16>::new();
    loop {
        if offset == total {
            return Ok(SegmentScan {
                valid_len: offset,
                torn_tail: false,
            });
        }
        let torn = Ok(SegmentScan {
            valid_len: offset,
            torn_tail: true,
        });
        if reader.read_exact(&mut header).is_err() {
            return torn;
        }
        if header == [0; HEADER] {
            // No record has a zero header: here the writes stopped. Zeros to the end are room
            // zero-filled ahead of them (see `crate::room`): the clean end. Data after the
            // zeros is a last write that a power cut left with this part unwritten.
            return if rest_is_blank(&mut reader, path)? {
                Ok(SegmentScan {
                    valid_len: offset,
                    torn_tail: false,
                })
            } else {
                torn
            };
        }
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let end = offset + (HEADER + len) as u64;
        if len > MAX_PAYLOAD || end > total {
            // A record the crash cut short; an absurd length with data after it is damage.
            return if len > MAX_PAYLOAD && !rest_is_blank(&mut reader, path)? {
                Err(damaged(path, offset))
            } else {
                torn
            };
        }
        payload.clear();
        payload.resize(len, 0);
        if reader.read_exact(&mut payload).is_err() {
            return torn;
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[8..16]);
        hasher.update(&payload);
        if hasher.finalize() != crc {
            // A torn write is the last thing in the file, or holds a sector the disk never
            // wrote; a bad record with data after it is otherwise damage, and cutting there
            // would drop acknowledged records.
            if end == total {
                return torn;
            }
            let mut sector_rest = Vec::new();
            reader
                .by_ref()
                .take(end.next_multiple_of(SECTOR) - end)
                .read_to_end(&mut sector_rest)
                .map_err(|e| StoreError::io(path, e))?;
            return if holds_unwritten_sector(offset, &header, &payload, &sector_rest)
                || (sector_rest.iter().all(|b| *b == 0) && rest_is_blank(&mut reader, path)?)
            {
                torn
            } else {
                Err(damaged(path, offset))
            };
        }
        let command = rkyv::from_bytes::<Command, rancor::Error>(&payload).map_err(|e| {
            StoreError::Corrupt(format!(
                "{}: record {seq} passed its checksum but does not decode: {e}",
                path.display()
            ))
        })?;
        visit(seq, command)?;
        offset += (HEADER + len) as u64;
    }
}

/// The unit a disk writes whole at the least: a power cut mid-write leaves some sectors of the
/// write on disk and others as they were.
const SECTOR: u64 = 512;

/// Whether a record that fails its checksum, at `offset` with `header` and `payload` and
/// followed by `after` (the rest of the sector it ends in), spans a whole sector of zeros.
///
/// The journal writes into room that holds zeros on disk (see `crate::room`). A damaged record
/// with a whole sector of zeros in it lost that sector to a write a power cut stopped before its
/// sync, which was never acknowledged, nor anything written after it (the next write waits for
/// that sync). A flipped bit zeroes no 512 bytes: such damage still stops recovery.
fn holds_unwritten_sector(offset: u64, header: &[u8], payload: &[u8], after: &[u8]) -> bool {
    let record_end = offset + (header.len() + payload.len()) as u64;
    let known: Vec<u8> = [header, payload, after].concat();
    let first = (offset.next_multiple_of(SECTOR) - offset) as usize;
    let in_record = (record_end - offset) as usize;
    known
        .get(first..)
        .unwrap_or_default()
        .chunks_exact(SECTOR as usize)
        .enumerate()
        .take_while(|(index, _)| first + index * (SECTOR as usize) < in_record)
        .any(|(_, sector)| sector.iter().all(|b| *b == 0))
}

fn damaged(path: &Path, offset: u64) -> StoreError {
    StoreError::Corrupt(format!(
        "{}: damaged record at byte {offset} with records after it",
        path.display()
    ))
}

/// Whether everything from where `reader` stands to its end is zero (preallocated, never
/// written).
fn rest_is_blank(reader: &mut impl Read, path: &Path) -> Result<bool, StoreError> {
    let mut chunk = [0u8; 8192];
    loop {
        let read = reader
            .read(&mut chunk)
            .map_err(|e| StoreError::io(path, e))?;
        if read == 0 {
            return Ok(true);
        }
        if chunk[..read].iter().any(|b| *b != 0) {
            return Ok(false);
        }
    }
}

/// The commands of the next group commit, gathered by the thread that applies them; the group
/// then goes to the journal thread, which encodes it (`encode_group`) and writes it.
///
/// Encoding (rkyv, CRC) is a tenth of what a lease costs the applying thread, and that thread
/// is the shard's bottleneck while the journal thread mostly waits on `fdatasync`: it is the
/// journal thread's work. A command is kept as handed over, or as a copy when the caller keeps
/// it ([`GroupBuffer::append`]).
#[derive(Debug)]
pub struct GroupBuffer {
    commands: Vec<Command>,
    next_seq: u64,
}

/// A group handed over: its commands in order, the first numbered `first_seq`.
#[derive(Debug, Default)]
pub(crate) struct Group {
    pub(crate) first_seq: u64,
    pub(crate) commands: Vec<Command>,
}

impl GroupBuffer {
    /// An empty group whose first record will follow `last_seq`.
    pub fn after(last_seq: u64) -> GroupBuffer {
        GroupBuffer {
            commands: Vec::new(),
            next_seq: last_seq + 1,
        }
    }

    /// Adds a record; returns its sequence number. Nothing is durable before the group is
    /// committed.
    pub fn append(&mut self, command: &Command) -> u64 {
        self.push(command.clone())
    }

    /// [`GroupBuffer::append`] for a command the caller is done with.
    pub fn push(&mut self, command: Command) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.commands.push(command);
        seq
    }

    /// The sequence number of the last appended record.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Whether no record waits.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Hands the group over, keeping `spare` (an emptied list) for the next one.
    pub(crate) fn take(&mut self, spare: Vec<Command>) -> Group {
        let first_seq = self.next_seq - self.commands.len() as u64;
        Group {
            first_seq,
            commands: std::mem::replace(&mut self.commands, spare),
        }
    }
}

/// Encodes a group's records back to back into `out` (cleared first), serialising through
/// `scratch` (kept for the next group: a steady stream of groups allocates nothing).
pub(crate) fn encode_group(group: &Group, out: &mut Vec<u8>, scratch: &mut AlignedVec) {
    out.clear();
    for (seq, command) in (group.first_seq..).zip(&group.commands) {
        encode_with(seq, command, out, scratch);
    }
}

/// Writes groups of records to the segment files and syncs them.
pub struct JournalWriter {
    dir: PathBuf,
    file: Arc<File>,
    /// Bytes of records in the current segment (the file may be longer: zeros ahead).
    segment_len: u64,
    /// Zero-filled room ahead of the writes, when they are synced (see [`crate::room`]).
    room: Option<Room>,
    policy: FsyncPolicy,
    last_sync: Instant,
    unsynced: bool,
}

impl JournalWriter {
    /// Opens the journal for appending after `last_seq`, the last record recovery applied.
    /// `tail` is the last segment and how many of its bytes are valid; anything after them is
    /// cut off.
    pub(crate) fn open(
        dir: &Path,
        last_seq: u64,
        tail: Option<(PathBuf, u64)>,
        policy: FsyncPolicy,
    ) -> Result<JournalWriter, StoreError> {
        let (path, len) = match tail {
            Some((path, valid_len)) => (path, valid_len),
            None => (segment_path(dir, last_seq + 1), 0),
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        // Whatever follows the records goes: a torn record, or room zero-filled last time.
        file.set_len(len).map_err(|e| StoreError::io(&path, e))?;
        file.sync_all().map_err(|e| StoreError::io(&path, e))?;
        sync_dir(dir)?;
        let file = Arc::new(file);
        let room = match policy {
            // Room speeds up syncs, and there are none to speed up.
            FsyncPolicy::Never => None,
            _ => Some(Room::start(file.clone(), len).map_err(|e| StoreError::io(dir, e))?),
        };
        Ok(JournalWriter {
            dir: dir.to_path_buf(),
            file,
            segment_len: len,
            room,
            policy,
            last_sync: Instant::now(),
            unsynced: false,
        })
    }

    /// Syncs what was written as the policy says, and closes a full segment (the next is
    /// named after `next_seq`). Several groups written back to back share it.
    pub(crate) fn settle(&mut self, next_seq: u64) -> Result<(), StoreError> {
        let due = match self.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
            FsyncPolicy::Never => false,
        };
        if due && self.unsynced {
            self.file
                .sync_data()
                .map_err(|e| StoreError::io(&self.dir, e))?;
            self.last_sync = Instant::now();
            self.unsynced = false;
        }
        if self.segment_len >= SEGMENT_BYTES {
            self.rotate(next_seq)?;
        }
        Ok(())
    }

    /// Syncs the current segment and starts a new one at `next_seq` (after a snapshot, or
    /// when full).
    pub(crate) fn rotate(&mut self, next_seq: u64) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(|e| StoreError::io(&self.dir, e))?;
        let path = segment_path(&self.dir, next_seq);
        let file = Arc::new(
            OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)
                .map_err(|e| StoreError::io(&path, e))?,
        );
        sync_dir(&self.dir)?;
        let old = std::mem::replace(&mut self.file, file.clone());
        if let Some(room) = &self.room {
            room.switch_to(file);
            // The old segment ends with its records. Not synced: a crash that keeps its zeros
            // leaves a clean end all the same.
            old.set_len(self.segment_len)
                .map_err(|e| StoreError::io(&self.dir, e))?;
        }
        self.segment_len = 0;
        self.unsynced = false;
        Ok(())
    }

    /// Writes records to the current segment in one call (no sync).
    pub(crate) fn write(&mut self, group: &[u8]) -> Result<(), StoreError> {
        if !group.is_empty() {
            let end = self.segment_len + group.len() as u64;
            if let Some(room) = &self.room {
                room.before_write(end);
            }
            self.file
                .write_all_at(group, self.segment_len)
                .map_err(|e| StoreError::io(&self.dir, e))?;
            self.segment_len += group.len() as u64;
            self.unsynced = true;
        }
        Ok(())
    }
}

/// Makes a folder's entries (new, renamed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Deletes segments whose every record is at or before `seq`.
pub(crate) fn prune(dir: &Path, seq: u64) -> Result<(), StoreError> {
    let all = segments(dir)?;
    for pair in all.windows(2) {
        // A segment ends where the next begins.
        if pair[1].first_seq <= seq + 1 {
            // A part at a time: a segment is up to 256 MiB (see `crate::disk`).
            crate::disk::remove_in_parts(dir, &pair[0].path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::mixed_stream;

    #[test]
    fn a_group_is_numbered_on_from_the_last_and_decodes_to_the_commands_gathered() {
        let mut buffer = GroupBuffer::after(41);
        let first: Vec<Command> = (0..3).map(mixed_stream).collect();
        for command in &first {
            buffer.append(command);
        }
        let group = buffer.take(Vec::new());
        assert_eq!((group.first_seq, buffer.last_seq()), (42, 44));
        assert!(buffer.is_empty());
        // The next group goes on from where the first stopped.
        buffer.append(&mixed_stream(3));
        assert_eq!(buffer.take(Vec::new()).first_seq, 45);

        let (mut bytes, mut scratch) = (vec![0xAA; 7], AlignedVec::new());
        encode_group(&group, &mut bytes, &mut scratch);
        let mut decoded = Vec::new();
        decode_records(&bytes, "group", |seq, command| {
            decoded.push((seq, command));
            Ok(())
        })
        .expect("a whole group decodes");
        let expected: Vec<(u64, Command)> = (42..).zip(first).collect();
        assert_eq!(decoded, expected);
    }

    fn scan_bytes(bytes: &[u8]) -> Result<(SegmentScan, Vec<u64>), StoreError> {
        let mut seqs = Vec::new();
        let scan = scan_records(bytes, bytes.len() as u64, Path::new("segment"), |seq, _| {
            seqs.push(seq);
            Ok(())
        })?;
        Ok((scan, seqs))
    }

    #[test]
    fn zero_filled_room_after_the_records_is_a_clean_end() {
        let synced = records(1, 3);
        let mut bytes = synced.clone();
        bytes.resize(synced.len() + 3 * 4096, 0);
        let (scan, seqs) = scan_bytes(&bytes).expect("scans");
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(scan.valid_len, synced.len() as u64);
        assert!(!scan.torn_tail, "room is not a torn record");
    }

    #[test]
    fn a_record_torn_into_the_room_is_a_torn_tail() {
        let synced = records(1, 3);
        // A crash while the fourth record was written: its header and a few bytes reached the
        // disk, the room's zeros are the rest.
        let mut bytes = synced.clone();
        bytes.extend_from_slice(&synced[..HEADER + 5]);
        bytes[synced.len() + 8] = 4; // its own sequence number
        bytes.resize(synced.len() + 4096, 0);
        let (scan, seqs) = scan_bytes(&bytes).expect("scans");
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(
            (scan.valid_len, scan.torn_tail),
            (synced.len() as u64, true)
        );
    }

    /// Records `first..first + count` encoded back to back: one write of the journal.
    fn records(first: u64, count: u64) -> Vec<u8> {
        let mut buffer = GroupBuffer::after(first - 1);
        for index in first..first + count {
            buffer.push(mixed_stream(index));
        }
        let (mut bytes, mut scratch) = (Vec::new(), AlignedVec::new());
        encode_group(&buffer.take(Vec::new()), &mut bytes, &mut scratch);
        bytes
    }

    /// Where each record of `bytes` starts.
    fn starts(bytes: &[u8]) -> Vec<usize> {
        let mut at = 0;
        let mut found = Vec::new();
        while at < bytes.len() {
            found.push(at);
            at += HEADER + u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
        }
        found
    }

    #[test]
    fn a_last_write_whose_first_part_never_reached_the_disk_is_cut() {
        // A power cut during the sync of the last write: its first sector stayed as the room
        // was (zeros), later ones were written. Nothing of it was acknowledged.
        let synced = records(1, 3);
        let mut bytes = synced.clone();
        bytes.extend_from_slice(&records(4, 40));
        let first_boundary = synced.len().next_multiple_of(SECTOR as usize);
        bytes[synced.len()..first_boundary].fill(0);
        bytes.resize(bytes.len() + 4096, 0);
        let (scan, seqs) = scan_bytes(&bytes).expect("scans");
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(
            (scan.valid_len, scan.torn_tail),
            (synced.len() as u64, true)
        );
    }

    #[test]
    fn a_last_write_with_a_sector_never_written_is_cut_at_the_record_it_tore() {
        let synced = records(1, 3);
        let last = records(4, 40);
        let mut whole = synced.clone();
        whole.extend_from_slice(&last);
        let starts: Vec<usize> = starts(&last).iter().map(|s| synced.len() + s).collect();
        // Each sector inside the last write in turn stays zeros: some lose a record's header,
        // others the tail of a record that began in the sector before.
        let first = (synced.len() + 1).next_multiple_of(SECTOR as usize);
        let sectors = (first..whole.len() - SECTOR as usize).step_by(SECTOR as usize);
        assert!(sectors.len() > 10);
        for sector in sectors {
            let mut bytes = whole.clone();
            bytes[sector..sector + SECTOR as usize].fill(0);
            // The first record the lost sector changed (a record may end in zeros of its own).
            let torn_record = starts
                .iter()
                .zip(starts.iter().skip(1).chain([&whole.len()]))
                .find(|(start, end)| whole[**start..**end] != bytes[**start..**end])
                .map(|(start, _)| *start)
                .expect("a record the sector changed");
            let (scan, seqs) = scan_bytes(&bytes).expect("scans");
            let kept: Vec<u64> = (1..).take(seqs.len()).collect();
            assert_eq!(seqs, kept, "the records before the torn one, in order");
            assert_eq!(
                (scan.valid_len, scan.torn_tail),
                (torn_record as u64, true),
                "sector at {sector}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_with_records_after_it_is_damage_not_a_torn_write() {
        // Cutting there would drop the records after it, which a sync made durable.
        let mut bytes = records(1, 3);
        bytes.extend_from_slice(&records(4, 40));
        bytes[40] ^= 0x10;
        let error = scan_bytes(&bytes).err().expect("refused");
        assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
    }
}
