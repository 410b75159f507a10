//! A `tty` service's output as log lines: terminal control sequences (colors, cursor
//! moves, titles) are stripped, `\r` dropped, and the text split at newlines, so the log
//! ring and stdout hold what a person would read, while attached terminals get the raw bytes.

use crate::logs::{LogBuffer, Stream, MAX_LINE};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Text,
    /// After ESC.
    Esc,
    /// In a CSI (`ESC [`) sequence, until its final byte.
    Csi,
    /// In an OSC/DCS/APC/PM/SOS string, until BEL or ST (`ESC \`).
    Str,
    /// ESC inside a string (maybe the start of ST).
    StrEsc,
    /// After `ESC (` and the like: one more byte.
    One,
}

/// A streaming stripper of control sequences (state carries across chunks).
#[derive(Debug)]
pub struct Stripper {
    st: St,
}

impl Default for Stripper {
    fn default() -> Self {
        Stripper { st: St::Text }
    }
}

impl Stripper {
    /// Appends the printable part of `input` (and `\n`, `\t`) to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.st = match (self.st, b) {
                (St::Text, 0x1b) => St::Esc,
                (St::Text, b'\n' | b'\t') => {
                    out.push(b);
                    St::Text
                }
                (St::Text, c) if c < 0x20 || c == 0x7f => St::Text,
                (St::Text, c) => {
                    out.push(c);
                    St::Text
                }
                (St::Esc, b'[') => St::Csi,
                (St::Esc, b']' | b'P' | b'_' | b'^' | b'X') => St::Str,
                (St::Esc, b'(' | b')' | b'*' | b'+' | b'#' | b'%' | b' ') => St::One,
                (St::Esc, _) => St::Text,
                (St::One, _) => St::Text,
                (St::Csi, c) if (0x40..=0x7e).contains(&c) => St::Text,
                (St::Csi, 0x1b) => St::Esc,
                (St::Csi, _) => St::Csi,
                (St::Str, 0x07) => St::Text,
                (St::Str, 0x1b) => St::StrEsc,
                (St::Str, _) => St::Str,
                (St::StrEsc, b'\\') => St::Text,
                (St::StrEsc, _) => St::Str,
            };
        }
    }
}

/// Turns a terminal's raw output into lines of `logs` (stdout stream).
pub fn log_sink(logs: Arc<LogBuffer>) -> super::term::Sink {
    let mut strip = Stripper::default();
    let mut line = Vec::new();
    Box::new(move |chunk: &[u8]| {
        strip.feed(chunk, &mut line);
        while let Some(pos) = line.iter().position(|b| *b == b'\n') {
            let rest = line.split_off(pos + 1);
            line.pop();
            logs.push(Stream::Stdout, &String::from_utf8_lossy(&line));
            line = rest;
        }
        while line.len() >= MAX_LINE {
            let rest = line.split_off(MAX_LINE);
            logs.push(Stream::Stdout, &String::from_utf8_lossy(&line));
            line = rest;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(chunks: &[&[u8]]) -> String {
        let mut s = Stripper::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn colors_cursor_titles_and_carriage_returns_go() {
        assert_eq!(strip(&[b"\x1b[1;31mred\x1b[0m plain\r\n"]), "red plain\n");
        assert_eq!(strip(&[b"\x1b]0;title\x07>>> \x1b[?2004h"]), ">>> ");
        assert_eq!(strip(&[b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"]), "link");
        assert_eq!(strip(&[b"a\x1b(Bb\x08c\x1b=d"]), "abcd");
        // A sequence split across reads.
        assert_eq!(strip(&[b"x\x1b[3", b"8;2;1;2;3my\x1b", b"[0m\n"]), "xy\n");
        assert_eq!(strip(&["é\tü".as_bytes()]), "é\tü");
        // 0x9B is a UTF-8 continuation byte (Л = D0 9B), never an 8-bit CSI here.
        assert_eq!(strip(&["Лена пишет\nвторая строка\nok\n".as_bytes()]), "Лена пишет\nвторая строка\nok\n");
    }

    #[test]
    fn lines_reach_the_log() {
        let logs = LogBuffer::new("t", 100, 1 << 20);
        let mut sink = log_sink(logs.clone());
        sink(b"\x1b[32mone\x1b[0m\r\ntw");
        sink(b"o\r\n>>> ");
        let lines: Vec<String> = logs.tail(10).into_iter().map(|l| l.line).collect();
        assert_eq!(lines, vec!["one", "two"]);
    }
}
