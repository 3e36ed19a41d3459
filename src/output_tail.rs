//! The last lines of a command's output, kept for an error message while the whole output goes
//! to a log.

use std::collections::VecDeque;

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

    /// Keeps `line`, dropping the oldest line when the tail is full.
    pub fn push(&mut self, line: &str) {
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line.to_owned());
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
