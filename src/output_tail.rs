//! The last lines of a command's output, kept for an error message while the whole output goes
//! to a log, and [`visible`]: a line made safe to show on a terminal.

use std::borrow::Cow;
use std::collections::VecDeque;

/// `line` with every control character but tab made visible, so that output from a container
/// cannot move the cursor, retitle the window or hide text on the terminal that shows it: C0
/// controls and DEL in caret notation (ESC is `^[`, CR `^M`, DEL `^?`), C1 controls
/// (U+0080–U+009F, CSI among them) as `\u{9b}`. Borrowed when there is nothing to change.
pub fn visible(line: &str) -> Cow<'_, str> {
    let is_control = |c: char| c != '\t' && c.is_control();
    if !line.contains(is_control) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        match c {
            '\t' => out.push(c),
            '\u{7f}' => out.push_str("^?"),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The most bytes of a line an [`OutputTail`] keeps.
pub const TAIL_LINE_BYTES: usize = 1024;

/// A ring buffer of the last `capacity` lines pushed into it.
#[derive(Debug, Clone)]
pub struct OutputTail {
    lines: VecDeque<String>,
    capacity: usize,
}

impl OutputTail {
    /// An empty tail that keeps `capacity` lines (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            lines: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Keeps `line` (its first [`TAIL_LINE_BYTES`] bytes: an error quotes the tail whole),
    /// dropping the oldest line when the tail is full.
    pub fn push(&mut self, line: &str) {
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        let line = match line.len() <= TAIL_LINE_BYTES {
            true => line.to_owned(),
            false => {
                let end = line.floor_char_boundary(TAIL_LINE_BYTES);
                format!(
                    "{}[… {} bytes more in the log]",
                    &line[..end],
                    line.len() - end
                )
            }
        };
        self.lines.push_back(line);
    }

    /// The lines kept, oldest first.
    pub fn into_vec(self) -> Vec<String> {
        self.lines.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_made_visible() {
        assert!(matches!(visible("plain\ttext é"), Cow::Borrowed(_)));
        assert_eq!(
            visible("\x1b[2J\x1b]0;title\x07red\rback\x08\x7f\0"),
            "^[[2J^[]0;title^Gred^Mback^H^?^@"
        );
        // C1 controls: CSI (U+009B) and OSC (U+009D) act alone on some terminals.
        assert_eq!(visible("a\u{9b}31mb\u{9d}c"), "a\\u{9b}31mb\\u{9d}c");
        assert!(
            !visible("\x1b\u{9b}\x00\x1f")
                .chars()
                .any(|c| c.is_control())
        );
    }

    #[test]
    fn keeps_the_start_of_long_lines() {
        let mut tail = OutputTail::new(2);
        tail.push(&format!("é{}", "x".repeat(5000)));
        tail.push("short");
        let lines = tail.into_vec();
        assert!(lines[0].starts_with("éxx"));
        assert!(lines[0].ends_with(&format!("x[… {} bytes more in the log]", 5002 - 1024)));
        assert!(lines[0].len() < TAIL_LINE_BYTES + 40);
        assert_eq!(lines[1], "short");
    }

    #[test]
    fn keeps_only_the_last_lines() {
        let mut tail = OutputTail::new(30);
        for i in 0..35 {
            tail.push(&i.to_string());
        }
        let lines = tail.into_vec();
        assert_eq!(lines.len(), 30);
        assert_eq!(lines[0], "5");
        assert_eq!(lines.last().map(String::as_str), Some("34"));
    }
}
