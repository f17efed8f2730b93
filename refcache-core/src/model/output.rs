//! A task's output: the streams it writes to ([`OutputStream`]), what a reader gets back ([`OutputChunk`]), and
//! the byte cap of a task's log ([`DEFAULT_OUTPUT_LIMIT`]).
//!
//! A task writes text to its output log ([`TaskContext::output`](crate::TaskContext::output)). Every stream goes
//! into one log, in the order written, as a terminal shows stdout and stderr interleaved. Offsets are byte offsets
//! in everything the task ever wrote: they never move backwards, and when the log's cap drops old bytes, a reader
//! is told how many bytes before its offset were dropped.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The byte cap of a task's output log when neither the function nor the cache sets one: 1 MiB.
pub const DEFAULT_OUTPUT_LIMIT: usize = 1 << 20;

/// The most bytes one read answers when the reader sets no limit: 64 KiB.
pub const DEFAULT_OUTPUT_READ: usize = 64 << 10;

/// A stream a task writes to: stdout, stderr, or one named by the task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A stream the task names.
    Named(Cow<'static, str>),
}

impl OutputStream {
    /// The stream's name: `stdout`, `stderr`, or the name given.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Named(name) => name,
        }
    }
}

impl fmt::Display for OutputStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for OutputStream {
    fn from(name: &'static str) -> Self {
        match name {
            "stdout" => Self::Stdout,
            "stderr" => Self::Stderr,
            other => Self::Named(Cow::Borrowed(other)),
        }
    }
}

/// What a read of a task's output answers: the text from `offset` to `next_offset`.
///
/// - `offset` is where the text starts: the offset asked for, or the oldest byte still held when the bytes asked
///   for were dropped;
/// - `dropped` counts the bytes between the offset asked for and `offset` that the log's cap dropped (0 when none);
/// - `next_offset` is the offset to ask for next; it never moves backwards;
/// - `done` is true when the task is terminal and `next_offset` is the end of its output: nothing more will come.
///
/// Offsets count bytes of UTF-8 text. A chunk never splits a character: when the cap cut into one, the partial
/// character's bytes count as dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutputChunk {
    /// Where `text` starts, in bytes of everything the task wrote.
    pub offset: u64,
    /// Where the next read should start.
    pub next_offset: u64,
    /// Bytes before `offset` (from the offset asked for) that the cap dropped.
    pub dropped: u64,
    /// The text.
    pub text: String,
    /// The task is terminal and this is the end of its output.
    pub done: bool,
}

impl OutputChunk {
    /// A chunk of `text` from `offset`, with `dropped` bytes dropped before it.
    pub fn new(offset: u64, dropped: u64, text: String, done: bool) -> Self {
        Self {
            offset,
            next_offset: offset + text.len() as u64,
            dropped,
            text,
            done,
        }
    }

    /// A chunk of the bytes held from `offset`: a character cut at their start counts as dropped, one cut at their
    /// end is left for the next read. For a backend that reads raw bytes of its log.
    pub fn from_bytes(offset: u64, dropped: u64, bytes: &[u8], end: u64, terminal: bool) -> Self {
        let (cut, text) = utf8_window(bytes);
        let offset = offset + cut as u64;
        let done = terminal && offset + text.len() as u64 >= end;
        Self::new(offset, dropped + cut as u64, text.to_owned(), done)
    }

    /// An empty chunk at `offset`: nothing (yet) from there.
    pub fn empty(offset: u64, done: bool) -> Self {
        Self::new(offset, 0, String::new(), done)
    }
}

/// The last non-empty line of `text`, trimmed of its line ending, at most `max` bytes (cut at a character
/// boundary, keeping its end). Used for the status message of a task that writes output.
pub(crate) fn last_line(text: &str, max: usize) -> Option<&str> {
    let line = text
        .split(['\n', '\r'])
        .rev()
        .map(str::trim_end)
        .find(|l| !l.is_empty())?;
    if line.len() <= max {
        return Some(line);
    }
    let mut start = line.len() - max;
    while !line.is_char_boundary(start) {
        start += 1;
    }
    Some(&line[start..])
}

/// The longest prefix of `bytes` that is whole UTF-8, and how many bytes at its start were skipped because they
/// continue a character that began before it.
pub(crate) fn utf8_window(bytes: &[u8]) -> (usize, &str) {
    let skip = bytes
        .iter()
        .take(3)
        .take_while(|b| (**b & 0xC0) == 0x80)
        .count();
    let rest = &bytes[skip..];
    match std::str::from_utf8(rest) {
        Ok(text) => (skip, text),
        Err(e) => (
            skip,
            std::str::from_utf8(&rest[..e.valid_up_to()]).expect("valid up to here"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_skips_blank_lines_and_keeps_the_end() {
        assert_eq!(last_line("a\nb\n\n", 80), Some("b"));
        assert_eq!(last_line("a\r\nprogress 10%\r", 80), Some("progress 10%"));
        assert_eq!(last_line("\n\n", 80), None);
        assert_eq!(last_line("héllo", 4), Some("llo"));
    }

    #[test]
    fn utf8_window_skips_a_cut_character() {
        let text = "é!".as_bytes();
        assert_eq!(utf8_window(&text[1..]), (1, "!"));
        assert_eq!(utf8_window(&text[..1]), (0, ""));
        assert_eq!(utf8_window(b"ok"), (0, "ok"));
    }
}
