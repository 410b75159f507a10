//! Replayable server-sent event streams: a bounded [`Ring`] of numbered items with a live
//! feed, and [`stream`], which frames any [`Feed`] as SSE with `id:` on every item,
//! `Last-Event-ID` replay, a `lost` event when the ring no longer holds what a client
//! missed, `retry:` and a comment heartbeat. Used by `/_supervisor/events` and
//! `logs?follow=1`; meant for any other stream of the API (the browser sensor's events).

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::broadcast;

/// How long a client waits before reconnecting (sent as `retry:`).
pub const RETRY: Duration = Duration::from_secs(2);
/// A comment line this often keeps proxies (E2B's edge, nginx) from closing an idle stream.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Items buffered for one slow client before it has to re-read the ring.
const FEED_CAPACITY: usize = 256;

/// A source of numbered items that can replay what it still holds.
pub trait Feed: Send + Sync + 'static {
    /// What it carries.
    type Item: Clone + Send + Sync + 'static;
    /// The item's id: increasing, from 1, without gaps in what the feed produced.
    fn id_of(item: &Self::Item) -> u64;
    /// Atomically: the held items with an id above `after` (oldest first), how many ids
    /// above `after` are no longer held, and a receiver of every later item.
    fn since(&self, after: u64) -> (Vec<Self::Item>, u64, broadcast::Receiver<Self::Item>);
    /// The id the next item will get.
    fn next_id(&self) -> u64;
}

/// What [`Feed::since`] should read after: `after` itself, or 0 when it is an id this
/// feed has not produced yet (one from before the supervisor restarted): such a client
/// gets everything held, with the rest reported lost, rather than nothing until the ids
/// catch up.
pub fn effective_after(after: u64, next: u64) -> u64 {
    if after >= next {
        0
    } else {
        after
    }
}

/// An item with its id.
#[derive(Debug, Clone)]
pub struct Numbered<T> {
    /// The id (1, 2, ...).
    pub id: u64,
    /// The item.
    pub item: T,
}

/// A ring of the last `cap` items of a stream plus a live feed: what a reconnecting client
/// missed is replayed from it.
pub struct Ring<T> {
    cap: usize,
    inner: Mutex<RingInner<T>>,
    feed: broadcast::Sender<Numbered<T>>,
}

struct RingInner<T> {
    items: VecDeque<Numbered<T>>,
    next: u64,
}

impl<T: Clone + Send + Sync + 'static> Ring<T> {
    /// A ring keeping the last `cap` items (at least 1).
    pub fn new(cap: usize) -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Ring { cap: cap.max(1), inner: Mutex::new(RingInner { items: VecDeque::new(), next: 1 }), feed }
    }

    /// Appends `item`; returns its id.
    pub fn push(&self, item: T) -> u64 {
        let mut r = self.inner.lock().expect("ring lock");
        let n = Numbered { id: r.next, item };
        r.next += 1;
        r.items.push_back(n.clone());
        while r.items.len() > self.cap {
            r.items.pop_front();
        }
        // Sent under the lock, so `since` never sees an item both held and still coming.
        let _ = self.feed.send(n.clone());
        n.id
    }

    /// The id of the newest item (0 when none yet).
    pub fn last_id(&self) -> u64 {
        self.inner.lock().expect("ring lock").next - 1
    }

    /// The newest id and a receiver of every later item, atomically.
    pub fn subscribe(&self) -> (u64, broadcast::Receiver<Numbered<T>>) {
        let r = self.inner.lock().expect("ring lock");
        (r.next - 1, self.feed.subscribe())
    }
}

impl<T: Clone + Send + Sync + 'static> Feed for Ring<T> {
    type Item = Numbered<T>;
    fn id_of(item: &Self::Item) -> u64 {
        item.id
    }
    fn since(&self, after: u64) -> (Vec<Self::Item>, u64, broadcast::Receiver<Self::Item>) {
        let r = self.inner.lock().expect("ring lock");
        let after = effective_after(after, r.next);
        let oldest = r.items.front().map(|n| n.id).unwrap_or(r.next);
        let items = r.items.iter().filter(|n| n.id > after).cloned().collect();
        (items, lost_between(after, oldest, r.next), self.feed.subscribe())
    }
    fn next_id(&self) -> u64 {
        self.inner.lock().expect("ring lock").next
    }
}

/// How many ids above `after` are gone, when the oldest held is `oldest` and the next to
/// come is `next`.
pub fn lost_between(after: u64, oldest: u64, next: u64) -> u64 {
    oldest.min(next).saturating_sub(after + 1)
}

/// The `Last-Event-ID` header as a number (anything else counts as absent).
pub fn last_event_id(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers.get("last-event-id")?.to_str().ok()?.trim().parse().ok()
}

/// The `lost` event: how many items the client will never see, and after which id.
fn lost_event(after: u64, lost: u64) -> Event {
    Event::default().event("lost").data(format!(r#"{{"after":{after},"lost":{lost}}}"#))
}

struct State<F: Feed, R> {
    feed: std::sync::Arc<F>,
    render: R,
    queue: VecDeque<Event>,
    rx: broadcast::Receiver<F::Item>,
    last: u64,
}

/// Frames `feed` as an SSE response: `first` (e.g. a snapshot), then every item after
/// `after` — those the ring holds at once, then live ones — each rendered by `render` and
/// given its id. When the client (or a lagging subscription) missed items the ring no
/// longer holds, a `lost` event says how many. The first event carries `retry:`.
pub fn stream<F, R>(feed: std::sync::Arc<F>, first: Vec<Event>, after: u64, render: R) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: Feed,
    R: Fn(&F::Item) -> Event + Send + 'static,
{
    // An id from the future (see [`effective_after`]) reads from the start.
    let mut last = effective_after(after, feed.next_id());
    let (items, lost, rx) = feed.since(last);
    let mut queue: VecDeque<Event> = first.into();
    if lost > 0 {
        queue.push_back(lost_event(after, lost));
    }
    for it in &items {
        last = F::id_of(it);
        queue.push_back(render(it).id(last.to_string()));
    }
    match queue.pop_front() {
        Some(e) => queue.push_front(e.retry(RETRY)),
        None => queue.push_back(Event::default().retry(RETRY).comment("connected")),
    }
    let st = State { feed, render, queue, rx, last };
    let s = stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.queue.pop_front() {
                return Some((Ok(e), st));
            }
            match st.rx.recv().await {
                Ok(it) => {
                    let id = F::id_of(&it);
                    if id > st.last {
                        st.last = id;
                        return Some((Ok((st.render)(&it).id(id.to_string())), st));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow for the live feed: catch up from the ring, say what is gone.
                    let (items, lost, rx) = st.feed.since(st.last);
                    st.rx = rx;
                    if lost > 0 {
                        st.queue.push_back(lost_event(st.last, lost));
                    }
                    for it in &items {
                        st.last = F::id_of(it);
                        st.queue.push_back((st.render)(it).id(st.last.to_string()));
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_replays_what_the_ring_holds_and_counts_the_rest() {
        let r = Ring::new(3);
        for i in 0..5 {
            r.push(i);
        }
        // Held: ids 3, 4, 5.
        let (items, lost, _) = r.since(3);
        assert_eq!(items.iter().map(|n| n.id).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(lost, 0);
        let (items, lost, _) = r.since(0);
        assert_eq!(items.iter().map(|n| n.id).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(lost, 2, "ids 1 and 2 are gone");
        let (items, lost, _) = r.since(5);
        assert!(items.is_empty());
        assert_eq!(lost, 0);
        let (items, lost, _) = r.since(99);
        assert_eq!(items.iter().map(|n| n.id).collect::<Vec<_>>(), vec![3, 4, 5], "an id from another life of the process reads from the start");
        assert_eq!(lost, 2);
        let empty: Ring<u8> = Ring::new(3);
        let (items, lost, _) = empty.since(7);
        assert!(items.is_empty() && lost == 0);
        assert_eq!(r.last_id(), 5);
    }

    #[tokio::test]
    async fn the_stream_replays_then_follows_without_duplicates() {
        use futures_util::StreamExt;
        let r = std::sync::Arc::new(Ring::new(10));
        r.push("a");
        r.push("b");
        let sse = stream(r.clone(), vec![], 1, |n: &Numbered<&str>| Event::default().data(n.item));
        r.push("c");
        let body = axum::response::IntoResponse::into_response(sse).into_body();
        let mut s = body.into_data_stream();
        let mut text = String::new();
        while text.matches("data:").count() < 2 {
            let chunk = tokio::time::timeout(Duration::from_secs(5), s.next()).await.expect("in time").expect("open").expect("ok");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(text.contains("retry: 2000"), "{text}");
        assert!(text.contains("id: 2") && text.contains("data: b"), "{text}");
        assert!(text.contains("id: 3") && text.contains("data: c"), "{text}");
        assert!(!text.contains("data: a"), "{text}");
    }

    #[test]
    fn last_event_id_parses_numbers_only() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(last_event_id(&h), None);
        h.insert("last-event-id", "42".parse().unwrap());
        assert_eq!(last_event_id(&h), Some(42));
        h.insert("last-event-id", "x".parse().unwrap());
        assert_eq!(last_event_id(&h), None);
    }
}
