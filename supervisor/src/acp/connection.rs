//! One transport connection (HTTP session or WebSocket) attached to the [`Bridge`], and
//! the axum router: the official `AcpHttpServer` at `/acp` plus our `/health`.

use super::bridge::{Bridge, CONNECTION_QUEUE, MAX_CONNECTIONS};
use agent_client_protocol::{Agent, Channel, Client, ConnectTo, ConnectionDriver};
use agent_client_protocol_http::{AcpHttpServer, ServerOptions};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use std::sync::Arc;

/// The agent side of one connection, as the transport server sees it.
struct BridgeConnection(Arc<Bridge>);

impl ConnectTo<Client> for BridgeConnection {
    async fn connect_to(self, client: impl ConnectTo<Agent>) -> agent_client_protocol::Result<()> {
        let (channel, driver) = self.into_channel_and_future();
        let driver = driver.expect("bridge connections have a driver");
        let (a, b) = tokio::join!(driver, ConnectTo::<Client>::connect_to(channel, client));
        a.and(b)
    }

    fn into_channel_and_future(self) -> (Channel, Option<ConnectionDriver>) {
        let (ours, theirs) = Channel::duplex();
        let bridge = self.0;
        let driver = ConnectionDriver::new(async move {
            let (mut from_client, to_client) = ours.into_parts();
            let (tx, mut from_agent) = tokio::sync::mpsc::channel(CONNECTION_QUEUE);
            let Some(id) = bridge.attach(tx) else {
                tracing::warn!("refusing an ACP connection: {MAX_CONNECTIONS} are attached (or the agent has exited)");
                return Ok(());
            };
            tracing::info!(connection = id, attached = bridge.connections(), "client attached");
            // The transport aborts this future on DELETE / WebSocket close: detach on drop.
            struct Detach(Arc<Bridge>, u64);
            impl Drop for Detach {
                fn drop(&mut self) {
                    self.0.detach(self.1);
                    tracing::info!(connection = self.1, "client detached");
                }
            }
            let _detach = Detach(bridge.clone(), id);
            // Two loops, so a client waiting on the agent's full stdin still gets its answers.
            let inbound = async {
                while let Some(frame) = from_client.next().await {
                    if let Err(e) = bridge.from_client(id, frame).await {
                        tracing::warn!(connection = id, "{e}");
                        break;
                    }
                }
            };
            let outbound = async {
                // Ends when the bridge drops this connection (e.g. too slow) or the transport closes.
                while let Some(frame) = from_agent.recv().await {
                    if to_client.unbounded_send(frame).is_err() {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = inbound => {}
                _ = outbound => {}
            }
            Ok(())
        });
        (theirs, Some(driver))
    }
}

/// `/acp` (official transport) and `/health`.
pub fn router(bridge: Arc<Bridge>) -> Router {
    let b = bridge.clone();
    let acp = AcpHttpServer::new(move || BridgeConnection(b.clone()))
        .with_options(ServerOptions::default().with_health_endpoint(false))
        .into_router();
    let health = Router::new().route("/health", get(health)).with_state(bridge);
    acp.merge(health)
}

async fn health(axum::extract::State(b): axum::extract::State<Arc<Bridge>>) -> impl IntoResponse {
    if b.healthy() {
        (StatusCode::OK, Json(serde_json::json!({"status": "ok", "agent_pid": b.agent_pid})))
    } else {
        let status = if b.has_exited() { "exited" } else { "starting" };
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"status": status, "agent_pid": b.agent_pid})))
    }
}
