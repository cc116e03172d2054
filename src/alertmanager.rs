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
    /// Or why it could not be built (`alertmanager.ca_file` unusable):
    /// then every silence answers that, rather than the server refusing
    /// to start over silences alone. (`Application::build` checks the
    /// file first, so this is only a file that broke in between.)
    http: Result<reqwest::Client, String>,
    /// `alertmanager.ca_file`, for messages.
    ca_file: Option<std::path::PathBuf>,
    url: Option<String>,
    team_label: String,
}

impl AlertmanagerClient {
    /// Calls time out after `alertmanager.timeout_ms`. An `https://` URL
    /// is checked against the CA(s) of `alertmanager.ca_file`, else the
    /// system's roots (rustls with ring, as everywhere in opswire).
    pub fn new(c: &AlertmanagerConfig) -> AlertmanagerClient {
        let https = c.url.as_deref().is_some_and(|u| u.starts_with("https://"));
        let http = Self::http_client(c, https);
        AlertmanagerClient {
            http,
            ca_file: c.ca_file.clone(),
            url: c.url.clone(),
            team_label: c.team_label.clone(),
        }
    }

    fn http_client(c: &AlertmanagerConfig, https: bool) -> Result<reqwest::Client, String> {
        let builder = reqwest::Client::builder().timeout(Duration::from_millis(c.timeout_ms));
        let builder = if https {
            let tls = crate::tls::client_config(c.ca_file.as_deref())
                .map_err(|e| format!("alertmanager.ca_file {e}"))?;
            builder.use_preconfigured_tls(tls)
        } else {
            builder
        };
        builder.build().map_err(|e| e.to_string())
    }

    /// Checks that the client can be built (`alertmanager.ca_file` holds
    /// usable CA certificates): a start-up check.
    pub fn check(c: &AlertmanagerConfig) -> Result<(), String> {
        let https = c.url.as_deref().is_some_and(|u| u.starts_with("https://"));
        if https && c.ca_file.is_some() {
            Self::http_client(c, true)?;
        }
        Ok(())
    }

    /// Why a call failed, in words: a refused certificate says what to
    /// fix (reqwest's own message only names the URL).
    fn unreachable(&self, e: &reqwest::Error, url: &str) -> SilenceError {
        if let Some(tls) = crate::tls::rustls_error(e) {
            let host = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            let hint = match &self.ca_file {
                Some(p) => format!(
                    "alertmanager.ca_file (now {}, which did not sign it)",
                    p.display()
                ),
                None => "alertmanager.ca_file".to_owned(),
            };
            let r = crate::tls::describe(tls, "Alertmanager", &host, &hint);
            return SilenceError::Unreachable(r.message);
        }
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            msg = format!("{msg}: {s}");
            source = s.source();
        }
        SilenceError::Unreachable(msg)
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
        let http = self
            .http
            .as_ref()
            .map_err(|e| SilenceError::Unreachable(e.clone()))?;
        let resp = http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.unreachable(&e, &url))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.unreachable(&e, &url))?;
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
