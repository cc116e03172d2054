//! Following a file like `tail -F`, by polling.
//!
//! Polling (the agent checks every ~200 ms) is portable and needs no
//! inotify watch budget; a follower costs one `fstat` and one `stat` per
//! poll when the file is idle.
//!
//! * **Start**: at the current end of the file: only lines written after
//!   the agent started are sent. A file that does not exist yet is waited
//!   for, and read from its start once it appears.
//! * **Rotation** (the path now names another file, as after `logrotate`'s
//!   rename-and-create): the old file is read to its end first, then the new
//!   one is followed from its start.
//! * **Truncation** (the file is shorter than what was read, as after
//!   `copytruncate` or `> app.log`): reading restarts at offset 0.
//! * **Lines**: a line ends at `\n` (a trailing `\r` is removed). A partial
//!   last line waits for its newline; it is emitted as it stands only when
//!   its file is rotated away or truncated, since no newline will come.
//!   Lines longer than [`MAX_LINE_BYTES`] are cut there, and empty lines
//!   are skipped.

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::line::head;

/// Longest message sent; the rest of a longer line is discarded. Keeps a
/// publish op well under the hub's default 64 KiB frame limit, even after
/// JSON escaping.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Bytes read per `read` call.
const CHUNK: usize = 64 * 1024;

/// Bytes read from one file per poll, so one busy file cannot starve the
/// others or grow the line batch without bound. The rest is read on the
/// next poll, which comes at once (see [`Poll::More`]).
const MAX_READ_PER_POLL: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// What a poll left behind.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    /// Everything written so far has been read.
    Idle,
    /// The per-poll budget ran out before the end of the file.
    More,
}

/// The identity of a file: a rotated path names another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

#[cfg(unix)]
fn file_id(m: &Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some(FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// Without inode numbers rotation is not detected; truncation still is.
#[cfg(not(unix))]
fn file_id(_: &Metadata) -> Option<FileId> {
    None
}

struct OpenFile {
    file: File,
    id: Option<FileId>,
    /// Bytes consumed so far.
    offset: u64,
}

/// Follows one path.
pub struct Follower {
    path: PathBuf,
    /// The file name, the `source` of its log records.
    name: String,
    file: Option<OpenFile>,
    /// The bytes of the current line so far (at most [`MAX_LINE_BYTES`]).
    partial: Vec<u8>,
    /// The current line is longer than the cap: skip to its newline.
    overlong: bool,
    chunk: Vec<u8>,
}

impl Follower {
    /// Starts following `path` at its current end. A missing file is not an
    /// error: it is read from its start once it appears.
    pub fn new(path: impl Into<PathBuf>) -> Result<Follower, TailError> {
        let path = path.into();
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut f = Follower {
            path,
            name,
            file: None,
            partial: Vec::new(),
            overlong: false,
            chunk: vec![0; CHUNK],
        };
        match File::open(&f.path) {
            Ok(mut file) => {
                let end = file.seek(SeekFrom::End(0)).map_err(|e| f.err(e))?;
                let id = file.metadata().ok().as_ref().and_then(file_id);
                tracing::info!(
                    file = %f.path.display(),
                    offset = end,
                    "tailing from the end of the file"
                );
                f.file = Some(OpenFile {
                    file,
                    id,
                    offset: end,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::info!(file = %f.path.display(), "waiting for the file to appear");
            }
            Err(e) => return Err(f.err(e)),
        }
        Ok(f)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file name: the `source` of its lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads what was written since the last poll; complete lines are
    /// appended to `out`.
    pub fn poll(&mut self, out: &mut Vec<String>) -> Result<Poll, TailError> {
        let mut budget = MAX_READ_PER_POLL;
        if self.file.is_none() && !self.open_from_start()? {
            return Ok(Poll::Idle);
        }
        self.check_truncation(out)?;
        if self.read_available(&mut budget, out)? == Poll::More {
            return Ok(Poll::More);
        }
        if !self.rotated()? {
            return Ok(Poll::Idle);
        }
        // The path names a new file. A writer may still have finished a
        // line in the old one since it was read, so read it to its end
        // again, then switch.
        if self.read_available(&mut budget, out)? == Poll::More {
            return Ok(Poll::More);
        }
        self.flush_partial(out);
        self.file = None;
        tracing::info!(
            file = %self.path.display(),
            "file rotated: following the new file from its start"
        );
        if !self.open_from_start()? {
            return Ok(Poll::Idle);
        }
        self.read_available(&mut budget, out)
    }

    fn err(&self, source: io::Error) -> TailError {
        TailError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Opens the path at offset 0; false when it does not exist (yet).
    fn open_from_start(&mut self) -> Result<bool, TailError> {
        match File::open(&self.path) {
            Ok(file) => {
                let id = file.metadata().ok().as_ref().and_then(file_id);
                self.file = Some(OpenFile {
                    file,
                    id,
                    offset: 0,
                });
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// A file shorter than what was read was truncated: start over.
    fn check_truncation(&mut self, out: &mut Vec<String>) -> Result<(), TailError> {
        let Some(open) = &mut self.file else {
            return Ok(());
        };
        let len = match open.file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return Err(self.err(e)),
        };
        if len >= open.offset {
            return Ok(());
        }
        if let Err(e) = open.file.seek(SeekFrom::Start(0)) {
            return Err(self.err(e));
        }
        open.offset = 0;
        tracing::info!(file = %self.path.display(), "file truncated: reading from its start");
        self.flush_partial(out);
        Ok(())
    }

    /// Whether the path now names a file other than the open one. A path
    /// that is gone (renamed, not yet re-created) is not a rotation yet:
    /// the old file may still grow.
    fn rotated(&self) -> Result<bool, TailError> {
        let Some(open) = &self.file else {
            return Ok(false);
        };
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(match (file_id(&m), open.id) {
                (Some(now), Some(was)) => now != was,
                _ => false,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Reads to the end of the open file, or until `budget` is spent.
    fn read_available(
        &mut self,
        budget: &mut u64,
        out: &mut Vec<String>,
    ) -> Result<Poll, TailError> {
        loop {
            if *budget == 0 {
                return Ok(Poll::More);
            }
            let Some(open) = &mut self.file else {
                return Ok(Poll::Idle);
            };
            let want = self
                .chunk
                .len()
                .min(usize::try_from(*budget).unwrap_or(usize::MAX));
            let n = match open.file.read(&mut self.chunk[..want]) {
                Ok(0) => return Ok(Poll::Idle),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.err(e)),
            };
            open.offset += n as u64;
            *budget = budget.saturating_sub(n as u64);
            let chunk = std::mem::take(&mut self.chunk);
            self.split_lines(&chunk[..n], out);
            self.chunk = chunk;
        }
    }

    fn split_lines(&mut self, mut bytes: &[u8], out: &mut Vec<String>) {
        while !bytes.is_empty() {
            let (piece, complete) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let piece = &bytes[..i];
                    bytes = &bytes[i + 1..];
                    (piece, true)
                }
                None => (std::mem::take(&mut bytes), false),
            };
            if !self.overlong {
                let room = MAX_LINE_BYTES + 1 - self.partial.len();
                // One byte over the cap is kept so a trailing `\r` of a line
                // exactly at the cap is still recognised and removed.
                if piece.len() > room {
                    self.partial.extend_from_slice(&piece[..room]);
                    self.overlong = true;
                } else {
                    self.partial.extend_from_slice(piece);
                }
            }
            if complete {
                self.emit(out);
            }
        }
    }

    /// Emits a partial line whose file will not complete it.
    fn flush_partial(&mut self, out: &mut Vec<String>) {
        if !self.partial.is_empty() || self.overlong {
            self.emit(out);
        }
    }

    fn emit(&mut self, out: &mut Vec<String>) {
        if self.partial.last() == Some(&b'\r') && !self.overlong {
            self.partial.pop();
        }
        if !self.partial.is_empty() {
            let text = String::from_utf8_lossy(&self.partial);
            out.push(head(&text, MAX_LINE_BYTES).to_owned());
        }
        self.partial.clear();
        self.overlong = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    fn poll(f: &mut Follower) -> Vec<String> {
        let mut out = Vec::new();
        assert_eq!(f.poll(&mut out).unwrap(), Poll::Idle);
        out
    }

    #[test]
    fn starts_at_the_end_and_sends_only_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "old 1\nold 2\n");
        let mut f = Follower::new(&path).unwrap();
        assert_eq!(f.name(), "app.log");
        assert!(poll(&mut f).is_empty());
        append(&path, "new 1\r\nnew 2\n\n");
        assert_eq!(poll(&mut f), ["new 1", "new 2"]);
        assert!(poll(&mut f).is_empty());
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut f = Follower::new(&path).unwrap();
        append(&path, "first half");
        assert!(poll(&mut f).is_empty());
        append(&path, ", second half\nnext");
        assert_eq!(poll(&mut f), ["first half, second half"]);
        append(&path, "\n");
        assert_eq!(poll(&mut f), ["next"]);
    }

    #[test]
    fn waits_for_a_missing_file_and_reads_it_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.log");
        let mut f = Follower::new(&path).unwrap();
        assert!(poll(&mut f).is_empty());
        append(&path, "a\nb\n");
        assert_eq!(poll(&mut f), ["a", "b"]);
    }

    #[test]
    fn rotation_finishes_the_old_file_then_follows_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut f = Follower::new(&path).unwrap();
        append(&path, "before\n");
        assert_eq!(poll(&mut f), ["before"]);
        // logrotate: rename, the writer still finishes lines in the old
        // file, then a new file appears under the path.
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        append(
            &dir.path().join("app.log.1"),
            "late in old\ntail without newline",
        );
        assert_eq!(
            poll(&mut f),
            ["late in old"],
            "the path is gone: keep the old file"
        );
        append(&path, "new 1\nnew 2\n");
        assert_eq!(
            poll(&mut f),
            ["tail without newline", "new 1", "new 2"],
            "old file to its end, then the new one from its start"
        );
        append(&path, "new 3\n");
        assert_eq!(poll(&mut f), ["new 3"]);
    }

    #[test]
    fn rotation_by_rename_over_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut f = Follower::new(&path).unwrap();
        let staged = dir.path().join("staged");
        append(&staged, "fresh\n");
        append(&path, "last of old\n");
        std::fs::rename(&staged, &path).unwrap();
        assert_eq!(poll(&mut f), ["last of old", "fresh"]);
    }

    #[test]
    fn truncation_restarts_at_offset_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut f = Follower::new(&path).unwrap();
        append(&path, "one long line before truncation\n");
        assert_eq!(poll(&mut f).len(), 1);
        // copytruncate / `> app.log`, then new writes.
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        append(&path, "after\n");
        assert_eq!(poll(&mut f), ["after"]);
        append(&path, "again\n");
        assert_eq!(poll(&mut f), ["again"]);
    }

    #[test]
    fn long_lines_are_capped_on_a_char_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut f = Follower::new(&path).unwrap();
        // A 3-byte char straddles the cap; the line is 3× the cap.
        let line = format!(
            "{}€{}",
            "a".repeat(MAX_LINE_BYTES - 1),
            "b".repeat(2 * MAX_LINE_BYTES)
        );
        append(&path, &format!("{line}\nshort\n"));
        let out = poll(&mut f);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], "a".repeat(MAX_LINE_BYTES - 1));
        assert_eq!(out[1], "short");
        // Exactly at the cap, with CRLF: kept whole, `\r` removed.
        append(&path, &format!("{}\r\n", "c".repeat(MAX_LINE_BYTES)));
        assert_eq!(poll(&mut f), ["c".repeat(MAX_LINE_BYTES)]);
    }

    #[test]
    fn a_busy_file_is_read_over_several_polls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut f = Follower::new(&path).unwrap();
        let line = "x".repeat(1023);
        let lines = 3 * MAX_READ_PER_POLL as usize / 1024;
        append(&path, &format!("{line}\n").repeat(lines));
        let mut out = Vec::new();
        let mut polls = 0;
        while f.poll(&mut out).unwrap() == Poll::More {
            polls += 1;
            assert!(polls < 10);
        }
        assert!(polls >= 2, "{polls}");
        assert_eq!(out.len(), lines);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        append(&path, "");
        let mut f = Follower::new(&path).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"bad \xff byte\n")
            .unwrap();
        assert_eq!(poll(&mut f), ["bad \u{fffd} byte"]);
    }
}
