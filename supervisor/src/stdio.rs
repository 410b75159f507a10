//! The supervisor's own stdout and stderr, written as a blocking write would be, even
//! when the pipe behind them has been made non-blocking.
//!
//! Why: `O_NONBLOCK` belongs to the open file description, which every process holding
//! the pipe shares. Node turns the stdio pipes it inherits non-blocking, and a Node
//! killed by SIGKILL never turns them back, so a sibling under the same start command
//! (or the agent under `supervisor acp`, which inherits our stderr) can leave our output
//! non-blocking for the rest of the VM's life. Then every write meets `EAGAIN` as soon as
//! the reader lags, and `write_all` gives up the rest of the line: log lines lost without
//! a trace. These writers wait for the pipe to drain instead.

use std::io::{self, Write};
use std::os::fd::RawFd;

/// One of our standard output streams, unbuffered: each `write` is one `write(2)`,
/// and `EAGAIN` waits (in `poll(2)`) until the pipe takes more.
#[derive(Debug, Clone, Copy)]
pub struct Blocking(RawFd);

/// Our stdout (the echo of the services' output).
pub fn stdout() -> Blocking {
    Blocking(libc::STDOUT_FILENO)
}

/// Our stderr (the supervisor's own log).
pub fn stderr() -> Blocking {
    Blocking(libc::STDERR_FILENO)
}

impl Blocking {
    /// Waits until the fd is writable again (or has failed: the next write says how).
    fn wait_writable(&self) -> io::Result<()> {
        let mut p = libc::pollfd { fd: self.0, events: libc::POLLOUT, revents: 0 };
        loop {
            // SAFETY: one valid pollfd, and its count.
            if unsafe { libc::poll(&mut p, 1, -1) } >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Write for Blocking {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is valid for buf.len() bytes; the fd is one of ours, never closed.
            let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => self.wait_writable()?,
                _ => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn pipe() -> (std::fs::File, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe2(2) returns. CLOEXEC: a child
        // started meanwhile by another test must not hold an end open.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both were just opened and are owned here alone.
        unsafe { (std::fs::File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn a_full_non_blocking_pipe_is_waited_for_not_given_up() {
        let (mut r, w) = pipe();
        // SAFETY: w is open; setting O_NONBLOCK is what Node does to an inherited pipe.
        unsafe {
            let flags = libc::fcntl(w.as_raw_fd(), libc::F_GETFL);
            assert_eq!(libc::fcntl(w.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK), 0);
        }
        // Several times a pipe's 64 KiB: a plain write_all stops at the first EAGAIN.
        let sent: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut got = vec![];
            let mut buf = [0u8; 4096];
            loop {
                std::thread::sleep(std::time::Duration::from_micros(200));
                match r.read(&mut buf) {
                    Ok(0) => return got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => panic!("read: {e}"),
                }
            }
        });
        Blocking(w.as_raw_fd()).write_all(&sent).expect("every byte written");
        drop(w);
        assert!(reader.join().unwrap() == sent, "the reader got every byte, in order");
    }

    #[test]
    fn a_closed_reader_is_an_error_not_a_wait() {
        let (r, w) = pipe();
        drop(r);
        let e = Blocking(w.as_raw_fd()).write_all(b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
