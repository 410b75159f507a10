//! The public listener (port 3000): `/_supervisor/healthz|readyz` open, every other
//! `/_supervisor/` route behind the token, everything else proxied to the app.

use crate::api::auth::{require_token, TokenAuth};
use crate::api::{self, ApiState};
use crate::engine::Supervisor;
use crate::proxy::{starting_response, ForwardError, Rewrite, Upstream};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;

pub mod listener;
pub mod passthrough;
use passthrough::PassThrough;

/// The app behind the proxy: its upstream and the service whose readiness gates it.
pub struct AppProxy {
    /// Where the app listens.
    pub upstream: Upstream,
    /// The service serving it (usually `vite`).
    pub service: String,
    /// The running stack.
    pub sup: Arc<Supervisor>,
    /// Paths refused without forwarding (secret files, `/@fs/` outside the app).
    pub secrets: crate::proxy::secrets::SecretPaths,
}

impl AppProxy {
    fn app_ready(&self) -> bool {
        self.sup.is_ready(&self.service).unwrap_or(true)
    }
}

/// The upstream addresses of the pass-through routes.
pub struct PassThroughTargets {
    /// Chromium's DevTools `HOST:PORT`.
    pub cdp: String,
    /// Playwright MCP `HOST:PORT`.
    pub mcp: String,
    /// The ACP service `HOST:PORT`.
    pub acp: String,
}

impl PassThroughTargets {
    /// Loopback addresses of the `chromium`, `playwright-mcp` and `acp` services: their
    /// declared `port`, else the stack's fixed ports (9222, 3001, 3002).
    pub fn from_services(services: &[crate::config::ServiceSpec]) -> Self {
        let addr = |name: &str, default: u16| {
            let port = services.iter().find(|s| s.name == name).and_then(|s| s.port).unwrap_or(default);
            format!("127.0.0.1:{port}")
        };
        PassThroughTargets { cdp: addr("chromium", 9222), mcp: addr("playwright-mcp", 3001), acp: addr("acp", 3002) }
    }
}

/// What the public listener serves: the `/_supervisor` routes, and the app.
#[derive(Clone)]
pub struct Public {
    /// Every `/_supervisor` route (and the app too, as the fallback).
    pub router: Router,
    /// The app, served without the router ([`Public::call`]).
    pub app: Arc<AppProxy>,
}

impl Public {
    /// Serves one request: a request for the app goes straight to [`proxy_app`] (with the
    /// same panic catching and metrics as the router's layers): most requests are these,
    /// and the router's matching, boxed services and layers were about a seventh of the
    /// instructions per proxied request (callgrind, bench/NOTES.md).
    pub async fn call(self, req: hyper::Request<hyper::body::Incoming>) -> Response {
        use futures_util::FutureExt;
        let route = crate::metrics::Route::of(req.uri().path());
        if route != crate::metrics::Route::App {
            // Boxed: the router's future is large and this keeps its code out of this one.
            let mut router = self.router;
            let answer: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>> =
                Box::pin(tower_service::Service::call(&mut router, req));
            return match answer.await {
                Ok(r) => r,
                Err(e) => match e {},
            };
        }
        let t = crate::metrics::InFlight::begin(route);
        let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let answer = std::panic::AssertUnwindSafe(app_boxed(self.app, peer, req.map(axum::body::Body::new))).catch_unwind().await;
        let resp = answer.unwrap_or_else(|_| {
            api::ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal_error", "the supervisor hit an internal error serving this request (logged)").into_response()
        });
        t.finish(resp.status().as_u16());
        resp
    }
}

/// Builds the router of the public listener.
pub fn public_router(state: ApiState, auth: Arc<TokenAuth>, app: Arc<AppProxy>, targets: &PassThroughTargets) -> Router {
    let mut protected: Router = api::token_routes()
        .route("/_supervisor/{*rest}", axum::routing::any(api::not_found))
        .route("/_supervisor", axum::routing::any(api::not_found))
        .layer(axum::middleware::map_response(api::json_errors))
        .with_state(state.clone());
    let routes: [(&'static str, &'static str, &str, bool); 3] =
        [("/_supervisor/cdp", "", &targets.cdp, true), ("/_supervisor/mcp", "/mcp", &targets.mcp, false), ("/_supervisor/acp", "/acp", &targets.acp, false)];
    for (prefix, upstream_path, addr, cdp) in routes {
        let pt = Arc::new(PassThrough { prefix, upstream_path, upstream: Upstream::new(addr), cdp });
        let r: Router = Router::new()
            .route(prefix, axum::routing::any(passthrough::forward))
            .route(&format!("{prefix}/{{*rest}}"), axum::routing::any(passthrough::forward))
            .with_state(pt);
        protected = protected.merge(r);
    }
    let protected = protected.layer(from_fn_with_state(auth, require_token));
    api::open_routes()
        .layer(axum::middleware::map_response(api::json_errors))
        .with_state(state)
        .merge(protected)
        .fallback_service(axum::routing::any(|State(app), ConnectInfo(peer), req| app_boxed(app, peer, req)).with_state(app))
        .layer(api::catch_panic())
        .layer(crate::metrics::TrackLayer)
}

/// [`proxy_app`] behind one boxed future, for both of its callers (the router's fallback and
/// [`Public::call`]): its code is then compiled once (inlined into both it made the binary
/// 170 KB larger).
fn app_boxed(app: Arc<AppProxy>, peer: SocketAddr, req: Request) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>> {
    Box::pin(proxy_app(State(app), ConnectInfo(peer), req))
}

/// Forwards a request to the app, or answers "starting" while it is not ready.
async fn proxy_app(State(app): State<Arc<AppProxy>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request) -> Response {
    if app.secrets.refuse(req.uri().path()).is_some() {
        return api::ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "no such file").into_response();
    }
    // A reference-counted copy (not a String per request): only read on the error paths.
    let accept = req.headers().get(header::ACCEPT).cloned();
    let accept = || accept.as_ref().and_then(|v| v.to_str().ok());
    if !app.app_ready() {
        return starting_response(accept());
    }
    match app.upstream.forward(req, peer, &Rewrite::default()).await {
        Ok(r) => r,
        Err(e) => {
            crate::metrics::upstream_error(crate::metrics::Route::App);
            match e {
                ForwardError::Unavailable(_) => starting_response(accept()),
                e => e.into_response(),
            }
        }
    }
}

/// Binds the public listener (fails at startup when the port is taken).
pub async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Serves `public` on `listener` until the process ends, with the listener limits
/// ([`listener`]): at most `cap` connections (see [`listener::connection_cap`]).
pub async fn serve(listener: tokio::net::TcpListener, public: Public, cap: usize) {
    listener::serve(listener, public, cap).await
}
