//! Strings a peer chose (room ids, close reasons) in log lines, cut to a bounded length: a
//! 16 KiB room id must not make every line about its room 16 KiB long.

use std::fmt;

/// Characters of a clipped string that are kept.
const KEPT_CHARS: usize = 100;

/// Displays at most `KEPT_CHARS` characters of a string, then how long it was.
pub struct Clipped<'a>(pub &'a str);

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(KEPT_CHARS) {
            None => f.write_str(self.0),
            Some((end, _)) => write!(f, "{}... ({} bytes)", &self.0[..end], self.0.len()),
        }
    }
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
        assert!(shown.ends_with("... (20000 bytes)"));
    }
}
