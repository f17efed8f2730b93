//! A task's bounded output log ([`OutputLog`]): what the in-process backend keeps per task, and what a remote
//! backend buffers in the writing process before it ships the bytes to its server.
//!
//! It holds at most `cap` bytes, the newest; the oldest go first. Offsets count every byte ever written, so they
//! never move backwards, and a read from an offset whose bytes were dropped is told how many. Writing takes a
//! `std` mutex for a copy of the text, so a blocking thread may write, and wakes followers through a `watch`.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::model::output::{OutputChunk, OutputStream, last_line};

/// The longest status line taken from a task's output, in bytes.
pub const STATUS_LINE_MAX: usize = 200;

/// The status line that `text`, just written to a task's output, brings: its last non-empty line, at most
/// [`STATUS_LINE_MAX`] bytes. [`OutputLog::append`] answers it; a remote backend that ships the bytes elsewhere
/// takes it from here, so that every backend shows the same line.
pub fn status_line(text: &str) -> Option<&str> {
    last_line(text, STATUS_LINE_MAX)
}

/// A task's output log, bounded in bytes.
#[derive(Debug)]
pub struct OutputLog {
    cap: usize,
    state: Mutex<LogState>,
    /// The end offset: every write changes it, so a follower wakes on it.
    end: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct LogState {
    /// The bytes held: `start..end` of everything written.
    buf: VecDeque<u8>,
    start: u64,
    end: u64,
}

/// What one append did: the new end offset, and the status line it brings, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Appended {
    /// The end offset after the append.
    pub end: u64,
    /// The last non-empty line of the text appended (at most [`STATUS_LINE_MAX`] bytes).
    pub line: Option<String>,
}

impl OutputLog {
    /// An empty log that holds at most `cap` bytes (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            state: Mutex::new(LogState::default()),
            end: watch::channel(0).0,
        }
    }

    /// The byte cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `text`; drops the oldest bytes beyond the cap. The stream is not kept apart: every stream goes into
    /// the one log, in the order written.
    pub fn append(&self, stream: &OutputStream, text: &str) -> Appended {
        let _ = stream;
        let end = {
            let mut st = self.lock();
            let bytes = text.as_bytes();
            if bytes.len() >= self.cap {
                st.buf.clear();
                st.buf.extend(&bytes[bytes.len() - self.cap..]);
            } else {
                st.buf.extend(bytes);
                let over = st.buf.len().saturating_sub(self.cap);
                if over > 0 {
                    st.buf.drain(..over);
                }
            }
            st.end += bytes.len() as u64;
            st.start = st.end - st.buf.len() as u64;
            st.end
        };
        self.end.send_replace(end);
        Appended {
            end,
            line: status_line(text).map(str::to_owned),
        }
    }

    /// The offsets held: `(start, end)`.
    pub fn bounds(&self) -> (u64, u64) {
        let st = self.lock();
        (st.start, st.end)
    }

    /// At most `max` bytes from `from` (at least one character when there is one). `terminal`: the task has ended,
    /// so a read that reaches the end is `done`.
    pub fn read(&self, from: u64, max: usize, terminal: bool) -> OutputChunk {
        let st = self.lock();
        let (begin, dropped) = if from < st.start {
            (st.start, st.start - from)
        } else {
            (from.min(st.end), 0)
        };
        let skip = usize::try_from(begin - st.start).unwrap_or(usize::MAX);
        let take = max.max(4).min(st.buf.len().saturating_sub(skip));
        let mut bytes = Vec::with_capacity(take);
        let (a, b) = st.buf.as_slices();
        if skip < a.len() {
            let end = (skip + take).min(a.len());
            bytes.extend_from_slice(&a[skip..end]);
            bytes.extend_from_slice(&b[..take - (end - skip)]);
        } else {
            let skip = skip - a.len();
            bytes.extend_from_slice(&b[skip..skip + take]);
        }
        let end = st.end;
        drop(st);
        OutputChunk::from_bytes(begin, dropped, &bytes, end, terminal)
    }

    /// A receiver of the end offset, which changes on every write.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_bytes_go_first_and_offsets_keep_counting() {
        let log = OutputLog::new(8);
        log.append(&OutputStream::Stdout, "0123");
        log.append(&OutputStream::Stderr, "456789");
        assert_eq!(log.bounds(), (2, 10));
        let chunk = log.read(0, 100, false);
        assert_eq!(
            (chunk.offset, chunk.dropped, chunk.text.as_str()),
            (2, 2, "23456789")
        );
        assert_eq!(chunk.next_offset, 10);
        assert!(!chunk.done);
        let chunk = log.read(10, 100, true);
        assert_eq!(
            (chunk.offset, chunk.text.as_str(), chunk.done),
            (10, "", true)
        );
        let appended = log.append(&OutputStream::Stdout, "a much longer line than the cap\n");
        assert_eq!(
            appended.line.as_deref(),
            Some("a much longer line than the cap")
        );
        let chunk = log.read(10, 100, true);
        assert_eq!(chunk.text, "the cap\n");
        assert_eq!(chunk.dropped, 24);
        assert!(chunk.done);
    }

    #[test]
    fn a_read_never_splits_a_character() {
        let log = OutputLog::new(5);
        log.append(&OutputStream::Stdout, "ééé");
        // 6 bytes written, 5 kept: the first é lost a byte, so it is dropped whole.
        let chunk = log.read(0, 100, false);
        assert_eq!(
            (chunk.offset, chunk.dropped, chunk.text.as_str()),
            (2, 2, "éé")
        );
        // A limit that ends inside a character leaves it for the next read.
        let log = OutputLog::new(100);
        log.append(&OutputStream::Stdout, "abcdé");
        let chunk = log.read(0, 5, false);
        assert_eq!((chunk.text.as_str(), chunk.next_offset), ("abcd", 4));
    }
}
