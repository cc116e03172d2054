//! Validation: every value checked once, before anything starts; the
//! error names the field (`limits.queue_len: must be at least 1`).

use globset::Glob;

use super::{
    invalid, raise_fd_limit, valid_team_name, Config, ConfigError, TeamConfig, DEFAULT_TEAM,
    FD_RESERVE,
};

impl Config {
    /// Checks every value and fills the defaults that depend on this
    /// machine (the connection limit from the fd limit).
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.validate_sampler()?;
        self.validate_teams()?;
        self.validate_auth()?;
        self.validate_history()?;
        self.validate_limits()?;
        self.validate_websocket()?;
        self.validate_process()?;
        self.validate_alertmanager()?;
        self.validate_ingest()?;
        self.validate_telemetry()?;
        self.validate_broker()?;
        self.validate_web()?;
        self.validate_tls()?;
        Ok(())
    }

    /// `[tls]`: both files or neither, and both there. Whether they hold
    /// a certificate and its key is checked when the server loads them.
    fn validate_tls(&mut self) -> Result<(), ConfigError> {
        let t = &self.tls;
        match (&t.cert_file, &t.key_file) {
            (None, None) => Ok(()),
            (Some(_), None) => Err(invalid(
                "tls.key_file",
                "must be set with tls.cert_file (the certificate's private key)",
            )),
            (None, Some(_)) => Err(invalid(
                "tls.cert_file",
                "must be set with tls.key_file (the certificate the key belongs to)",
            )),
            (Some(cert), Some(key)) => {
                for (field, p) in [("tls.cert_file", cert), ("tls.key_file", key)] {
                    if !p.is_file() {
                        return Err(invalid(
                            field,
                            format!("{} is not a readable file", p.display()),
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// The cluster broker's address and bounds.
    fn validate_broker(&mut self) -> Result<(), ConfigError> {
        let b = &self.broker;
        if b.url.is_some() && !b.cluster.is_empty() {
            return Err(invalid(
                "broker.cluster",
                "set either broker.url (one Redis) or broker.cluster (a Redis Cluster), not both",
            ));
        }
        let urls = b.url.iter().map(|u| ("broker.url", u));
        for (field, url) in urls.chain(b.cluster.iter().map(|u| ("broker.cluster", u))) {
            let scheme = url.split("://").next().unwrap_or_default();
            if !matches!(scheme, "redis" | "rediss") || !url.contains("://") {
                // Never echo the URL: it may hold a password.
                return Err(invalid(
                    field,
                    "must start with redis:// or rediss:// (TLS)",
                ));
            }
            if url.contains("protocol=") {
                return Err(invalid(
                    field,
                    "the protocol is RESP2, chosen by opswire: remove `protocol=` from the URL",
                ));
            }
        }
        let prefix_ok = !b.prefix.is_empty()
            && b.prefix.len() <= 64
            && b.prefix
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(&c));
        if !prefix_ok {
            return Err(invalid(
                "broker.prefix",
                "1-64 of a-z, A-Z, 0-9, '-', '_', '.', ':'",
            ));
        }
        if let Some(node) = &b.node {
            if node.is_empty() || node.len() > 128 || node.chars().any(char::is_whitespace) {
                return Err(invalid("broker.node", "1-128 characters, no spaces"));
            }
        }
        if b.timeout_ms < 10 || b.timeout_ms > 60_000 {
            return Err(invalid(
                "broker.timeout_ms",
                format!("{} is out of range 10..=60000", b.timeout_ms),
            ));
        }
        if b.max_in_flight == 0 {
            return Err(invalid("broker.max_in_flight", "must be at least 1"));
        }
        Ok(())
    }

    /// The tick and the fan-out threads.
    fn validate_sampler(&mut self) -> Result<(), ConfigError> {
        if self.sampler.tick_ms < 50 || self.sampler.tick_ms > 60_000 {
            return Err(invalid(
                "sampler.tick_ms",
                format!("{} is out of range 50..=60000", self.sampler.tick_ms),
            ));
        }
        if !(10..=60_000).contains(&self.sampler.mount_timeout_ms) {
            return Err(invalid("sampler.mount_timeout_ms", "must be 10-60000"));
        }
        if self.sampler.stale_after_ticks == 0 {
            return Err(invalid("sampler.stale_after_ticks", "must be at least 1"));
        }
        if self.sampler.fanout_threads > 64 {
            return Err(invalid(
                "sampler.fanout_threads",
                format!("{} is out of range 0..=64", self.sampler.fanout_threads),
            ));
        }
        Ok(())
    }

    /// The teams (the default one when none is configured), their host globs, and the sampler's team and host name.
    fn validate_teams(&mut self) -> Result<(), ConfigError> {
        if self.teams.is_empty() {
            self.teams.push(TeamConfig {
                name: DEFAULT_TEAM.into(),
                hosts: vec!["*".into()],
            });
        }
        let mut seen = std::collections::HashSet::new();
        for (i, team) in self.teams.iter().enumerate() {
            let field = format!("teams[{i}].name");
            if !valid_team_name(&team.name) {
                return Err(invalid(
                    field,
                    format!(
                        "`{}` is not a valid team name (1-64 of a-z, 0-9, '-', '_', '.')",
                        team.name
                    ),
                ));
            }
            if !seen.insert(team.name.as_str()) {
                return Err(invalid(field, format!("duplicate team `{}`", team.name)));
            }
            for (j, g) in team.hosts.iter().enumerate() {
                Glob::new(g)
                    .map_err(|e| invalid(format!("teams[{i}].hosts[{j}]"), e.to_string()))?;
            }
        }
        if let Some(team) = &self.sampler.team {
            if !self.teams.iter().any(|t| &t.name == team) {
                return Err(invalid(
                    "sampler.team",
                    format!("`{team}` is not one of the configured teams"),
                ));
            }
        }
        if let Some(h) = &self.sampler.host_name {
            if h.is_empty() || h.len() > 253 {
                return Err(invalid("sampler.host_name", "must be 1-253 characters"));
            }
        }
        if let (true, Some(root)) = (self.sampler.enabled, &self.sampler.host_root) {
            // Where the sampler reads the host's mounts (sampler::mounts).
            let table = root.join("proc/1/mountinfo");
            if let Err(e) = std::fs::File::open(&table) {
                return Err(invalid(
                    "sampler.host_root",
                    format!(
                        "cannot read the host's mount table {}: {e} (mount the host's / there read-only, e.g. `-v /:/host:ro,rslave`)",
                        table.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The token key, and dev mode only on loopback (unless `insecure`).
    fn validate_auth(&mut self) -> Result<(), ConfigError> {
        match (&self.auth.jwt_secret, &self.auth.public_key_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "auth",
                    "set either jwt_secret or public_key_file, not both",
                ))
            }
            (Some(s), None) if s.len() < 32 => {
                return Err(invalid(
                    "auth.jwt_secret",
                    format!("is {} bytes; an HS256 secret needs at least 32", s.len()),
                ))
            }
            (None, Some(p)) if !p.is_file() => {
                return Err(invalid(
                    "auth.public_key_file",
                    format!("{} is not a readable file", p.display()),
                ))
            }
            _ => {}
        }
        if let Some(alg) = &self.auth.algorithm {
            if !matches!(alg.as_str(), "RS256" | "ES256" | "HS256") {
                return Err(invalid(
                    "auth.algorithm",
                    format!("`{alg}` is not supported (RS256, ES256 or HS256)"),
                ));
            }
        }
        if self.dev_mode() && !self.bind.ip().is_loopback() && !self.insecure {
            return Err(invalid(
                "bind",
                format!(
                    "{} is not a loopback address and no auth key is configured; \
                     set auth.jwt_secret / OPSWIRE_JWT_SECRET or auth.public_key_file, \
                     or pass --insecure to serve anonymous clients on the network",
                    self.bind
                ),
            ));
        }
        Ok(())
    }

    /// The resume history.
    fn validate_history(&mut self) -> Result<(), ConfigError> {
        if self.history.logs == 0 {
            return Err(invalid("history.logs", "must be at least 1"));
        }
        if self.history.alerts == 0 {
            return Err(invalid("history.alerts", "must be at least 1"));
        }
        Ok(())
    }

    /// Every limit; the connection limit is derived from the fd limit when unset.
    fn validate_limits(&mut self) -> Result<(), ConfigError> {
        let l = &mut self.limits;
        if l.max_frame_bytes < 256 || l.max_frame_bytes > 16 * 1024 * 1024 {
            return Err(invalid(
                "limits.max_frame_bytes",
                "must be between 256 and 16777216",
            ));
        }
        if l.max_auth_frame_bytes < 256 {
            return Err(invalid(
                "limits.max_auth_frame_bytes",
                "must be at least 256",
            ));
        }
        for (field, v) in [
            ("limits.inbound_rate", l.inbound_rate),
            ("limits.inbound_burst", l.inbound_burst),
            ("limits.ingest_rate", l.ingest_rate),
            ("limits.ingest_burst", l.ingest_burst),
            ("limits.subject_inbound_rate", l.subject_inbound_rate),
            ("limits.subject_inbound_burst", l.subject_inbound_burst),
            ("limits.subject_ingest_rate", l.subject_ingest_rate),
            ("limits.subject_ingest_burst", l.subject_ingest_burst),
            ("limits.max_violations", l.max_violations),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if l.queue_len == 0 {
            return Err(invalid("limits.queue_len", "must be at least 1"));
        }
        if l.max_subscriptions == 0 {
            return Err(invalid("limits.max_subscriptions", "must be at least 1"));
        }
        if l.max_firing_alerts == 0 {
            return Err(invalid("limits.max_firing_alerts", "must be at least 1"));
        }
        if l.max_hosts_per_team == 0 {
            return Err(invalid("limits.max_hosts_per_team", "must be at least 1"));
        }
        if l.max_view_patterns == 0 {
            return Err(invalid("limits.max_view_patterns", "must be at least 1"));
        }
        if l.max_view_pattern_len == 0 {
            return Err(invalid("limits.max_view_pattern_len", "must be at least 1"));
        }
        if l.max_host_views_per_team == 0 {
            return Err(invalid(
                "limits.max_host_views_per_team",
                "must be at least 1",
            ));
        }
        let fd_limit = raise_fd_limit();
        // With TLS each connection holds three descriptors: the client's
        // socket and both ends of its loopback hand-off (`tls::front`).
        let per_connection = if self.tls.files().is_some() { 3 } else { 1 };
        let ceiling = (fd_limit.saturating_sub(FD_RESERVE) / per_connection).max(1);
        match l.max_connections {
            None => l.max_connections = Some(ceiling),
            Some(0) => return Err(invalid("limits.max_connections", "must be at least 1")),
            Some(n) if n > ceiling => {
                return Err(invalid(
                    "limits.max_connections",
                    format!(
                        "{n} exceeds this process's file descriptor limit ({fd_limit}) minus a reserve of {FD_RESERVE}{}; at most {ceiling}",
                        if per_connection > 1 { ", over 3 descriptors per TLS connection" } else { "" }
                    ),
                ))
            }
            Some(_) => {}
        }
        let max = l.max_connections.unwrap_or(1);
        match l.max_unauthenticated {
            None => l.max_unauthenticated = Some((max / 4).max(1)),
            Some(0) => return Err(invalid("limits.max_unauthenticated", "must be at least 1")),
            Some(n) if n > max => {
                return Err(invalid(
                    "limits.max_unauthenticated",
                    format!("{n} exceeds limits.max_connections ({max})"),
                ))
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Heartbeat, auth timeouts, token leeway, allowed origins.
    fn validate_websocket(&mut self) -> Result<(), ConfigError> {
        if self.websocket.auth_timeout_busy_ms == 0 {
            return Err(invalid(
                "websocket.auth_timeout_busy_ms",
                "must be at least 1",
            ));
        }
        if self.websocket.heartbeat_s == 0 || self.websocket.heartbeat_s > 3600 {
            return Err(invalid("websocket.heartbeat_s", "must be 1..=3600"));
        }
        if self.websocket.auth_timeout_s == 0 || self.websocket.auth_timeout_s > 3600 {
            return Err(invalid("websocket.auth_timeout_s", "must be 1..=3600"));
        }
        if self.auth.leeway_s > 3600 {
            return Err(invalid("auth.leeway_s", "must be at most 3600"));
        }
        for (i, o) in self.websocket.allowed_origins.iter().enumerate() {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(invalid(
                    format!("websocket.allowed_origins[{i}]"),
                    format!("`{o}` must be `*` or an origin like https://dash.example.com"),
                ));
            }
        }
        Ok(())
    }

    /// Shutdown and logging.
    fn validate_process(&mut self) -> Result<(), ConfigError> {
        if self.shutdown_timeout_s == 0 {
            return Err(invalid("shutdown_timeout_s", "must be at least 1"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!("`{}` is not a valid filter", self.log.level),
            ));
        }
        Ok(())
    }

    /// Alertmanager, and the teams named by other sections.
    fn validate_alertmanager(&mut self) -> Result<(), ConfigError> {
        let am = &self.alertmanager;
        if let Some(u) = &am.url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(invalid(
                    "alertmanager.url",
                    format!("`{u}` must start with http:// or https://"),
                ));
            }
        }
        if let Some(t) = &am.webhook_token {
            if t.len() < 16 {
                return Err(invalid(
                    "alertmanager.webhook_token",
                    "must be at least 16 characters",
                ));
            }
        }
        if am.team_label.is_empty() {
            return Err(invalid("alertmanager.team_label", "must not be empty"));
        }
        for (field, team) in [
            ("alertmanager.default_team", &am.default_team),
            ("ingest.access_log_team", &self.ingest.access_log_team),
        ] {
            if let Some(team) = team {
                if !self.teams.iter().any(|t| &t.name == team) {
                    return Err(invalid(
                        field,
                        format!("`{team}` is not one of the configured teams"),
                    ));
                }
            }
        }
        if am.timeout_ms == 0 {
            return Err(invalid("alertmanager.timeout_ms", "must be at least 1"));
        }
        if let Some(ca) = &am.ca_file {
            if !am.url.as_deref().is_some_and(|u| u.starts_with("https://")) {
                return Err(invalid(
                    "alertmanager.ca_file",
                    "is only used with an https:// alertmanager.url",
                ));
            }
            if !ca.is_file() {
                return Err(invalid(
                    "alertmanager.ca_file",
                    format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        Ok(())
    }

    /// Request bodies of the ingest endpoints.
    fn validate_ingest(&mut self) -> Result<(), ConfigError> {
        if self.ingest.body_timeout_s == 0 || self.ingest.body_timeout_s > 3600 {
            return Err(invalid("ingest.body_timeout_s", "must be 1..=3600"));
        }
        if self.ingest.max_body_bytes < 1024 {
            return Err(invalid("ingest.max_body_bytes", "must be at least 1024"));
        }
        if self.ingest.max_line_bytes < 64
            || self.ingest.max_line_bytes > self.ingest.max_body_bytes
        {
            return Err(invalid(
                "ingest.max_line_bytes",
                "must be at least 64 and at most ingest.max_body_bytes",
            ));
        }
        Ok(())
    }

    /// OTLP export.
    fn validate_telemetry(&mut self) -> Result<(), ConfigError> {
        let t = &self.telemetry;
        if !matches!(t.otlp_protocol.as_str(), "grpc" | "http/protobuf") {
            return Err(invalid(
                "telemetry.otlp_protocol",
                format!(
                    "`{}` is not supported (grpc or http/protobuf)",
                    t.otlp_protocol
                ),
            ));
        }
        if let Some(e) = &t.otlp_endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(invalid(
                    "telemetry.otlp_endpoint",
                    format!("`{e}` must start with http:// or https://"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            return Err(invalid(
                "telemetry.sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        if t.export_queue == 0 {
            return Err(invalid("telemetry.export_queue", "must be at least 1"));
        }
        if t.service_name.is_empty() {
            return Err(invalid("telemetry.service_name", "must not be empty"));
        }
        if t.team_logs_service_name.is_empty() {
            return Err(invalid(
                "telemetry.team_logs_service_name",
                "must not be empty",
            ));
        }
        Ok(())
    }

    /// The dashboard's links out: Grafana's base URL is put in front of
    /// `/explore?…` by the page, so it must be a bare http(s) URL.
    fn validate_web(&mut self) -> Result<(), ConfigError> {
        if let Some(raw) = &self.web.grafana_url {
            let trimmed = raw.trim_end_matches('/');
            let why = grafana_url_problem(trimmed);
            if let Some(why) = why {
                // Never echo a URL that holds a password.
                let shown = if why.contains("credentials") {
                    "the URL"
                } else {
                    raw
                };
                return Err(invalid("web.grafana_url", format!("`{shown}` {why}")));
            }
            self.web.grafana_url = Some(trimmed.to_owned());
        }
        let uid = &self.web.grafana_loki_uid;
        let uid_ok = !uid.is_empty()
            && uid.len() <= 40
            && uid
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
        if !uid_ok {
            return Err(invalid(
                "web.grafana_loki_uid",
                format!("`{uid}` is not a Grafana uid (1-40 of a-z, A-Z, 0-9, '-', '_')"),
            ));
        }
        Ok(())
    }
}

/// Why `url` (without trailing slashes) is not a usable Grafana base URL.
fn grafana_url_problem(url: &str) -> Option<&'static str> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain spaces or control characters");
    }
    let Ok(u) = reqwest::Url::parse(url) else {
        return Some("is not a URL (expected e.g. http://localhost:3000)");
    };
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        return Some("must be an http:// or https:// URL with a host");
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Some(
            "must not carry credentials: every browser that opens the page would see them",
        );
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Some("must end at Grafana's base path: no `?query` or `#fragment` (the page appends /explore?…)");
    }
    None
}
