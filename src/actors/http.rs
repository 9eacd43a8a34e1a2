//! The HTTP side of a replica (`--metrics-addr`): `GET /metrics` in the Prometheus text format and
//! `GET /health` for load balancers. Served by actix-web on the replica's own actix runtime.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};

use super::metrics::GaugeValues;
use super::status::StatusBoard;

/// A replica is healthy only while it has applied within this many entries of its commit index.
pub const HEALTH_MAX_APPLY_LAG: u64 = 10_000;

/// Why a replica is not healthy, if it is not.
pub fn unhealthy_reason(status: &StatusBoard) -> Option<String> {
    if let Some(why) = status.stop_reason() {
        return Some(format!("consensus stopped: {why}"));
    }
    if status.is_removed() {
        return Some("removed from the cluster".into());
    }
    if let Some(why) = status.disk_full() {
        return Some(format!("disk full, writes refused: {why}"));
    }
    if status.leader() == 0 {
        return Some("no leader known".into());
    }
    let lag = status.commit_index().saturating_sub(status.applied_index());
    if lag > HEALTH_MAX_APPLY_LAG {
        return Some(format!("applied index {lag} entries behind the commit index"));
    }
    None
}

/// The gauges' values from the board.
pub fn gauge_values(status: &StatusBoard) -> GaugeValues {
    GaugeValues {
        is_leader: status.role_name() == "leader",
        term: status.term(),
        commit_index: status.commit_index(),
        applied_index: status.applied_index(),
        snapshot_index: status.snapshot_index(),
        last_log_index: status.last_log_index(),
        log_bytes: status.log_bytes(),
        keys: status.key_count(),
        elections: status.elections(),
        clients: status.connected_clients(),
        disk_full: status.is_disk_full(),
    }
}

async fn metrics(status: web::Data<Arc<StatusBoard>>) -> HttpResponse {
    let text = status.metrics.render(gauge_values(&status));
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text)
}

async fn health(status: web::Data<Arc<StatusBoard>>) -> HttpResponse {
    let body = |healthy: bool, reason: &str| {
        serde_json::json!({
            "health": healthy,
            "reason": reason,
            "id": status.id,
            "role": status.role_name(),
            "leader": status.leader(),
            "term": status.term(),
            "commit_index": status.commit_index(),
            "applied_index": status.applied_index(),
        })
        .to_string()
    };
    match unhealthy_reason(&status) {
        None => HttpResponse::Ok().content_type("application/json").body(body(true, "")),
        Some(why) => {
            HttpResponse::ServiceUnavailable().content_type("application/json").body(body(false, &why))
        }
    }
}

/// HTTP connections served at once.
pub const HTTP_MAX_CONNECTIONS: usize = 256;

/// Binds `addr` and serves `/metrics` and `/health` for `status` on the current actix system
/// until it stops; answers the bound address.
pub fn start(addr: &str, status: Arc<StatusBoard>) -> std::io::Result<SocketAddr> {
    let data = web::Data::new(status);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(metrics))
            .route("/health", web::get().to(health))
    })
    .workers(1)
    // A scraper and a health checker or two use it: past this, connections wait in the backlog
    // (actix-web's default, 25,000, would take descriptors the replica's log and peers need).
    .max_connections(HTTP_MAX_CONNECTIONS)
    .backlog(HTTP_MAX_CONNECTIONS as u32)
    .disable_signals()
    .bind(addr)?;
    let bound = server.addrs().first().copied().ok_or_else(|| std::io::Error::other("nothing bound"))?;
    actix_rt::spawn(server.run());
    Ok(bound)
}
