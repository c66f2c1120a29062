//! The JSON API: health, readiness, every entity's status, one entity with its last hour, and
//! the alert episodes with their updates.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, Served};
use crate::status::EntityStatus;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready once a broker answered and every worker judged its first intervals; 503 until then,
/// saying what is missing.
pub async fn readyz(State(s): State<Arc<Served>>) -> (StatusCode, Json<Value>) {
    let sources: Vec<Value> = s
        .links
        .iter()
        .map(|l| json!({ "name": l.name(), "connected": l.is_up(), "reached": l.reached() }))
        .collect();
    let connected = s.links.is_empty() || s.links.iter().any(|l| l.is_up());
    let warmed_up = s.board.warmed_up();
    let ready = connected && warmed_up;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "connected": connected,
        "warmed_up": warmed_up,
        "sources": sources,
    });
    (code, Json(body))
}

/// Every entity, worst status first, with its key figures and when it was last judged.
pub async fn status(State(s): State<Arc<Served>>) -> Json<Value> {
    let mut entities: Vec<(crate::status::Status, String, Value)> = Vec::new();
    for shard in s.board.views() {
        for e in shard.entities() {
            entities.push((e.status, e.entity.display.clone(), e.summary()));
        }
    }
    entities.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut by_status = serde_json::Map::new();
    for st in crate::status::Status::ALL {
        let n = entities.iter().filter(|e| e.0 == st).count();
        by_status.insert(st.as_str().into(), n.into());
    }
    let open = s.board.alerts().open.len();
    Json(json!({
        "entities": entities.into_iter().map(|e| e.2).collect::<Vec<_>>(),
        "by_status": by_status,
        "open_alerts": open,
    }))
}

/// Every entity's id, kind and name: what `/api/v1/entities/{id}` takes.
pub async fn entities(State(s): State<Arc<Served>>) -> Json<Value> {
    let mut list = Vec::new();
    for shard in s.board.views() {
        for e in shard.entities() {
            list.push(json!({ "id": e.id, "kind": e.kind, "name": e.entity.display }));
        }
    }
    Json(json!({ "entities": list }))
}

/// One entity with its partitions and its last hour of figures.
pub async fn entity(
    State(s): State<Arc<Served>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    find(&s, &id, EntityStatus::detail)
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no entity with id {id:?}; /api/v1/entities lists them"),
            )
        })
}

fn find<T>(s: &Served, id: &str, show: impl Fn(&EntityStatus) -> T) -> Option<T> {
    s.board
        .views()
        .find_map(|shard| shard.entities().find(|e| e.id == id).map(&show))
}

/// Open episodes (newest first) with their updates, and the most recently resolved.
pub async fn alerts(State(s): State<Arc<Served>>) -> Json<Value> {
    let book = s.board.alerts();
    let mut open: Vec<_> = book.open.values().collect();
    open.sort_by_key(|e| std::cmp::Reverse(e.latest.started_at));
    Json(json!({ "open": open, "resolved": book.resolved }))
}

/// One episode, open or recently resolved: where an alert's links lead.
pub async fn alert(
    State(s): State<Arc<Served>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let book = s.board.alerts();
    let episode = book
        .open
        .get(&id)
        .or_else(|| book.resolved.iter().find(|e| e.latest.id == id));
    match episode {
        Some(e) => Ok(Json(json!(e))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no open or recent episode with id {id:?}"),
        )),
    }
}

pub async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}", uri.path()),
    )
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint: {}; try /api/v1/status, /api/v1/alerts, /api/v1/entities, \
             /metrics, /healthz or /readyz",
            uri.path()
        ),
    )
}
