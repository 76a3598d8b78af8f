//! Text from jobs and workers made safe to show: job names, errors, output tails and worker
//! names come from whoever submitted or ran the job, and must not drive the terminal (an escape
//! sequence that retitles it or clears the screen), break a table's rows (a newline, a carriage
//! return), widen every row (a name of 30,000 characters), or run as a formula in a
//! spreadsheet. JSON output stays exact; only what people read is escaped.

use std::fmt::Write;

/// The most characters a table cell shows; longer ones end in `…`.
pub const MAX_CELL: usize = 60;

/// A cell of a table: on one line, control characters shown as escapes, clipped.
pub fn cell(text: &str) -> String {
    clip(&escaped(text, false), MAX_CELL)
}

/// Text shown on a line of its own: control characters (newlines too) shown as escapes.
pub fn line(text: &str) -> String {
    escaped(text, false)
}

/// Text of several lines (an output tail): lines kept, every other control character shown
/// as an escape.
pub fn lines(text: &str) -> String {
    escaped(text, true)
}

/// A text field of a CSV export, neutralised as OWASP recommends: a field a spreadsheet would
/// take for a formula (beginning with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a
/// leading `'`, which spreadsheets show as text.
pub fn spreadsheet(text: String) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    }
}

/// True for characters that change how text shows rather than being shown: the C0 and C1
/// controls (escape, bell, carriage return, ...) and the bidirectional overrides that can make
/// text read backwards.
fn hides(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escaped(text: &str, keep_newlines: bool) -> String {
    if !text.chars().any(hides) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hides(c) && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if hides(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some(_) => {
            let end = text
                .char_indices()
                .nth(max - 1)
                .map_or(text.len(), |(index, _)| index);
            format!("{}…", &text[..end])
        }
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(line("plain name"), "plain name");
        assert_eq!(
            line("\u{1b}]0;pwned\u{7}\u{1b}[2J"),
            "\\x1b]0;pwned\\x07\\x1b[2J"
        );
        assert_eq!(line("a\r\nb\tc"), "a\\r\\nb\\tc");
        assert_eq!(line("\u{9b}31m"), "\\x9b31m", "a C1 escape too");
        assert_eq!(line("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(lines("one\ntwo\u{1b}[1m\r"), "one\ntwo\\x1b[1m\\r");
    }

    #[test]
    fn cells_are_clipped_on_character_boundaries() {
        let long = "é".repeat(30_000);
        let shown = cell(&long);
        assert_eq!(shown.chars().count(), MAX_CELL);
        assert!(shown.ends_with('…'));
        assert_eq!(cell(&"x".repeat(MAX_CELL)), "x".repeat(MAX_CELL));
        // An escape counts at its shown width, and is never cut in half silently.
        assert!(cell(&"\u{1b}".repeat(100)).chars().count() <= MAX_CELL);
    }

    #[test]
    fn formulas_are_neutralised_for_spreadsheets() {
        for formula in ["=1+1", "+1", "-1+2", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(spreadsheet(formula.into()), format!("'{formula}"));
        }
        assert_eq!(spreadsheet("plain".into()), "plain");
        assert_eq!(spreadsheet(String::new()), "");
    }
}
