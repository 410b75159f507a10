//! Optional per-service log files (`log_file`): every line also on disk, rotated by size,
//! at most `keep` old files; off by default.

use e2e::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[test]
fn a_log_file_gets_every_line_and_rotates_by_size_keeping_the_count() -> anyhow::Result<()> {
    let s = Stack::start(
        r#"
[services.chatty]
command = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo \"line $i $(printf '%060d' 0)\"; sleep 0.002; done"]
log_file = { path = "{DIR}/logs/chatty.log", max_size = "8KiB", keep = 2 }
stop_timeout = "2s"

[services.quiet]
command = ["sh", "-c", "echo hello; exec sleep infinity"]
"#,
    )?;
    let logs = s.path().join("logs");
    s.wait_for("two rotations", T, |_| Ok(logs.join("chatty.log.2").exists()))?;
    // Rotations go on; never more than `keep` old files.
    s.wait_for("more lines", T, |_| {
        let cur = std::fs::read_to_string(logs.join("chatty.log")).unwrap_or_default();
        Ok(cur.lines().count() > 10)
    })?;
    assert!(!logs.join("chatty.log.3").exists(), "keep = 2");
    for f in ["chatty.log", "chatty.log.1", "chatty.log.2"] {
        let len = std::fs::metadata(logs.join(f))?.len();
        assert!(len <= 8192, "{f} is {len} bytes, over max_size");
    }
    let one = std::fs::read_to_string(logs.join("chatty.log.1"))?;
    let first = one.lines().next().unwrap_or_default();
    assert!(first.contains(" stdout line "), "timestamp, stream, text: {first}");
    // Lines are consecutive across the rotation: the newest of .1 is followed by the first of the current file.
    let n = |l: &str| l.split_whitespace().nth(3).and_then(|x| x.parse::<u64>().ok());
    let last_of_one = one.lines().filter_map(n).last().unwrap_or(0);
    let cur = std::fs::read_to_string(logs.join("chatty.log"))?;
    let first_of_cur = cur.lines().filter_map(n).next().unwrap_or(0);
    let rotated_again = !std::fs::read_to_string(logs.join("chatty.log.1"))?.starts_with(first);
    assert!(rotated_again || first_of_cur == last_of_one + 1, "no line lost at a rotation: {last_of_one} then {first_of_cur}");
    // Off by default: nothing written for a service without log_file.
    let entries: Vec<String> = std::fs::read_dir(&logs)?.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(entries.iter().all(|e| e.starts_with("chatty.log")), "{entries:?}");
    Ok(())
}
