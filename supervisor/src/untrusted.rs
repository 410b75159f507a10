//! Reading files that live in a directory somebody else controls. The app dir belongs to
//! the coding agent, which can replace `/app/.env` with a FIFO (an `open` for reading
//! would block the event loop forever), a device (`/dev/zero`: endless), or a symlink to
//! anywhere. So such files are opened with `O_NOFOLLOW | O_NONBLOCK`, must be regular
//! files, are capped in size, and are read on a blocking thread, never the event loop.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Reads `path` if it is a regular file of at most `max` bytes holding UTF-8.
/// `Ok(None)` when it does not exist; an error naming the problem otherwise.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Option<String>> {
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "it is a symlink, which is not followed"))
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("it is not a regular file ({})", kind(&meta))));
    }
    if meta.len() > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("it is {} bytes, more than the {max} allowed", meta.len())));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("it grew past the {max} bytes allowed")));
    }
    String::from_utf8(buf).map(Some).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// [`read_regular`] on a blocking thread.
pub async fn read_regular_async(path: PathBuf, max: u64) -> io::Result<Option<String>> {
    tokio::task::spawn_blocking(move || read_regular(&path, max)).await.map_err(|e| io::Error::other(format!("reader task failed: {e}")))?
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert!(read_regular(&p, 10).unwrap().is_none(), "missing is None");
        std::fs::write(&p, "A=1\n").unwrap();
        assert_eq!(read_regular(&p, 10).unwrap().as_deref(), Some("A=1\n"));
        assert!(read_regular(&p, 3).unwrap_err().to_string().contains("more than"));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let t = std::time::Instant::now();
        let e = read_regular(&fifo, 10).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "a FIFO must not block (a blocking open never returns)");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        assert!(read_regular(&link, 1 << 20).unwrap_err().to_string().contains("symlink"));
        assert!(read_regular(Path::new("/dev"), 10).unwrap_err().to_string().contains("directory"));
    }
}
