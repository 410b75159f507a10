//! Replayable event streams (SPEC §5): every event of `/_supervisor/events` and every line
//! of `logs?follow=1` has an `id:`; a real EventSource client (the `eventsource` npm
//! package) cut off while states change gets exactly what it missed when it reconnects by
//! itself with `Last-Event-ID`; a gap larger than the ring is reported as `lost`.

use anyhow::Context;
use e2e::*;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn config(ring: Option<usize>) -> String {
    let sup = ring.map(|n| format!("[supervisor]\nevent_ring = {n}\n\n")).unwrap_or_default();
    format!(
        r#"{sup}[services.idle]
command = ["sleep", "infinity"]
stop_timeout = "2s"

[services.talker]
command = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo line-$i; sleep 0.05; done"]
stop_timeout = "2s"
"#
    )
}

fn states(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["data"]["state"].as_str().unwrap_or("?").to_string()).collect()
}

#[test]
fn a_cut_off_eventsource_gets_exactly_the_three_changes_it_missed_after_reconnecting() -> anyhow::Result<()> {
    let s = Stack::start(&config(None))?;
    s.wait_ready(T)?;
    let tok = s.rotate_token();
    let out = node_client("sse-replay.mjs", &[&s.url(""), &tok, "idle", "0"])?;
    let replayed = out["replayed"].as_array().context("replayed")?;
    let reference = out["reference"].as_array().context("reference")?;
    assert_eq!(states(replayed), ["pending", "running", "ready"], "the start's three changes: {out}");
    assert_eq!(replayed, reference, "exactly what the always-connected client saw after the last id");
    let last = out["last_before"].as_u64().context("last id")?;
    let ids: Vec<u64> = replayed.iter().map(|e| e["id"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(ids, [last + 1, last + 2, last + 3], "ids follow on from Last-Event-ID: {out}");
    assert!(replayed.iter().all(|e| e["type"] == "service"), "no snapshot, no lost: {out}");
    Ok(())
}

#[test]
fn a_gap_larger_than_the_ring_is_reported_as_lost_then_the_rest_is_replayed() -> anyhow::Result<()> {
    let ring = 8;
    let s = Stack::start(&config(Some(ring)))?;
    s.wait_ready(T)?;
    let tok = s.rotate_token();
    // Two stop/start cycles and a start while cut off: 15 changes, more than the ring holds.
    let out = node_client("sse-replay.mjs", &[&s.url(""), &tok, "idle", "2"])?;
    let replayed = out["replayed"].as_array().context("replayed")?;
    let reference = out["reference"].as_array().context("reference")?;
    assert!(reference.len() > ring, "more changes than the ring: {out}");
    let lost = &replayed[0];
    assert_eq!(lost["type"], "lost", "first a lost event: {out}");
    assert_eq!(lost["data"]["after"], out["last_before"], "{lost}");
    assert_eq!(lost["data"]["lost"].as_u64(), Some((reference.len() - ring) as u64), "{lost}");
    assert_eq!(&replayed[1..], &reference[reference.len() - ring..], "then what the ring still held, in order");
    Ok(())
}

#[test]
fn events_have_ids_a_retry_and_a_snapshot_numbered_for_replay() -> anyhow::Result<()> {
    let s = Stack::start(&config(None))?;
    s.wait_ready(T)?;
    let tok = s.rotate_token();
    let raw = curl(&["-sN", "--max-time", "2", "-H", &format!("Authorization: Bearer {tok}"), &s.url("/_supervisor/events")]);
    let text = raw.text();
    assert!(text.contains("retry: "), "retry is set: {text}");
    let mut sse = SseClient::open(&s.url("/_supervisor/events"), &tok)?;
    let snap = sse.next(T)?.context("snapshot")?;
    assert_eq!(snap.event, "snapshot");
    let snap_id: u64 = snap.id.as_deref().context("the snapshot has an id")?.parse()?;
    assert!(s.ctl(&["restart", "idle"]).status.success());
    let e = sse.next(T)?.context("a change")?;
    assert_eq!(e.event, "service");
    assert!(e.id.as_deref().context("id")?.parse::<u64>()? > snap_id, "{e:?}");
    // A reconnect after the snapshot's id replays from there: the same first change.
    let mut again = SseClient::open_with(&s.url("/_supervisor/events"), &[&format!("Authorization: Bearer {tok}"), &format!("Last-Event-ID: {snap_id}")])?;
    let r = again.next(T)?.context("replay")?;
    assert_eq!((r.event.as_str(), r.id.as_deref(), r.data.as_str()), (e.event.as_str(), e.id.as_deref(), e.data.as_str()));
    Ok(())
}

#[test]
fn log_follow_replays_lines_after_last_event_id_and_reports_a_gap_as_lost() -> anyhow::Result<()> {
    let s = Stack::start(&format!("[supervisor]\nlog_lines = 50\n\n{}", config(None)))?;
    s.wait_ready(T)?;
    let tok = s.rotate_token();
    let auth = format!("Authorization: Bearer {tok}");
    let url = s.url("/_supervisor/logs/talker?tail=3&follow=1");
    let mut f = SseClient::open(&url, &tok)?;
    let first = f.next(T)?.context("a line")?;
    let id: u64 = first.id.as_deref().context("lines have ids")?.parse()?;
    let v: Value = serde_json::from_str(&first.data)?;
    assert_eq!(v["seq"].as_u64(), Some(id), "the id is the line's seq");
    drop(f);
    // Reconnect with that id while it is still held: the very next line, nothing skipped.
    let mut r = SseClient::open_with(&url, &[&auth, &format!("Last-Event-ID: {id}")])?;
    let next = r.next(T)?.context("replayed line")?;
    assert_eq!(next.id.as_deref(), Some((id + 1).to_string().as_str()), "{next:?}");
    drop(r);
    // Wait until the ring (50 lines) has moved well past `id`.
    s.wait_for("the ring to move on", T, |s| {
        let j: Value = serde_json::from_slice(&s.ctl(&["--json", "logs", "talker", "--tail", "1"]).stdout).unwrap_or(Value::Null);
        Ok(j["lines"][0]["seq"].as_u64().is_some_and(|n| n > id + 60))
    })?;
    let mut gap = SseClient::open_with(&url, &[&auth, &format!("Last-Event-ID: {id}")])?;
    let lost = gap.next(T)?.context("lost")?;
    assert_eq!(lost.event, "lost", "{lost:?}");
    let l: Value = serde_json::from_str(&lost.data)?;
    let after = gap.next(T)?.context("the oldest held line")?;
    let oldest: u64 = after.id.as_deref().context("id")?.parse()?;
    assert_eq!(l["lost"].as_u64(), Some(oldest - id - 1), "lost counts exactly the missing ids: {l} then {after:?}");
    Ok(())
}

#[test]
fn an_idle_stream_gets_a_comment_heartbeat_every_15_seconds() -> anyhow::Result<()> {
    let s = Stack::start(&config(None))?;
    s.wait_ready(T)?;
    let tok = s.rotate_token();
    // Nothing changes for 20 s: the only thing after the snapshot is the heartbeat comment.
    let r = curl(&["-sN", "--max-time", "20", "-H", &format!("Authorization: Bearer {tok}"), &s.url("/_supervisor/logs/idle?follow=1")]);
    let text = r.text();
    assert!(text.lines().any(|l| l == ": heartbeat"), "a heartbeat within 20 s: {text:?}");
    Ok(())
}
