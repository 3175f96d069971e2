//! Snapshot files: the engine's canonical state at a journal position.
//!
//! `snapshot-<seq>.bin` holds a header (magic, format version, the sequence number of the last
//! command it includes, CRC-32 of the body) and the rkyv [`Snapshot`]. Files are written to a
//! temporary name, synced, renamed and the folder synced, so a crash leaves either the old set
//! or the new one, never a half file under a snapshot name. Big files are written and removed
//! a part at a time (see [`crate::disk`]), so the journal's syncs never wait on a whole one.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use std::thread;

use ipsx_engine::{Snapshot, Stock};

use crate::disk;
use crate::error::StoreError;
use crate::journal::sync_dir;

const MAGIC: &[u8; 8] = b"IPSXSNAP";
/// The layout of the snapshot body. 2: a request record keeps its rare filters boxed (see
/// `ipsx_engine::RequestRecord`). A file of another version is skipped as unreadable; with no
/// readable snapshot, recovery refuses a journal that starts after it rather than lose state.
const VERSION: u32 = 2;
const HEADER: usize = 8 + 4 + 8 + 4;

fn path_for(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("snapshot-{seq:020}.bin"))
}

/// Snapshot files in a folder, newest first, as `(seq, path)`.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let seq = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("snapshot-"))
            .and_then(|n| n.strip_suffix(".bin"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            found.push((seq, entry.path()));
        }
    }
    found.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    Ok(found)
}

/// Serialised snapshot bytes, ready to be written by [`write`].
pub struct SnapshotBytes {
    pub(crate) seq: u64,
    pub(crate) body: rkyv::util::AlignedVec,
}

impl SnapshotBytes {
    /// Serialises an engine snapshot taken after command `seq`.
    pub fn new(seq: u64, snapshot: &Snapshot) -> SnapshotBytes {
        SnapshotBytes::with_room(seq, snapshot, 0)
    }

    /// [`SnapshotBytes::new`] into a buffer with room for `bytes` from the start (see
    /// [`Snapshot::serialise_with_room`]).
    pub fn with_room(seq: u64, snapshot: &Snapshot, bytes: usize) -> SnapshotBytes {
        SnapshotBytes {
            seq,
            body: snapshot.serialise_with_room(bytes),
        }
    }
}

/// Writes a snapshot file atomically and durably; returns its path.
pub(crate) fn write(dir: &Path, bytes: &SnapshotBytes) -> Result<PathBuf, StoreError> {
    let path = path_for(dir, bytes.seq);
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary).map_err(|e| StoreError::io(&temporary, e))?;
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&bytes.seq.to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(&bytes.body).to_le_bytes());
    file.write_all(&header)
        .and_then(|()| disk::write_in_synced_parts(&mut file, &bytes.body))
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io(&temporary, e))?;
    fs::rename(&temporary, &path).map_err(|e| StoreError::io(&path, e))?;
    sync_dir(dir)?;
    Ok(path)
}

/// Reads a snapshot file, checking magic, version and checksum; with its sequence number, and
/// the empty record chunks an engine restored from it grows into
/// ([`ipsx_engine::Engine::restore_stocked`]).
pub(crate) fn read(path: &Path) -> Result<(u64, Snapshot, Stock), StoreError> {
    let io = |e| StoreError::io(path, e);
    let corrupt = |what: &str| StoreError::Corrupt(format!("{}: {what}", path.display()));
    let mut file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let mut header = [0u8; HEADER];
    if size < HEADER as u64 || file.read_exact(&mut header).is_err() || &header[0..8] != MAGIC {
        return Err(corrupt("not a snapshot file"));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(corrupt("unknown snapshot format version"));
    }
    let seq = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(header[20..24].try_into().expect("4 bytes"));
    // The body goes straight into the aligned buffer rkyv reads: a snapshot of a million deals
    // is hundreds of megabytes, and a plain read first would copy (and fault in) it twice.
    let len = usize::try_from(size - HEADER as u64).map_err(|_| corrupt("too large"))?;
    let mut body = rkyv::util::AlignedVec::<16>::with_capacity(len);
    body.resize(len, 0);
    file.read_exact(&mut body).map_err(io)?;
    if crc32fast::hash(&body) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let checked = Snapshot::check(&body).map_err(|e| corrupt(&e.to_string()))?;
    // The chunks the restored engine will fill are built on the other core while this one
    // reads the records out of the buffer: their page faults are a sixth of a restore.
    let order = checked.stock_order();
    let (snapshot, stock) = thread::scope(|scope| {
        let builder = thread::Builder::new()
            .name("ipsx-restore-stock".into())
            .spawn_scoped(scope, move || order.build());
        let snapshot = checked.read();
        let stock = match builder {
            Ok(builder) => builder
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => Stock::default(),
        };
        (snapshot, stock)
    });
    let snapshot = snapshot.map_err(|e| corrupt(&e.to_string()))?;
    Ok((seq, snapshot, stock))
}

/// Keeps the `keep` newest snapshots and returns the oldest kept sequence number.
pub(crate) fn prune(dir: &Path, keep: usize) -> Result<Option<u64>, StoreError> {
    let all = list(dir)?;
    for (_, path) in all.iter().skip(keep) {
        disk::remove_in_parts(dir, path)?;
    }
    Ok(all
        .get(keep.min(all.len()).saturating_sub(1))
        .map(|(seq, _)| *seq))
}
