//! The journal file against torn tails, corruption, a full quota, a full filesystem and
//! compaction, on real files.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use tether_agent::journal::{
    FRAME_HEADER_LEN, HEADER_LEN, Journal, JournalError, MAX_RECORD, frame_len,
};

const BIG: u64 = 1 << 20;

fn records(n: usize) -> Vec<Vec<u8>> {
    // Varied lengths, including the largest, and contents that differ per record.
    (0..n)
        .map(|i| {
            let len = match i % 4 {
                0 => 1,
                1 => 37,
                2 => 300,
                _ => MAX_RECORD,
            };
            (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
        })
        .collect()
}

fn write_journal(path: &Path, recs: &[Vec<u8>]) -> u64 {
    let (mut j, rec) = Journal::open(path, BIG).unwrap();
    assert!(rec.records.is_empty());
    for r in recs {
        j.append(r).unwrap();
    }
    j.sync().unwrap();
    j.len_bytes()
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    (dir, path)
}

#[test]
fn round_trip_keeps_records_in_order() {
    let (_dir, path) = tmp();
    let recs = records(9);
    let len = write_journal(&path, &recs);
    let expected: u64 = HEADER_LEN + recs.iter().map(|r| frame_len(r.len())).sum::<u64>();
    assert_eq!(len, expected);
    assert_eq!(fs::metadata(&path).unwrap().len(), expected);

    let (j, rec) = Journal::open(&path, BIG).unwrap();
    assert_eq!(rec.records, recs);
    assert_eq!(rec.truncated_bytes, 0);
    assert_eq!(j.len_bytes(), expected);
}

#[test]
fn new_journal_has_header_only_and_reopens_empty() {
    let (_dir, path) = tmp();
    let (j, rec) = Journal::open(&path, BIG).unwrap();
    assert_eq!(rec.records.len(), 0);
    assert_eq!(j.len_bytes(), HEADER_LEN);
    assert_eq!(fs::read(&path).unwrap(), b"TJNL\x01");
    drop(j);
    let (_, rec) = Journal::open(&path, BIG).unwrap();
    assert_eq!(rec.records.len(), 0);
    assert_eq!(rec.truncated_bytes, 0);
}

#[test]
fn torn_tail_at_every_offset_of_last_frame_is_cut_exactly() {
    let (_dir, path) = tmp();
    let recs = records(3); // last record: 300 bytes
    let full = write_journal(&path, &recs);
    let bytes = fs::read(&path).unwrap();
    let last_start = full - frame_len(recs[2].len());

    for cut in last_start..full {
        fs::write(&path, &bytes[..cut as usize]).unwrap();
        let (mut j, rec) = Journal::open(&path, BIG).unwrap();
        assert_eq!(rec.records, recs[..2], "cut at {cut}");
        assert_eq!(rec.truncated_bytes, cut - last_start, "cut at {cut}");
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            last_start,
            "cut at {cut}"
        );
        assert_eq!(j.len_bytes(), last_start);
        // The journal goes on from the cut.
        j.append(b"after").unwrap();
        drop(j);
        let (_, rec) = Journal::open(&path, BIG).unwrap();
        assert_eq!(rec.records.len(), 3);
        assert_eq!(rec.records[2], b"after");
    }
}

#[test]
fn flipped_bit_in_last_frame_drops_it() {
    let (_dir, path) = tmp();
    let recs = records(3);
    let full = write_journal(&path, &recs);
    let pristine = fs::read(&path).unwrap();
    let last_start = full - frame_len(recs[2].len());
    // A bit in the length, in the checksum and in the payload.
    for offset in [
        last_start,
        last_start + 5,
        last_start + FRAME_HEADER_LEN + 17,
        full - 1,
    ] {
        let mut bytes = pristine.clone();
        bytes[offset as usize] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        let (_, rec) = Journal::open(&path, BIG).unwrap();
        assert_eq!(rec.records, recs[..2], "flip at {offset}");
        assert_eq!(rec.truncated_bytes, full - last_start, "flip at {offset}");
        assert_eq!(fs::metadata(&path).unwrap().len(), last_start);
    }
}

#[test]
fn garbage_and_zeroes_after_last_frame_are_cut() {
    let (_dir, path) = tmp();
    let recs = records(5);
    let full = write_journal(&path, &recs);
    for tail in [
        b"garbage that is not a frame at all".to_vec(),
        vec![0u8; 4096],
        vec![0xff; 3],
    ] {
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&tail).unwrap();
        drop(f);
        let (_, rec) = Journal::open(&path, BIG).unwrap();
        assert_eq!(rec.records, recs);
        assert_eq!(rec.truncated_bytes, tail.len() as u64);
        assert_eq!(fs::metadata(&path).unwrap().len(), full);
    }
}

#[test]
fn wrong_magic_or_version_is_an_error_and_file_is_untouched() {
    let (_dir, path) = tmp();
    for content in [
        b"NOPE\x01rest of somebody's file".to_vec(),
        b"TJN".to_vec(),
        b"TJNL".to_vec(),
    ] {
        fs::write(&path, &content).unwrap();
        match Journal::open(&path, BIG) {
            Err(JournalError::BadMagic { .. }) => {}
            other => panic!("{content:?}: expected BadMagic, got {other:?}"),
        }
        assert_eq!(fs::read(&path).unwrap(), content);
    }
    fs::write(&path, b"TJNL\x02").unwrap();
    assert!(matches!(
        Journal::open(&path, BIG),
        Err(JournalError::UnsupportedVersion { found: 2 })
    ));
    assert_eq!(fs::read(&path).unwrap(), b"TJNL\x02");
}

#[test]
fn record_size_is_checked() {
    let (_dir, path) = tmp();
    let (mut j, _) = Journal::open(&path, BIG).unwrap();
    assert!(matches!(
        j.append(&[]),
        Err(JournalError::RecordSize { len: 0 })
    ));
    let too_big = vec![1u8; MAX_RECORD + 1];
    assert!(matches!(
        j.append(&too_big),
        Err(JournalError::RecordSize { .. })
    ));
    assert_eq!(j.len_bytes(), HEADER_LEN);
}

#[test]
fn max_bytes_gives_full_and_keeps_earlier_records() {
    let (_dir, path) = tmp();
    let rec = vec![7u8; 100];
    let max = HEADER_LEN + 3 * frame_len(rec.len()) + 50;
    let (mut j, _) = Journal::open(&path, max).unwrap();
    for _ in 0..3 {
        assert!(j.fits(rec.len()));
        j.append(&rec).unwrap();
    }
    assert!(!j.fits(rec.len()));
    assert_eq!(j.free_bytes(), 50);
    assert!(matches!(j.append(&rec), Err(JournalError::Full)));
    assert!((j.fill() - (max - 50) as f64 / max as f64).abs() < 1e-9);
    // A smaller record still fits exactly.
    let small = vec![1u8; 50 - FRAME_HEADER_LEN as usize];
    j.append(&small).unwrap();
    assert_eq!(j.len_bytes(), max);
    assert_eq!(j.free_bytes(), 0);
    assert_eq!(j.fill(), 1.0);
    assert!(matches!(j.append(b"x"), Err(JournalError::Full)));
    j.sync().unwrap();
    drop(j);

    let (j, got) = Journal::open(&path, max).unwrap();
    assert_eq!(got.records, vec![rec.clone(), rec.clone(), rec, small]);
    assert_eq!(j.len_bytes(), max);
}

#[test]
fn rewrite_replaces_contents_and_survives_reopen() {
    let (_dir, path) = tmp();
    let recs = records(8);
    write_journal(&path, &recs);
    let (mut j, got) = Journal::open(&path, BIG).unwrap();
    assert_eq!(got.records.len(), 8);

    let kept: Vec<Vec<u8>> = recs.iter().skip(5).cloned().collect();
    j.rewrite(&kept).unwrap();
    let expected = HEADER_LEN + kept.iter().map(|r| frame_len(r.len())).sum::<u64>();
    assert_eq!(j.len_bytes(), expected);
    // Appends go to the new file.
    j.append(b"after compaction").unwrap();
    j.sync().unwrap();
    drop(j);

    let dir_entries: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(dir_entries, vec![std::ffi::OsString::from("journal")]);

    let (_, got) = Journal::open(&path, BIG).unwrap();
    let mut want = kept;
    want.push(b"after compaction".to_vec());
    assert_eq!(got.records, want);
    assert_eq!(got.truncated_bytes, 0);
}

#[test]
fn rewrite_with_a_bad_record_keeps_the_old_journal() {
    let (_dir, path) = tmp();
    let recs = records(3);
    write_journal(&path, &recs);
    let (mut j, _) = Journal::open(&path, BIG).unwrap();
    let bad: Vec<&[u8]> = vec![b"fine", b""];
    assert!(matches!(
        j.rewrite(bad),
        Err(JournalError::RecordSize { len: 0 })
    ));
    j.append(b"still here").unwrap();
    drop(j);
    let (_, got) = Journal::open(&path, BIG).unwrap();
    assert_eq!(got.records.len(), 4);
    assert_eq!(got.records[..3], recs[..]);
    assert!(!path.with_file_name("journal.tmp").exists());
}

/// A tmpfs of a few KiB, mounted for one test and unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallFs { dir }),
            other => {
                eprintln!(
                    "SKIPPED: cannot mount a small tmpfs ({other:?}); ENOSPC test needs root with CAP_SYS_ADMIN"
                );
                None
            }
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn enospc_gives_full_and_leaves_no_partial_frame() {
    let Some(fs_) = SmallFs::mount("64k") else {
        return;
    };
    let path = fs_.dir.path().join("journal");
    // The quota is far above the filesystem: ENOSPC comes first.
    let (mut j, _) = Journal::open(&path, 10 * BIG).unwrap();
    let rec = vec![0x5au8; 3000];
    let mut appended = 0usize;
    let err = loop {
        match j.append(&rec) {
            Ok(()) => appended += 1,
            Err(e) => break e,
        }
        assert!(appended < 1000, "a 64k filesystem never filled");
    };
    assert!(matches!(err, JournalError::Full), "got {err:?}");
    assert!(appended > 0);
    let good = HEADER_LEN + appended as u64 * frame_len(rec.len());
    assert_eq!(j.len_bytes(), good);
    assert_eq!(fs::metadata(&path).unwrap().len(), good);
    j.sync().unwrap();

    // Still usable after the failure, and a small record may still fit.
    let small_ok = j.append(b"small").is_ok();
    drop(j);
    let (_, got) = Journal::open(&path, 10 * BIG).unwrap();
    assert_eq!(got.truncated_bytes, 0);
    assert_eq!(got.records.len(), appended + usize::from(small_ok));
    assert!(got.records[..appended].iter().all(|r| *r == rec));
}

#[test]
fn enospc_during_rewrite_keeps_the_old_journal() {
    let Some(fs_) = SmallFs::mount("64k") else {
        return;
    };
    let path = fs_.dir.path().join("journal");
    let (mut j, _) = Journal::open(&path, 10 * BIG).unwrap();
    let rec = vec![0x33u8; 4000];
    for _ in 0..9 {
        j.append(&rec).unwrap();
    }
    j.sync().unwrap();
    // A rewrite with the same records needs a second copy: it cannot fit.
    let copy = vec![rec.clone(); 9];
    assert!(matches!(j.rewrite(&copy), Err(JournalError::Full)));
    assert!(!path.with_file_name("journal.tmp").exists());
    drop(j);
    let (_, got) = Journal::open(&path, 10 * BIG).unwrap();
    assert_eq!(got.records, copy);
}

#[test]
fn stale_compaction_file_is_removed_on_open() {
    let (_dir, path) = tmp();
    let recs = records(2);
    write_journal(&path, &recs);
    let stale = path.with_file_name("journal.tmp");
    fs::write(&stale, b"TJNL\x01half a compaction").unwrap();
    let (_, got) = Journal::open(&path, BIG).unwrap();
    assert_eq!(got.records, recs);
    assert!(!stale.exists());
}
