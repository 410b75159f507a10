//! The reaper in a process of its own (it reaps every child with `waitpid(-1)` and makes
//! the process a subreaper, which would steal the children of the library's other tests).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use supervisor::engine::reaper::Reaper;

/// Whether `pid` is still in the process table (a zombie is: only its reap removes it).
fn present(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// What a restart after a crash waits on: the dead leader's group members are
/// reparented to the supervisor, and each one's reap wakes `Reaper::reaped`, so the
/// wait for the group looks again at once. This waits on nothing but `reaped()`: were
/// an orphan's reap not announced, it would time out.
#[tokio::test]
async fn the_reap_of_an_orphan_wakes_those_waiting_on_reaped() {
    let reaper = Reaper::install().expect("reaper");
    let mut cmd = Command::new("sh");
    // The orphan lives until the pipe on its stdin closes, which the test does only once it
    // waits. (`<&3`: a background job of a non-interactive sh otherwise reads /dev/null.)
    cmd.args(["-c", "exec 3<&0; cat <&3 >/dev/null & echo $!"]).stdin(Stdio::piped()).stdout(Stdio::piped());
    let (mut child, exit) = reaper.spawn(&mut cmd).expect("spawn");
    let mut stdin = Some(child.stdin.take().expect("stdin"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("orphan's pid");
    let orphan: i32 = line.trim().parse().expect("a pid");
    let leader = tokio::time::timeout(Duration::from_secs(10), exit).await.expect("leader exits").expect("status");
    assert!(leader.success(), "leader: {leader}");
    assert!(present(orphan), "orphan {orphan} ended before its stdin closed: the test would prove nothing");

    let mut wakes = 0;
    loop {
        let reaped = reaper.reaped();
        if !present(orphan) {
            break;
        }
        drop(stdin.take()); // the orphan's `cat` ends now, after the wait is registered
        tokio::time::timeout(Duration::from_secs(10), reaped)
            .await
            .unwrap_or_else(|_| panic!("orphan {orphan} not reaped, or its reap not announced, within 10 s"));
        wakes += 1;
    }
    assert!(wakes >= 1, "the orphan was gone before the first wait: the test proved nothing");
}
