//! The page events the sensor reads — console calls, browser log entries, uncaught
//! exceptions, the network's request lifecycle, the page's lifecycle — parsed into only
//! the fields it uses (the protocol's own event types carry dozens more), and their JSON
//! entries for checks and `/browser/events`.

use super::cdp::RawEvent;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Longest text kept per entry.
const MAX_TEXT: usize = 2048;
/// Request URLs remembered per page (for naming a failure); past this the books restart.
const MAX_REQUESTS: usize = 5000;

/// One entry of the `/browser/events` ring: its SSE `event:` name and its JSON `data:`.
#[derive(Debug, Clone)]
pub struct BrowserEvent {
    /// `console`, `exception` or `failed_request`.
    pub kind: &'static str,
    /// One line of JSON.
    pub data: Arc<str>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct CallFrame {
    function_name: String,
    url: String,
    line_number: i64,
    column_number: i64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct StackTrace {
    call_frames: Vec<CallFrame>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RemoteObject {
    r#type: String,
    value: Option<Value>,
    description: Option<String>,
    unserializable_value: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ConsoleApiCalled {
    r#type: String,
    args: Vec<RemoteObject>,
    stack_trace: Option<StackTrace>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct LogEntry {
    level: String,
    text: String,
    url: Option<String>,
    line_number: Option<i64>,
    source: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EntryAdded {
    entry: LogEntry,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ExceptionDetails {
    text: String,
    url: Option<String>,
    line_number: i64,
    column_number: i64,
    stack_trace: Option<StackTrace>,
    exception: Option<RemoteObject>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ExceptionThrown {
    exception_details: ExceptionDetails,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Url {
    url: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RequestWillBeSent {
    request_id: String,
    request: Url,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HttpResponse {
    url: String,
    status: i64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResponseReceived {
    request_id: String,
    r#type: String,
    frame_id: Option<String>,
    response: HttpResponse,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct LoadingFailed {
    request_id: String,
    error_text: String,
    canceled: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RequestId {
    request_id: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Lifecycle {
    loader_id: String,
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Dialog {
    r#type: String,
    message: String,
    url: Option<String>,
}

/// What one page event means to the sensor.
pub enum PageEvent {
    /// A `console.*` call or a browser log entry (e.g. "Failed to load resource: 404"):
    /// `{"level","text","url","line"}`.
    Console(Value),
    /// An uncaught exception: `{"message","stack_top"}`.
    Exception(Value),
    /// A request started.
    Request { id: String, url: String },
    /// A response arrived (`document` is the frame of a document response).
    Response { id: String, url: String, status: i64, document: Option<String> },
    /// A request finished.
    Finished { id: String },
    /// A request failed (`canceled`: stopped by the page itself).
    Failed { id: String, error: String, canceled: bool },
    /// A page lifecycle step (`load`, `DOMContentLoaded`, ...) of the navigation `loader`.
    Lifecycle { loader: String, name: String },
    /// `alert`/`confirm`/`prompt`/`beforeunload` opened: the page is blocked until it is
    /// answered. `entry` is its console-shaped record.
    Dialog(Value),
}

fn parse<T: serde::de::DeserializeOwned + Default>(v: &Value) -> T {
    T::deserialize(v).unwrap_or_default()
}

impl PageEvent {
    /// Reads `ev`, or `None` for an event the sensor does not use.
    pub fn from_raw(ev: &RawEvent) -> Option<PageEvent> {
        let p = &ev.params;
        Some(match ev.method.as_ref() {
            "Runtime.consoleAPICalled" => PageEvent::Console(console_entry(&parse(p))),
            "Log.entryAdded" => PageEvent::Console(log_entry(&parse::<EntryAdded>(p).entry)),
            "Runtime.exceptionThrown" => PageEvent::Exception(exception_entry(&parse::<ExceptionThrown>(p).exception_details)),
            "Network.requestWillBeSent" => {
                let r: RequestWillBeSent = parse(p);
                PageEvent::Request { id: r.request_id, url: r.request.url }
            }
            "Network.responseReceived" => {
                let r: ResponseReceived = parse(p);
                let document = if r.r#type == "Document" { r.frame_id } else { None };
                PageEvent::Response { id: r.request_id, url: r.response.url, status: r.response.status, document }
            }
            "Network.loadingFinished" => PageEvent::Finished { id: parse::<RequestId>(p).request_id },
            "Network.loadingFailed" => {
                let f: LoadingFailed = parse(p);
                PageEvent::Failed { id: f.request_id, error: f.error_text, canceled: f.canceled == Some(true) }
            }
            "Page.lifecycleEvent" => {
                let l: Lifecycle = parse(p);
                PageEvent::Lifecycle { loader: l.loader_id, name: l.name }
            }
            "Page.javascriptDialogOpening" => {
                let d: Dialog = parse(p);
                PageEvent::Dialog(json!({"level": "warning", "text": clip(&format!("{} dialog: {}", d.r#type, d.message)), "url": d.url, "line": null}))
            }
            _ => return None,
        })
    }
}

/// `s`, cut to [`MAX_TEXT`] bytes (on a character boundary) with an ellipsis.
pub fn clip(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_string();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn arg_text(a: &RemoteObject) -> String {
    match &a.value {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => a.description.clone().or_else(|| a.unserializable_value.clone()).unwrap_or_else(|| a.r#type.clone()),
    }
}

fn console_entry(e: &ConsoleApiCalled) -> Value {
    let text = e.args.iter().map(arg_text).collect::<Vec<_>>().join(" ");
    let f = e.stack_trace.as_ref().and_then(|s| s.call_frames.first());
    json!({"level": e.r#type, "text": clip(&text), "url": f.map(|f| &f.url), "line": f.map(|f| f.line_number + 1)})
}

fn log_entry(en: &LogEntry) -> Value {
    json!({"level": en.level, "text": clip(&en.text), "url": en.url, "line": en.line_number.map(|l| l + 1), "source": en.source})
}

fn exception_entry(d: &ExceptionDetails) -> Value {
    let desc = d.exception.as_ref().and_then(|x| x.description.clone().or_else(|| x.value.as_ref().map(|v| v.to_string())));
    let message = desc.as_deref().and_then(|s| s.lines().next()).map(str::to_string).unwrap_or_else(|| d.text.clone());
    let stack_top = match d.stack_trace.as_ref().and_then(|s| s.call_frames.first()) {
        Some(f) => json!({"function": f.function_name, "url": f.url, "line": f.line_number + 1, "column": f.column_number + 1}),
        None => match &d.url {
            Some(u) => json!({"function": "", "url": u, "line": d.line_number + 1, "column": d.column_number + 1}),
            None => Value::Null,
        },
    };
    json!({"message": clip(&message), "stack_top": stack_top})
}

/// A page's requests: their URLs (to name a failure) and which are in flight.
#[derive(Default)]
pub struct Requests {
    urls: HashMap<String, String>,
    in_flight: HashSet<String>,
}

impl Requests {
    /// Updates the books; returns `{"url","status","error"}` when `ev` is a failure
    /// (a network error, or a response ≥ 400).
    pub fn on(&mut self, ev: &PageEvent) -> Option<Value> {
        match ev {
            PageEvent::Request { id, url } => {
                if self.urls.len() >= MAX_REQUESTS {
                    // A long-lived page (the agent's) never stops: start the books afresh.
                    self.urls.clear();
                    self.in_flight.clear();
                }
                if !url.starts_with("data:") {
                    self.in_flight.insert(id.clone());
                }
                self.urls.insert(id.clone(), url.clone());
                None
            }
            PageEvent::Response { url, status, .. } if *status >= 400 => Some(json!({"url": clip(url), "status": status, "error": null})),
            PageEvent::Finished { id } => {
                self.in_flight.remove(id);
                None
            }
            PageEvent::Failed { id, error, canceled } => {
                self.in_flight.remove(id);
                if *canceled {
                    return None;
                }
                let url = self.urls.get(id).cloned().unwrap_or_default();
                Some(json!({"url": clip(&url), "status": null, "error": error}))
            }
            _ => None,
        }
    }

    /// Whether no request is in flight.
    pub fn quiet(&self) -> bool {
        self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(method: &'static str, params: Value) -> RawEvent {
        RawEvent { method: method.into(), session_id: Some("S".into()), params }
    }

    #[test]
    fn console_calls_exceptions_and_log_entries_become_entries() {
        let c = raw("Runtime.consoleAPICalled", json!({"type": "error", "args": [{"type": "string", "value": "boom"}, {"type": "number", "value": 42}, {"type": "undefined"}],
            "stackTrace": {"callFrames": [{"functionName": "f", "url": "http://x/a.js", "lineNumber": 9, "columnNumber": 2}]}}));
        let Some(PageEvent::Console(v)) = PageEvent::from_raw(&c) else { panic!("not console") };
        assert_eq!(v, json!({"level": "error", "text": "boom 42 undefined", "url": "http://x/a.js", "line": 10}));
        let e = raw("Runtime.exceptionThrown", json!({"exceptionDetails": {"text": "Uncaught", "lineNumber": 0, "columnNumber": 0,
            "exception": {"type": "object", "description": "Error: nope\n    at App (http://x/App.tsx:3:9)"},
            "stackTrace": {"callFrames": [{"functionName": "App", "url": "http://x/App.tsx", "lineNumber": 2, "columnNumber": 8}]}}}));
        let Some(PageEvent::Exception(v)) = PageEvent::from_raw(&e) else { panic!("not exception") };
        assert_eq!(v["message"], "Error: nope");
        assert_eq!(v["stack_top"], json!({"function": "App", "url": "http://x/App.tsx", "line": 3, "column": 9}));
        let l = raw("Log.entryAdded", json!({"entry": {"level": "error", "text": "Failed to load resource: 404", "source": "network", "url": "http://x/y"}}));
        let Some(PageEvent::Console(v)) = PageEvent::from_raw(&l) else { panic!("not log") };
        assert_eq!((v["level"].as_str(), v["source"].as_str(), v["line"].is_null()), (Some("error"), Some("network"), true));
        assert!(PageEvent::from_raw(&raw("Page.frameNavigated", json!({}))).is_none());
    }

    #[test]
    fn requests_track_flight_and_report_failures_with_their_url() {
        let mut r = Requests::default();
        let ev = |m, p| PageEvent::from_raw(&raw(m, p)).unwrap();
        assert!(r.on(&ev("Network.requestWillBeSent", json!({"requestId": "1", "request": {"url": "http://x/api"}}))).is_none());
        assert!(r.on(&ev("Network.requestWillBeSent", json!({"requestId": "2", "request": {"url": "data:,x"}}))).is_none());
        assert!(!r.quiet());
        let f = r.on(&ev("Network.loadingFailed", json!({"requestId": "1", "errorText": "net::ERR_CONNECTION_REFUSED"}))).unwrap();
        assert_eq!(f, json!({"url": "http://x/api", "status": null, "error": "net::ERR_CONNECTION_REFUSED"}));
        assert!(r.quiet(), "a data: URL is never in flight");
        let n = r.on(&ev("Network.responseReceived", json!({"requestId": "3", "type": "Fetch", "response": {"url": "http://x/missing", "status": 404}}))).unwrap();
        assert_eq!(n["status"], 404);
        assert!(r.on(&ev("Network.loadingFailed", json!({"requestId": "4", "errorText": "net::ERR_ABORTED", "canceled": true}))).is_none());
        let Some(PageEvent::Response { document, .. }) = PageEvent::from_raw(&raw("Network.responseReceived", json!({"requestId": "L", "type": "Document", "frameId": "F", "response": {"url": "http://x/", "status": 200}}))) else { panic!() };
        assert_eq!(document.as_deref(), Some("F"));
    }

    #[test]
    fn long_text_is_clipped_on_a_character_boundary() {
        let s = "é".repeat(MAX_TEXT);
        let c = clip(&s);
        assert!(c.len() <= MAX_TEXT + "…".len() && c.ends_with('…'));
        assert_eq!(clip("short"), "short");
    }
}
