//! The client of Alertmanager's API v2: what opswire asks of
//! Alertmanager (today, silences for the `silence` op). Alerts come the
//! other way, through the webhook (`ingest::alertmanager`).

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::config::AlertmanagerConfig;
use crate::protocol::AlertRecord;

/// Why a silence could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    #[error("no Alertmanager is configured (alertmanager.url)")]
    NotConfigured,
    #[error("Alertmanager unreachable: {0}")]
    Unreachable(String),
    #[error("Alertmanager refused the silence: {0}")]
    Refused(String),
}

/// Alertmanager's API, as configured (`[alertmanager]`).
#[derive(Clone)]
pub struct AlertmanagerClient {
    http: reqwest::Client,
    url: Option<String>,
    team_label: String,
}

impl AlertmanagerClient {
    /// Calls time out after `alertmanager.timeout_ms`.
    pub fn new(c: &AlertmanagerConfig) -> AlertmanagerClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(c.timeout_ms))
            .build()
            .unwrap_or_default();
        AlertmanagerClient {
            http,
            url: c.url.clone(),
            team_label: c.team_label.clone(),
        }
    }

    /// Creates a silence in Alertmanager (API v2) matching every label of
    /// `alert` exactly, for `duration`. Returns the silence id.
    pub async fn create_silence(
        &self,
        alert: &AlertRecord,
        duration: Duration,
        created_by: &str,
        comment: &str,
    ) -> Result<String, SilenceError> {
        let Some(base) = &self.url else {
            return Err(SilenceError::NotConfigured);
        };
        let now = SystemTime::now();
        // Every label of the alert, and always the team label (empty when the
        // alert has none, which matches only alerts without it): a silence
        // from one team never mutes another team's alert with more labels.
        let team_label = &self.team_label;
        let mut matchers: Vec<serde_json::Value> = alert
            .labels
            .iter()
            .map(|(k, v)| serde_json::json!({"name": k, "value": v, "isRegex": false, "isEqual": true}))
            .collect();
        if !alert.labels.contains_key(team_label) {
            matchers.push(
                serde_json::json!({"name": team_label, "value": "", "isRegex": false, "isEqual": true}),
            );
        }
        let body = serde_json::json!({
            "matchers": matchers,
            "startsAt": humantime::format_rfc3339_millis(now).to_string(),
            "endsAt": humantime::format_rfc3339_millis(now + duration).to_string(),
            "createdBy": created_by,
            "comment": if comment.is_empty() { "silenced from opswire" } else { comment },
        });
        let url = format!("{}/api/v2/silences", base.trim_end_matches('/'));
        let resp = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| SilenceError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| SilenceError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(SilenceError::Refused(format!("{status}: {}", text.trim())));
        }
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "silenceID")]
            silence_id: String,
        }
        serde_json::from_str::<Created>(&text)
            .map(|c| c.silence_id)
            .map_err(|e| SilenceError::Refused(format!("unexpected answer {text}: {e}")))
    }
}
