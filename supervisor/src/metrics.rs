//! `GET /_supervisor/metrics`: the Prometheus text exposition (SPEC §5), encoded by
//! `prometheus-client`.
//!
//! Two kinds of figures. Events (restarts, probe attempts, proxied requests, env writes,
//! resumes) are counted where they happen into process-wide metrics; the per-request ones
//! are pre-registered per label set, so a request costs a few atomic adds and one
//! uncontended lock of its latency histogram, and allocates nothing. States (service
//! state, readiness, memory, CPU, the machine) are read only when a scrape asks, so an
//! idle supervisor spends nothing on them. Labels are bounded: service names come from the
//! config, everything else from fixed sets (no paths, no hosts).

use crate::engine::{State, Supervisor};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The `Content-Type` of the page.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceCause {
    service: String,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    service: String,
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCode {
    route: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceState {
    service: String,
    state: &'static str,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// Which part of port 3000 answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Proxied to the app (Vite).
    App = 0,
    /// The control API under `/_supervisor/`.
    Control = 1,
    /// `/_supervisor/{cdp,mcp,acp}`.
    Passthrough = 2,
}

const ROUTES: [&str; 3] = ["app", "control", "passthrough"];
const CODES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Route {
    /// The route class of a request path.
    pub fn of(path: &str) -> Route {
        let Some(rest) = path.strip_prefix("/_supervisor") else { return Route::App };
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Route::App;
        }
        for p in ["/cdp", "/mcp", "/acp"] {
            if rest.strip_prefix(p).is_some_and(|r| r.is_empty() || r.starts_with('/')) {
                return Route::Passthrough;
            }
        }
        Route::Control
    }
}

/// Process-wide metrics: what is counted where it happens.
struct Metrics {
    restarts: Family<ServiceCause, Counter>,
    probe: HistogramFamily<ProbeLabels>,
    requests: Family<RouteCode, Counter>,
    /// Pre-registered `requests` by [route][code class].
    request_counters: [[Counter; 5]; 3],
    latency: HistogramFamily<RouteLabel>,
    latency_by_route: [Histogram; 3],
    upstream_errors: Family<RouteLabel, Counter>,
    upstream_error_counters: [Counter; 3],
    in_flight: Gauge,
    websockets: Gauge,
    env_writes: Family<ResultLabel, Counter>,
    resumes: Counter,
    reloads: Family<ResultLabel, Counter>,
}

fn probe_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 4.0, 8))
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~33 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let requests: Family<RouteCode, Counter> = Family::default();
    let request_counters = std::array::from_fn(|r| std::array::from_fn(|c| requests.get_or_create(&RouteCode { route: ROUTES[r], code: CODES[c] }).clone()));
    let latency: HistogramFamily<RouteLabel> = Family::new_with_constructor(latency_histogram);
    let latency_by_route = std::array::from_fn(|r| latency.get_or_create(&RouteLabel { route: ROUTES[r] }).clone());
    let upstream_errors: Family<RouteLabel, Counter> = Family::default();
    let upstream_error_counters = std::array::from_fn(|r| upstream_errors.get_or_create(&RouteLabel { route: ROUTES[r] }).clone());
    Metrics {
        restarts: Family::default(),
        probe: Family::new_with_constructor(probe_histogram),
        requests,
        request_counters,
        latency,
        latency_by_route,
        upstream_errors,
        upstream_error_counters,
        in_flight: Gauge::default(),
        websockets: Gauge::default(),
        env_writes: Family::default(),
        resumes: Counter::default(),
        reloads: Family::default(),
    }
});

/// Counts one restart of `service` (`cause`: crash, liveness, memory, env, manual, restart_with).
pub fn restarted(service: &str, cause: &'static str) {
    METRICS.restarts.get_or_create(&ServiceCause { service: service.to_string(), cause }).inc();
}

/// The two histograms (passed, failed) of one probe, looked up once per probe loop.
pub struct ProbeTimers {
    ok: Histogram,
    failed: Histogram,
}

impl ProbeTimers {
    /// Records one attempt.
    pub fn observe(&self, ok: bool, took: Duration) {
        if ok { &self.ok } else { &self.failed }.observe(took.as_secs_f64());
    }
}

/// The timers of `service`'s probe of `kind`.
pub fn probe_timers(service: &str, kind: &'static str) -> ProbeTimers {
    let get = |result| METRICS.probe.get_or_create(&ProbeLabels { service: service.to_string(), kind, result }).clone();
    ProbeTimers { ok: get("success"), failed: get("failure") }
}

/// Counts one env write by its outcome (`ok` or the error code, a fixed set).
pub fn env_write(result: &'static str) {
    METRICS.env_writes.get_or_create(&ResultLabel { result }).inc();
}

/// Counts one reload by its outcome (`ok`, `invalid`, `failed`).
pub fn reload(result: &'static str) {
    METRICS.reloads.get_or_create(&ResultLabel { result }).inc();
}

/// Counts one pause/resume of the VM.
pub fn resumed() {
    METRICS.resumes.inc();
}

/// Counts an upstream that could not be reached or answered with a broken connection.
pub fn upstream_error(route: Route) {
    METRICS.upstream_error_counters[route as usize].inc();
}

/// Held while a spliced WebSocket is open.
pub struct OpenWebSocket(());

impl Drop for OpenWebSocket {
    fn drop(&mut self) {
        METRICS.websockets.dec();
    }
}

/// Counts a WebSocket as open until the guard drops.
pub fn websocket_opened() -> OpenWebSocket {
    METRICS.websockets.inc();
    OpenWebSocket(())
}

/// One request on port 3000, from its arrival to its answer's headers.
pub struct InFlight {
    route: Route,
    began: Instant,
    done: bool,
}

impl InFlight {
    /// A request of `route` arrived.
    pub fn begin(route: Route) -> Self {
        METRICS.in_flight.inc();
        InFlight { route, began: Instant::now(), done: false }
    }

    /// Its answer's headers went out with `status`.
    pub fn finish(mut self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        let m = &*METRICS;
        m.request_counters[self.route as usize][class].inc();
        m.latency_by_route[self.route as usize].observe(self.began.elapsed().as_secs_f64());
        self.done = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.in_flight.dec();
        if !self.done {
            // The client went away (or the handler ended) before an answer: not counted as a
            // status class, but its time is.
            METRICS.latency_by_route[self.route as usize].observe(self.began.elapsed().as_secs_f64());
        }
    }
}

/// The layer of the public router that counts every request once, by route and status
/// class (a hand-written tower layer rather than `axum::middleware::from_fn`, which boxes
/// a future per request: this one allocates nothing).
#[derive(Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> tower_layer::Layer<S> for TrackLayer {
    type Service = Track<S>;
    fn layer(&self, inner: S) -> Track<S> {
        Track(inner)
    }
}

/// See [`TrackLayer`].
#[derive(Clone)]
pub struct Track<S>(S);

impl<S, B, R> tower_service::Service<axum::http::Request<B>> for Track<S>
where
    S: tower_service::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let t = InFlight::begin(Route::of(req.uri().path()));
        TrackFuture { inner: self.0.call(req), t: Some(t) }
    }
}

pin_project_lite::pin_project! {
    /// The answer of a tracked request: counted when its headers are ready.
    pub struct TrackFuture<F> {
        #[pin]
        inner: F,
        t: Option<InFlight>,
    }
}

impl<F, R, E> std::future::Future for TrackFuture<F>
where
    F: std::future::Future<Output = Result<axum::http::Response<R>, E>>,
{
    type Output = F::Output;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let (Ok(resp), Some(t)) = (&out, this.t.take()) {
            t.finish(resp.status().as_u16());
        }
        std::task::Poll::Ready(out)
    }
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Pending => "pending",
        State::Starting => "starting",
        State::Running => "running",
        State::Ready => "ready",
        State::Unhealthy => "unhealthy",
        State::Backoff => "backoff",
        State::Stopping => "stopping",
        State::Stopped => "stopped",
        State::Failed => "failed",
    }
}

const STATES: [State; 9] =
    [State::Pending, State::Starting, State::Running, State::Ready, State::Unhealthy, State::Backoff, State::Stopping, State::Stopped, State::Failed];

/// The supervisor's own resident memory and open descriptors.
fn own_process() -> (u64, u64) {
    let rss = crate::engine::procs::stat(std::process::id() as i32).map(|p| p.rss_bytes).unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
    (rss, fds)
}

fn gauge_f64() -> Gauge<f64, AtomicU64> {
    Gauge::default()
}

/// Builds the page: reads `/proc` and the machine's figures now (call off the event loop).
pub fn render(sup: &Supervisor) -> String {
    let m = &*METRICS;
    let mut reg = Registry::with_prefix("supervisor");
    let all: Vec<_> = crate::engine::procs::live().collect();
    let hz = crate::engine::procs::ticks_per_sec() as f64;
    let state: Family<ServiceState, Gauge> = Family::default();
    let ready: Family<ServiceLabel, Gauge> = Family::default();
    let rss: Family<ServiceLabel, Gauge> = Family::default();
    let cpu: Family<ServiceLabel, Gauge<f64, AtomicU64>> = Family::new_with_constructor(gauge_f64);
    let to_ready: Family<ServiceLabel, Gauge<f64, AtomicU64>> = Family::new_with_constructor(gauge_f64);
    for s in sup.statuses() {
        let l = ServiceLabel { service: s.name.clone() };
        for st in STATES {
            state.get_or_create(&ServiceState { service: s.name.clone(), state: state_name(st) }).set((s.state == st) as i64);
        }
        ready.get_or_create(&l).set(s.ready as i64);
        let (bytes, ticks) = match s.pid {
            Some(pgid) => all.iter().filter(|p| p.pgid == pgid).fold((0, 0), |(r, t), p| (r + p.rss_bytes, t + p.cpu_ticks)),
            None => (0, 0),
        };
        rss.get_or_create(&l).set(bytes as i64);
        cpu.get_or_create(&l).set(ticks as f64 / hz);
        if let (Some(a), Some(b)) = (s.started_at, s.ready_at) {
            if b >= a {
                to_ready.get_or_create(&l).set((b - a) as f64 / 1000.0);
            }
        }
    }
    reg.register("service_state", "1 for the state each service is in, 0 for the others", state);
    reg.register("service_ready", "Whether the service is ready (readiness passed)", ready);
    reg.register("service_restarts", "Restarts of the service by cause (crash, liveness, memory, env, manual, restart_with)", m.restarts.clone());
    reg.register("service_rss_bytes", "Resident memory of the service's process group", rss);
    reg.register("service_cpu_seconds", "CPU time (user+system) used by the live processes of the service's group", cpu);
    reg.register("service_start_to_ready_seconds", "From the last spawn to ready, the last time it became ready", to_ready);
    reg.register("probe_duration_seconds", "Probe attempts by service, kind and result", m.probe.clone());
    reg.register("proxy_requests", "Requests on the public port by route class and status class", m.requests.clone());
    reg.register("proxy_request_duration_seconds", "Time to the answer's headers by route class", m.latency.clone());
    reg.register("proxy_in_flight_requests", "Requests being answered now", m.in_flight.clone());
    reg.register("proxy_upstream_errors", "Upstreams that refused, timed out or broke, by route class", m.upstream_errors.clone());
    reg.register("proxy_open_websockets", "Spliced WebSockets open now", m.websockets.clone());
    reg.register("env_writes", "Env injection writes by result (ok or the error code)", m.env_writes.clone());
    reg.register("reloads", "Config reloads by result", m.reloads.clone());
    reg.register("resume_events", "Pause/resume events of the VM seen", m.resumes.clone());
    let (own_rss, fds) = own_process();
    let g = |v: f64| {
        let g = gauge_f64();
        g.set(v);
        g
    };
    reg.register("ready", "Every required service is ready", g(sup.ready() as u8 as f64));
    reg.register("uptime_seconds", "Seconds since the supervisor started", g(sup.uptime_ms() as f64 / 1000.0));
    reg.register("rss_bytes", "The supervisor's own resident memory", g(own_rss as f64));
    reg.register("open_fds", "The supervisor's open file descriptors", g(fds as f64));
    let sys = crate::sysstats::sample(&sup.app_dir());
    reg.register("system_memory_total_bytes", "Physical memory of the VM", g(sys.mem_total as f64));
    reg.register("system_memory_available_bytes", "Memory available without swapping", g(sys.mem_available as f64));
    reg.register("system_disk_free_bytes", "Free space of the app dir's filesystem", g(sys.disk_free as f64));
    reg.register("system_load1", "One-minute load average", g(sys.load1));
    reg.register("system_load5", "Five-minute load average", g(sys.load5));
    reg.register("system_load15", "Fifteen-minute load average", g(sys.load15));
    reg.register("system_cpus", "Logical CPUs", g(sys.cpus as f64));
    let mut out = String::with_capacity(16 << 10);
    if prometheus_client::encoding::prometheus_text::encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_classes() {
        assert_eq!(Route::of("/"), Route::App);
        assert_eq!(Route::of("/src/main.tsx"), Route::App);
        assert_eq!(Route::of("/_supervisorx"), Route::App);
        assert_eq!(Route::of("/_supervisor/status"), Route::Control);
        assert_eq!(Route::of("/_supervisor"), Route::Control);
        assert_eq!(Route::of("/_supervisor/cdpx"), Route::Control);
        assert_eq!(Route::of("/_supervisor/cdp/json/version"), Route::Passthrough);
        assert_eq!(Route::of("/_supervisor/mcp"), Route::Passthrough);
        assert_eq!(Route::of("/_supervisor/acp"), Route::Passthrough);
    }

    #[test]
    fn a_request_is_counted_once_in_its_class() {
        let before = METRICS.request_counters[Route::Passthrough as usize][3].get();
        InFlight::begin(Route::Passthrough).finish(404);
        assert_eq!(METRICS.request_counters[Route::Passthrough as usize][3].get(), before + 1);
        let flight = METRICS.in_flight.get();
        let t = InFlight::begin(Route::App);
        assert_eq!(METRICS.in_flight.get(), flight + 1);
        drop(t);
        assert_eq!(METRICS.in_flight.get(), flight);
    }
}
