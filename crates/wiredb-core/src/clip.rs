//! Strings a peer chose (room ids, close reasons, errors that quote them) in log lines: cut to
//! a bounded length, control characters escaped. A 16 KiB room id must not make every line
//! about its room 16 KiB long, and a newline in one must not forge another line.

use std::fmt;

/// Characters of a [`Clipped`] string that are kept.
const KEPT_CHARS: usize = 100;

/// Displays a string as [`write_clipped`] writes it, with at most 100 characters kept.
pub struct Clipped<'a>(pub &'a str);

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_clipped(f, self.0, KEPT_CHARS)
    }
}

/// Writes `text` with control characters escaped, cut after `limit` characters with an
/// ellipsis and its whole length when longer.
pub fn write_clipped(out: &mut impl fmt::Write, text: &str, limit: usize) -> fmt::Result {
    for (kept, c) in text.chars().enumerate() {
        if kept == limit {
            return write!(out, "… ({} bytes)", text.len());
        }
        if c.is_control() {
            for escaped in c.escape_default() {
                out.write_char(escaped)?;
            }
        } else {
            out.write_char(c)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_cut_on_a_character_boundary() {
        assert_eq!(Clipped("room").to_string(), "room");
        let long = "é".repeat(10_000);
        let shown = Clipped(&long).to_string();
        assert!(shown.len() < 300, "{}", shown.len());
        assert!(shown.ends_with("… (20000 bytes)"));
    }

    #[test]
    fn control_characters_cannot_forge_a_line() {
        assert_eq!(Clipped("a\nb\x1b").to_string(), "a\\nb\\u{1b}");
    }
}
