//! `/api/v1/silences`: list, add and remove silences. Writes need the bearer token.

use std::sync::{Arc, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, Served};
use crate::silence::{Silence, SilenceSpec, Silences};

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn lock(s: &Served) -> MutexGuard<'_, Silences> {
    s.silences.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every silence with its state (pending, active, expired), and every maintenance window with
/// whether it is open now.
pub async fn list(State(s): State<Arc<Served>>) -> Json<Value> {
    let now = now_ms();
    let set = lock(&s);
    let silences: Vec<Value> = set
        .list()
        .iter()
        .map(|x| {
            let mut v = json!(x);
            v["status"] = json!(x.state(now));
            v
        })
        .collect();
    let windows: Vec<Value> = set
        .windows()
        .iter()
        .map(|w| {
            let mut v = json!(w.config);
            v["open"] = json!(w.open_at(now));
            v
        })
        .collect();
    Json(json!({ "silences": silences, "windows": windows }))
}

/// Adds a silence from an Alertmanager-style body; 201 with its id.
pub async fn create(
    State(s): State<Arc<Served>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&s, &headers)?;
    // Too large (413) or unreadable: said as every error of the API is, in JSON.
    let body =
        body.map_err(|r| ApiError::new(r.status(), format!("the body: {}", r.body_text())))?;
    let spec: SilenceSpec = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not a silence ({e}); expected {{\"matchers\": [{{\"name\", \"value\", \"isRegex\", \"isEqual\"}}], \"endsAt\", \"startsAt\"?, \"createdBy\", \"comment\"}}"),
        )
    })?;
    let silence =
        Silence::new(spec, now_ms()).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.0))?;
    let id = silence.id.clone();
    let mut set = lock(&s);
    if set.list().len() >= crate::silence::MAX_SILENCES {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{} silences already: remove some first",
                crate::silence::MAX_SILENCES
            ),
        ));
    }
    tracing::info!(silence = %id, by = %silence.created_by, comment = %silence.comment, "silence added");
    set.add(silence)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.0))?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

pub async fn remove(
    State(s): State<Arc<Served>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers)?;
    let removed = lock(&s)
        .remove(&id)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.0))?;
    if !removed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no silence with id {id:?}"),
        ));
    }
    tracing::info!(silence = %id, "silence removed");
    Ok(Json(json!({ "removed": id })))
}

/// Writes need `Authorization: Bearer <token>`; without a configured token they are refused.
fn authorize(s: &Served, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &s.token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "writes are disabled: set [http] token or MQWATCH_API_TOKEN",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if same(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong bearer token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs an Authorization: Bearer <token> header",
        )),
    }
}

/// Compares in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
