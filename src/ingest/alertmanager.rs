//! Alertmanager → live alerts, and silences back into Alertmanager.
//!
//! `POST /api/v1/alerts/alertmanager` takes Alertmanager's webhook payload
//! (version 4). Each alert goes to the team named by its team label
//! (`alertmanager.team_label`); a missing or unknown team goes to
//! `alertmanager.default_team` and is counted. The whole payload is
//! validated before anything is published, so a bad payload changes
//! nothing. Repeats (Alertmanager re-sends firing alerts every
//! `repeat_interval`) are deduplicated by the hub by fingerprint and status.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::auth::{bearer_token, Scope};
use crate::hub::TeamId;
use crate::ingest::Refusal;
use crate::protocol::{AlertRecord, AlertStatus, ErrorCode};
use crate::time::now_micros;

/// Alertmanager's "no end" timestamp for firing alerts.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: String,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: String,
}

/// Checks the webhook's bearer token: the configured `webhook_token`, or
/// an `ingest` JWT for every team (alerts are routed to teams by label).
fn authorize(state: &AppState, req: &HttpRequest) -> Result<(), Refusal> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let Some(token) = header.and_then(bearer_token) else {
        if header.is_none()
            && state.auth.dev_mode()
            && state.config.alertmanager.webhook_token.is_none()
        {
            return Ok(());
        }
        return Err(Refusal::new(
            ErrorCode::Unauthenticated,
            "unauthenticated",
            "missing token (Authorization: Bearer <alertmanager.webhook_token>)",
        ));
    };
    if let Some(expected) = &state.config.alertmanager.webhook_token {
        if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) {
            return Ok(());
        }
    }
    match state.auth.verify(token) {
        Ok(p) if p.scope == Scope::Ingest && p.all_teams() => Ok(()),
        Ok(_) => Err(Refusal::new(
            ErrorCode::Forbidden,
            "forbidden",
            "the webhook needs alertmanager.webhook_token or an ingest token for every team",
        )),
        Err(e) => Err(Refusal::new(
            ErrorCode::Unauthenticated,
            "unauthenticated",
            e.to_string(),
        )),
    }
}

/// One validated alert and where it goes.
struct Routed {
    team: TeamId,
    record: AlertRecord,
}

/// A stable fingerprint from the labels, for senders that give none
/// (Alertmanager always does): FNV-1a over the sorted label pairs.
fn fingerprint_of(labels: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xfe]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

fn validate(state: &AppState, hook: Webhook) -> Result<Vec<Routed>, Refusal> {
    if hook.version != "4" {
        return Err(Refusal::bad(format!(
            "unsupported webhook version `{}` (expected \"4\")",
            hook.version
        )));
    }
    let cfg = &state.config.alertmanager;
    let default_team = cfg
        .default_team
        .as_deref()
        .and_then(|t| state.hub.team_id(t))
        .unwrap_or(0);
    let unrouted = &state.metrics.alerts_unrouted;
    let mut out = Vec::with_capacity(hook.alerts.len());
    let mut misses = Vec::new();
    for (i, a) in hook.alerts.into_iter().enumerate() {
        let status = match a.status.as_str() {
            "firing" => AlertStatus::Firing,
            "resolved" => AlertStatus::Resolved,
            other => {
                return Err(Refusal::bad(format!(
                    "alerts[{i}].status: `{other}` (expected firing or resolved)"
                )))
            }
        };
        let Some(alertname) = a.labels.get("alertname").cloned() else {
            return Err(Refusal::bad(format!("alerts[{i}].labels: no `alertname`")));
        };
        if crate::time::parse_rfc3339_micros(&a.starts_at).is_none() {
            return Err(Refusal::bad(format!(
                "alerts[{i}].startsAt: `{}` is not an RFC 3339 time",
                a.starts_at
            )));
        }
        let ends_at = a.ends_at.filter(|e| e != ZERO_TIME && !e.is_empty());
        if let Some(e) = &ends_at {
            if crate::time::parse_rfc3339_micros(e).is_none() {
                return Err(Refusal::bad(format!(
                    "alerts[{i}].endsAt: `{e}` is not an RFC 3339 time"
                )));
            }
        }
        let team = match a.labels.get(&cfg.team_label) {
            None => {
                misses.push("missing");
                default_team
            }
            Some(name) => match state.hub.team_id(name) {
                Some(t) => t,
                None => {
                    misses.push("unknown");
                    default_team
                }
            },
        };
        let fingerprint = if a.fingerprint.is_empty() {
            fingerprint_of(&a.labels)
        } else {
            a.fingerprint
        };
        out.push(Routed {
            team,
            record: AlertRecord {
                status,
                fingerprint,
                alertname,
                severity: a.labels.get("severity").cloned().unwrap_or_default(),
                labels: a.labels,
                annotations: a.annotations,
                starts_at: a.starts_at,
                ends_at,
                generator_url: a.generator_url,
            },
        });
    }
    // Counted only once the whole payload is known to be good.
    for reason in misses {
        unrouted.with_label_values(&[reason]).inc();
    }
    Ok(out)
}

/// `POST /api/v1/alerts/alertmanager`.
pub async fn webhook(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Err(r) = authorize(&state, &req) {
        return r.respond(&state, "alertmanager");
    }
    let body = match crate::ingest::read_body(&state, &req, payload).await {
        Ok(b) => b,
        Err(r) => return r.respond(&state, "alertmanager"),
    };
    let hook: Webhook = match serde_json::from_slice(&body) {
        Ok(h) => h,
        Err(e) => {
            return Refusal::bad(format!("webhook payload: {e}")).respond(&state, "alertmanager")
        }
    };
    let received = hook.alerts.len();
    let routed = match validate(&state, hook) {
        Ok(r) => r,
        Err(r) => return r.respond(&state, "alertmanager"),
    };
    let ts = now_micros();
    let mut published = 0;
    // All submitted first, in order (in cluster mode they go to the
    // broker together), then answered.
    let items: Vec<_> = routed.iter().map(|r| (r.team, &r.record)).collect();
    let pending = state.hub.submit_alerts(&items, ts);
    for p in pending {
        match p.wait().await {
            Ok(Some(_)) => published += 1,
            Ok(None) => {}
            Err(e) => return Refusal::unavailable(e).respond(&state, "alertmanager"),
        }
    }
    state
        .metrics
        .ingest_total
        .with_label_values(&["alertmanager", "alerts"])
        .inc_by(received as u64);
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "alerts": received,
        "published": published,
        "deduplicated": received - published,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_and_label_sensitive() {
        let a = BTreeMap::from([("alertname".to_string(), "X".to_string())]);
        let mut b = a.clone();
        assert_eq!(fingerprint_of(&a), fingerprint_of(&b));
        b.insert("team".into(), "t".into());
        assert_ne!(fingerprint_of(&a), fingerprint_of(&b));
    }
}
