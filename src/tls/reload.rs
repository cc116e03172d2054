//! The server's certificate, picked up again when its files change (a
//! renewal by certbot, cert-manager or a cron job), with no restart.
//!
//! The files are looked at from the handshake path, at most once per
//! [`CHECK_EVERY`] (a `stat` of each, under a lock no handshake waits
//! for): no background task, no stat per handshake. When their mtime or
//! size changed, both are read again; a pair that does not load (a file
//! unreadable or half-written, a key of another certificate) is logged
//! at WARN, naming the file and the reason, counted
//! (`opswire_tls_certificate_reloads_total{outcome="failed"}`), and the
//! certificate in use stays. The pair is tried again at its next change,
//! so a renewal that writes the certificate and then the key succeeds at
//! the second write.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus::IntCounterVec;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{load_certified_key, TlsError};

/// The longest a changed certificate file goes unnoticed (while
/// handshakes come in).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What identifies a version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
    })
}

struct Check {
    last: Instant,
    /// The stamps of the pair last tried (loaded or not).
    seen: (Option<Stamp>, Option<Stamp>),
}

/// A [`ResolvesServerCert`] over `cert_file` and `key_file`.
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    check: Mutex<Check>,
    /// `outcome` = `ok` | `failed`.
    reloads: IntCounterVec,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Loads the pair; fails (naming the file) if it cannot be used.
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
        reloads: IntCounterVec,
    ) -> Result<ReloadingCert, TlsError> {
        let seen = (stamp(cert_file), stamp(key_file));
        let key = load_certified_key(cert_file, key_file)?;
        Ok(ReloadingCert {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new(Arc::new(key)),
            check: Mutex::new(Check {
                last: Instant::now(),
                seen,
            }),
            reloads,
        })
    }

    /// The certificate in use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Looks at the files if [`CHECK_EVERY`] has passed, and loads them
    /// if they changed. A handshake that finds another one checking does
    /// not wait.
    pub fn refresh(&self) {
        let Ok(mut check) = self.check.try_lock() else {
            return;
        };
        if check.last.elapsed() < CHECK_EVERY {
            return;
        }
        check.last = Instant::now();
        let now = (stamp(&self.cert_file), stamp(&self.key_file));
        if now == check.seen {
            return;
        }
        check.seen = now;
        match load_certified_key(&self.cert_file, &self.key_file) {
            Ok(key) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
                self.reloads.with_label_values(&["ok"]).inc();
                tracing::info!(
                    cert_file = %self.cert_file.display(),
                    "TLS certificate reloaded"
                );
            }
            Err(e) => {
                self.reloads.with_label_values(&["failed"]).inc();
                tracing::warn!(
                    error = %e,
                    "TLS certificate files changed but cannot be used; still serving the previous certificate"
                );
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        Some(self.current())
    }
}
