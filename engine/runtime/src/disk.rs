//! Big writes and deletes that leave the disk to the journal.
//!
//! The journal's `fdatasync` is on every answer's path, and it shares the disk with the
//! snapshot thread, which writes files of hundreds of megabytes and deletes the ones they
//! replace. Done in one go, either stalls the journal's sync behind it:
//!
//! - a file written whole and synced once reaches the disk in one burst, and a journal sync
//!   issued meanwhile waits for the burst (the sync's cache flush covers every write queued
//!   before it, and on ext4 its commit may have to write the new file's blocks first);
//! - deleting a big file frees all its blocks in one journal commit, and with the `discard`
//!   mount option the disk is sent one discard for all of them, which the next sync waits on.
//!
//! Measured here (ext4 with `discard` on a virtual disk; a 4 KiB write + `fdatasync` loop,
//! beside a 480 MB file): writing it whole took the loop's slowest sync from 1 ms to 111 ms,
//! and deleting it, to 46–58 ms. Written in synced parts of 1 MiB, the slowest was 3.6 ms;
//! deleted by truncating 8 MiB at a time, each step synced, 6.9 ms. Through a shard with a
//! snapshot every 500,000 commands, the slowest acknowledgement went from 203–225 ms to
//! 15–43 ms (`engine-load --only journal`). RocksDB paces its files the same way
//! (`bytes_per_sync`, and the delete scheduler's `bytes_max_delete_chunk`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::StoreError;
use crate::journal::sync_dir;

/// What is written between two syncs: what a journal sync may find ahead of it.
const WRITE_PART: usize = 1 << 20;

/// What one truncation step frees: what one discard covers.
const REMOVE_PART: u64 = 8 << 20;

/// The suffix a file takes while it is being removed: no listing of the store matches it, so
/// the file has left the store before its blocks start to go.
const REMOVING: &str = "removing";

/// Writes `bytes` at `file`'s position, syncing its data after every [`WRITE_PART`] bytes.
pub(crate) fn write_in_synced_parts(file: &mut File, bytes: &[u8]) -> io::Result<()> {
    for part in bytes.chunks(WRITE_PART) {
        file.write_all(part)?;
        file.sync_data()?;
    }
    Ok(())
}

/// Removes `path` (a file in `dir`) a part at a time: renamed out of the store's names first
/// (and the rename made durable, so a crash cannot bring back a half-truncated file under its
/// old name), then truncated from the end [`REMOVE_PART`] bytes a step, each step synced, then
/// unlinked.
pub(crate) fn remove_in_parts(dir: &Path, path: &Path) -> Result<(), StoreError> {
    let removing = removing_name(path);
    fs::rename(path, &removing).map_err(|e| StoreError::io(path, e))?;
    sync_dir(dir)?;
    truncate_and_unlink(&removing)
}

/// Finishes removals a crash interrupted (files still under the removing suffix).
pub(crate) fn finish_removals(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let path = entry.map_err(|e| StoreError::io(dir, e))?.path();
        if path
            .extension()
            .is_some_and(|extension| extension == REMOVING)
        {
            truncate_and_unlink(&path)?;
        }
    }
    Ok(())
}

fn removing_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(REMOVING);
    PathBuf::from(name)
}

fn truncate_and_unlink(path: &Path) -> Result<(), StoreError> {
    let io = |e| StoreError::io(path, e);
    let file = OpenOptions::new().write(true).open(path).map_err(io)?;
    let mut len = file.metadata().map_err(io)?.len();
    while len > 0 {
        len = len.saturating_sub(REMOVE_PART);
        file.set_len(len).map_err(io)?;
        file.sync_data().map_err(io)?;
    }
    drop(file);
    fs::remove_file(path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("listing")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8")
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_write_in_parts_writes_every_byte_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("file");
        // Parts, a remainder, and what was written before.
        let bytes: Vec<u8> = (0..WRITE_PART * 2 + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut file = File::create(&path).expect("create");
        file.write_all(b"head").expect("head");
        write_in_synced_parts(&mut file, &bytes).expect("write");
        drop(file);
        let written = fs::read(&path).expect("read");
        assert_eq!(&written[..4], b"head");
        assert_eq!(&written[4..], &bytes[..]);
    }

    #[test]
    fn a_file_removed_in_parts_is_gone_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal-00000000000000000001.log");
        fs::write(&path, vec![7u8; (REMOVE_PART * 2 + 100) as usize]).expect("write");
        fs::write(dir.path().join("kept.log"), b"kept").expect("write");
        remove_in_parts(dir.path(), &path).expect("remove");
        assert_eq!(names(dir.path()), vec!["kept.log".to_string()]);
    }

    #[test]
    fn a_removal_cut_short_by_a_crash_is_finished_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        // What a crash between the rename and the unlink leaves: a part-truncated file under
        // the removing suffix, which no listing of the store takes for a journal or snapshot.
        let left = removing_name(&dir.path().join("snapshot-00000000000000000009.bin"));
        fs::write(&left, vec![1u8; 1000]).expect("write");
        fs::write(dir.path().join("snapshot-00000000000000000012.bin"), b"x").expect("write");
        assert_eq!(
            crate::snapshot_file::list(dir.path()).expect("list").len(),
            1,
            "the file being removed is not a snapshot any more"
        );
        finish_removals(dir.path()).expect("finish");
        assert_eq!(
            names(dir.path()),
            vec!["snapshot-00000000000000000012.bin".to_string()]
        );
    }
}
