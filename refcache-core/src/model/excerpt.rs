//! Quoting caller input in error messages: at most a short prefix of it ([`excerpt`]). An error that echoes a
//! 10 MB argument back whole costs the server and the client that much again, and floods a model's context.

use std::borrow::Cow;

/// `text` cut to at most `max_chars` characters, with `…` and the full length in bytes when it was cut.
///
/// ```
/// assert_eq!(refcache_core::excerpt("short", 10), "short");
/// assert_eq!(refcache_core::excerpt(&"x".repeat(1000), 5), "xxxxx… (1000 bytes)");
/// ```
pub fn excerpt(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len())),
    }
}
