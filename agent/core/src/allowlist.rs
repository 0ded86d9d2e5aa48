//! Which programs an agent may start: an optional list set by the runtime from its own
//! configuration, never by the master (a master, or whoever speaks for it, must not widen it).
//!
//! An entry is an absolute path and allows exactly that program; an entry ending in `/` allows
//! every path below that directory. With a list set, a task's program (`argv[0]`) must be an
//! absolute path: a task sets its own `PATH`, so a bare name could resolve anywhere. A `..`
//! component is refused in entries and programs, since it would climb out of an allowed
//! directory. Paths are compared as text: symbolic links inside an allowed directory are
//! trusted, so such a directory must not be writable by the tasks.

use crate::message::{SpecError, StrList};

/// Bytes all entries may take together (NUL-separated).
pub const ALLOWLIST_BYTES: usize = 1024;

/// An entry or a program the list cannot hold or judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not starting with `/`.
    NotAbsolute,
    /// A `..` component.
    DotDot,
    /// A NUL byte inside.
    InteriorNul,
    /// The entries together exceed [`ALLOWLIST_BYTES`].
    TooLong,
}

impl core::fmt::Display for PathError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotAbsolute => "must be an absolute path",
            Self::DotDot => "must not contain a `..` component",
            Self::InteriorNul => "must not contain a NUL byte",
            Self::TooLong => "the allowlist's entries exceed its size bound",
        })
    }
}

impl core::error::Error for PathError {}

/// Checks what every entry and every program must be: absolute, without `..`.
pub fn check_path(path: &str) -> Result<(), PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path.split('/').any(|c| c == "..") {
        return Err(PathError::DotDot);
    }
    Ok(())
}

/// The programs tasks may run. An empty list allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: StrList<ALLOWLIST_BYTES>,
}

impl Allowlist {
    pub const fn new() -> Self {
        Self {
            entries: StrList::new(),
        }
    }

    /// Adds an entry: a program's absolute path, or a directory's ending in `/`.
    pub fn push(&mut self, entry: &str) -> Result<(), PathError> {
        check_path(entry)?;
        self.entries.push(entry).map_err(|e| match e {
            SpecError::InteriorNul => PathError::InteriorNul,
            _ => PathError::TooLong,
        })
    }

    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, PathError> {
        let mut list = Self::new();
        for entry in entries {
            list.push(entry)?;
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &str> {
        // Entries were checked text when pushed.
        self.entries.iter().filter_map(Result::ok)
    }

    /// Whether `program` may be started: absolute, no `..`, and an entry names it or a
    /// directory above it.
    pub fn allows(&self, program: &str) -> bool {
        check_path(program).is_ok()
            && self.entries().any(|entry| {
                if entry.ends_with('/') {
                    program.len() > entry.len() && program.starts_with(entry)
                } else {
                    program == entry
                }
            })
    }
}
