//! The agent's durable journal: one append-only file of checksummed frames.
//!
//! ```text
//! file  = "TJNL" version:u8 frame*
//! frame = len:u32 LE  crc32(payload):u32 LE  payload[len]      (1 <= len <= MAX_RECORD)
//! ```
//!
//! Records are opaque here (tether-core encodes them). [`Journal::open`] returns every record
//! up to the first bad frame and truncates the rest, so a tail torn by kill -9 or power loss
//! costs only the records that were never synced. [`Journal::append`] writes into the page
//! cache; [`Journal::sync`] makes everything appended so far durable, so a caller appends a
//! batch and syncs once (group commit). The file never grows past `max_bytes`: an append that
//! would pass it, or that meets ENOSPC, fails with [`JournalError::Full`] and leaves the file
//! exactly as it was before that append. [`Journal::rewrite`] replaces the file atomically
//! (compaction).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// First bytes of every journal file.
pub const MAGIC: [u8; 4] = *b"TJNL";
/// Frame format version written after the magic.
pub const VERSION: u8 = 1;
/// Bytes of the file header (magic and version).
pub const HEADER_LEN: u64 = 5;
/// Bytes of a frame header (length and checksum).
pub const FRAME_HEADER_LEN: u64 = 8;
/// Largest record the journal frames. A longer length field is taken for corruption.
pub const MAX_RECORD: usize = 4096;

// Every record tether-core can encode must fit a frame.
const _: () = assert!(tether_core::journal::MAX_RECORD <= MAX_RECORD);

/// Bytes a record of `payload_len` bytes takes on disk.
pub const fn frame_len(payload_len: usize) -> u64 {
    FRAME_HEADER_LEN + payload_len as u64
}

#[derive(Debug)]
pub enum JournalError {
    /// The record would take the journal past `max_bytes`, or the filesystem is full.
    Full,
    /// A record must be 1 to [`MAX_RECORD`] bytes. (Empty records are refused because a run of
    /// zero bytes, which some filesystems leave after a crash, would read back as valid empty
    /// frames: crc32 of nothing is 0.)
    RecordSize {
        len: usize,
    },
    /// The file does not start with `TJNL`: not a journal, left untouched.
    BadMagic {
        found: Vec<u8>,
    },
    /// A journal of a format version this build does not read, left untouched.
    UnsupportedVersion {
        found: u8,
    },
    Io(io::Error),
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full => f.write_str("journal full"),
            Self::RecordSize { len } => {
                write!(
                    f,
                    "journal record of {len} bytes (must be 1 to {MAX_RECORD})"
                )
            }
            Self::BadMagic { found } => {
                write!(
                    f,
                    "not a Tether journal (header {found:02x?}, expected \"TJNL\")"
                )
            }
            Self::UnsupportedVersion { found } => {
                write!(
                    f,
                    "journal format version {found} is not supported (this build reads {VERSION})"
                )
            }
            Self::Io(e) => write!(f, "journal I/O error: {e}"),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for JournalError {
    fn from(e: io::Error) -> Self {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            Self::Full
        } else {
            Self::Io(e)
        }
    }
}

/// What [`Journal::open`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Every intact record, in the order appended.
    pub records: Vec<Vec<u8>>,
    /// Bytes of torn or corrupt tail cut off the file.
    pub truncated_bytes: u64,
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Length of the file up to its last complete frame.
    len: u64,
    max_bytes: u64,
    /// An append failed and the file could not be cut back: bytes past `len` may be garbage.
    tail_dirty: bool,
}

impl Journal {
    /// Opens (or creates) the journal at `path` and recovers its records.
    ///
    /// A journal larger than `max_bytes` (the limit was lowered) opens normally; appends then
    /// fail with [`JournalError::Full`] until a [`Journal::rewrite`] shrinks it.
    pub fn open(
        path: impl AsRef<Path>,
        max_bytes: u64,
    ) -> Result<(Journal, Recovered), JournalError> {
        let path = path.as_ref().to_path_buf();
        // A compaction interrupted by a crash leaves its temporary file: only space to free.
        if let Ok(tmp) = tmp_path(&path) {
            let _ = fs::remove_file(tmp);
        }
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Created through a rename so that a crash never leaves a half-written header,
                // which would later read as "not a journal".
                let file = write_atomically(&path, std::iter::empty::<&[u8]>())?;
                let journal = Journal {
                    path,
                    file,
                    len: HEADER_LEN,
                    max_bytes,
                    tail_dirty: false,
                };
                return Ok((journal, Recovered::default()));
            }
            Err(e) => return Err(JournalError::Io(e)),
        };
        let file_len = file.metadata()?.len();
        if file_len == 0 {
            // Nothing to lose: an empty file (e.g. made by hand) becomes an empty journal.
            file.write_all_at(&header(), 0)?;
            file.sync_all()?;
            let journal = Journal {
                path,
                file,
                len: HEADER_LEN,
                max_bytes,
                tail_dirty: false,
            };
            return Ok((journal, Recovered::default()));
        }
        let (records, good_len) = read_frames(&file, file_len)?;
        let truncated_bytes = file_len - good_len;
        if truncated_bytes > 0 {
            file.set_len(good_len)?;
            file.sync_all()?;
        }
        let journal = Journal {
            path,
            file,
            len: good_len,
            max_bytes,
            tail_dirty: false,
        };
        Ok((
            journal,
            Recovered {
                records,
                truncated_bytes,
            },
        ))
    }

    /// Appends one record. It is in the page cache (survives kill -9 of the agent) but not
    /// durable against power loss until [`Journal::sync`].
    ///
    /// On any error the file is left as it was before this call.
    pub fn append(&mut self, record: &[u8]) -> Result<(), JournalError> {
        check_size(record.len())?;
        let new_len = self.len + frame_len(record.len());
        if new_len > self.max_bytes {
            return Err(JournalError::Full);
        }
        if self.tail_dirty {
            self.file.set_len(self.len)?;
            self.tail_dirty = false;
        }
        let mut frame = Vec::with_capacity(record.len() + FRAME_HEADER_LEN as usize);
        push_frame(&mut frame, record);
        // Positional write: the offset is ours, not the file cursor's.
        if let Err(e) = self.file.write_all_at(&frame, self.len) {
            // A partial frame would be cut by recovery anyway, but later appends must not
            // land behind it: put the file back now, or remember to.
            self.tail_dirty = self.file.set_len(self.len).is_err();
            return Err(e.into());
        }
        self.len = new_len;
        Ok(())
    }

    /// Makes every record appended so far durable (fdatasync).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.file.sync_data()?;
        Ok(())
    }

    /// Replaces the whole journal with `records` (compaction): written to a temporary file in
    /// the same directory, synced, renamed over the journal, and the directory synced. A crash
    /// at any point leaves either the old or the new journal. `max_bytes` is not enforced here
    /// (compaction must be able to run on a journal that is over it); ENOSPC still gives
    /// [`JournalError::Full`] and keeps the old journal.
    pub fn rewrite<I>(&mut self, records: I) -> Result<(), JournalError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let file = write_atomically(&self.path, records)?;
        self.len = file.metadata()?.len();
        self.file = file;
        self.tail_dirty = false;
        Ok(())
    }

    /// Current size of the journal file in bytes (header included).
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes that may still be appended (frame headers included).
    pub fn free_bytes(&self) -> u64 {
        self.max_bytes.saturating_sub(self.len)
    }

    /// Fraction of `max_bytes` in use, from 0.0 (can exceed 1.0 after the limit was lowered).
    pub fn fill(&self) -> f64 {
        if self.max_bytes == 0 {
            return 1.0;
        }
        self.len as f64 / self.max_bytes as f64
    }

    /// Whether a record of `payload_len` bytes would fit now.
    pub fn fits(&self, payload_len: usize) -> bool {
        frame_len(payload_len) <= self.free_bytes()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0; HEADER_LEN as usize];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h
}

fn check_size(len: usize) -> Result<(), JournalError> {
    if len == 0 || len > MAX_RECORD {
        return Err(JournalError::RecordSize { len });
    }
    Ok(())
}

fn push_frame(out: &mut Vec<u8>, record: &[u8]) {
    // check_size bounds the length far below u32::MAX.
    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
    out.extend_from_slice(record);
}

/// Reads the header and every intact frame of a journal of `file_len` bytes; returns the
/// records and the length they span. Public so the decoder can be fuzzed over plain bytes.
pub fn read_frames(source: impl Read, file_len: u64) -> Result<(Vec<Vec<u8>>, u64), JournalError> {
    let mut reader = BufReader::with_capacity(64 * 1024, source);
    let mut head = Vec::with_capacity(HEADER_LEN as usize);
    (&mut reader).take(HEADER_LEN).read_to_end(&mut head)?;
    if head.len() < MAGIC.len() || head[..MAGIC.len()] != MAGIC {
        return Err(JournalError::BadMagic { found: head });
    }
    match head.get(4) {
        Some(&VERSION) => {}
        Some(&found) => return Err(JournalError::UnsupportedVersion { found }),
        // "TJNL" and no version byte: a header torn before the rename-based creation existed
        // cannot happen, so this is somebody else's file.
        None => return Err(JournalError::BadMagic { found: head }),
    }

    let mut records = Vec::new();
    let mut good = HEADER_LEN;
    let mut frame_head = [0u8; FRAME_HEADER_LEN as usize];
    loop {
        if file_len - good < FRAME_HEADER_LEN {
            break;
        }
        reader.read_exact(&mut frame_head)?;
        let len = u32::from_le_bytes([frame_head[0], frame_head[1], frame_head[2], frame_head[3]]);
        let crc = u32::from_le_bytes([frame_head[4], frame_head[5], frame_head[6], frame_head[7]]);
        let len = len as usize;
        if check_size(len).is_err() || file_len - good - FRAME_HEADER_LEN < len as u64 {
            break;
        }
        let mut payload = vec![0; len];
        reader.read_exact(&mut payload)?;
        if crc32fast::hash(&payload) != crc {
            break;
        }
        records.push(payload);
        good += frame_len(len);
    }
    Ok((records, good))
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Where compaction writes the new journal before renaming it: same directory, same
/// filesystem, so the rename is atomic.
fn tmp_path(path: &Path) -> Result<PathBuf, JournalError> {
    let mut name = path
        .file_name()
        .ok_or_else(|| {
            JournalError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "journal path has no file name",
            ))
        })?
        .to_os_string();
    name.push(".tmp");
    Ok(dir_of(path).join(name))
}

/// Writes a complete journal next to `path` and renames it over `path`, durably.
fn write_atomically<I>(path: &Path, records: I) -> Result<File, JournalError>
where
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let dir = dir_of(path);
    let tmp = tmp_path(path)?;

    let result = (|| -> Result<File, JournalError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut out = BufWriter::with_capacity(64 * 1024, &file);
        out.write_all(&header())?;
        let mut frame = Vec::with_capacity(MAX_RECORD + FRAME_HEADER_LEN as usize);
        for record in records {
            let record = record.as_ref();
            check_size(record.len())?;
            frame.clear();
            push_frame(&mut frame, record);
            out.write_all(&frame)?;
        }
        out.flush()?;
        drop(out);
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()?;
        Ok(file)
    })();
    if result.is_err() {
        // Best effort: a stale temp file is harmless (overwritten next time) but takes space.
        let _ = fs::remove_file(&tmp);
    }
    result
}
