//! Reading the agent's stdout one line at a time with a ceiling: a line longer than the
//! limit is skipped as it streams by (never held whole in memory) and reported by size.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One item of the agent's output.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// A complete line (without its `\n`), at most the limit.
    Text(String),
    /// A line over the limit was skipped; how many bytes it had.
    Oversize(usize),
}

/// Lines of `inner`, each at most `max` bytes.
pub struct LineReader<R> {
    inner: R,
    max: usize,
    buf: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// Reads lines of at most `max` bytes from `inner`.
    pub fn new(inner: R, max: usize) -> Self {
        LineReader { inner, max, buf: Vec::new() }
    }

    /// The next line; `None` at the end of the stream.
    pub async fn next(&mut self) -> std::io::Result<Option<Line>> {
        // Some(n): skipping an oversize line, n bytes so far.
        let mut skipped: Option<usize> = None;
        loop {
            let avail = self.inner.fill_buf().await?;
            if avail.is_empty() {
                return Ok(match skipped {
                    Some(n) => Some(Line::Oversize(n)),
                    None if self.buf.is_empty() => None,
                    None => Some(self.take()),
                });
            }
            let (chunk, found) = match avail.iter().position(|b| *b == b'\n') {
                Some(i) => (i, true),
                None => (avail.len(), false),
            };
            match &mut skipped {
                Some(n) => *n += chunk,
                None if self.buf.len() + chunk > self.max => {
                    skipped = Some(self.buf.len() + chunk);
                    self.buf = Vec::new();
                }
                None => self.buf.extend_from_slice(&avail[..chunk]),
            }
            self.inner.consume(chunk + usize::from(found));
            if found {
                return Ok(Some(match skipped {
                    Some(n) => Line::Oversize(n),
                    None => self.take(),
                }));
            }
        }
    }

    fn take(&mut self) -> Line {
        Line::Text(String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    #[tokio::test]
    async fn lines_over_the_limit_are_skipped_and_the_next_ones_still_read() {
        let input = format!("short\n{}\nok\n{}\ntail", "x".repeat(100), "y".repeat(10));
        // A 4-byte read buffer: lines span many reads, as a big line from a pipe does.
        let mut r = LineReader::new(BufReader::with_capacity(4, input.as_bytes()), 10);
        assert_eq!(r.next().await.unwrap(), Some(Line::Text("short".into())));
        assert_eq!(r.next().await.unwrap(), Some(Line::Oversize(100)));
        assert_eq!(r.next().await.unwrap(), Some(Line::Text("ok".into())));
        assert_eq!(r.next().await.unwrap(), Some(Line::Text("y".repeat(10))), "exactly the limit passes");
        assert_eq!(r.next().await.unwrap(), Some(Line::Text("tail".into())));
        assert_eq!(r.next().await.unwrap(), None);
    }
}
