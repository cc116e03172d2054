//! TLS, with rustls and its `ring` provider (no OpenSSL): the server's
//! certificate (read from PEM files, and read again when they change:
//! [`reload`]), the TLS front that terminates it on the listening port
//! ([`front`]), and the client side of the agent (`wss://`) and of the
//! Alertmanager client (`https://`): trusted roots from the system or a
//! CA file, and errors that say what to fix ([`describe`]).

pub mod front;
pub mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// Why certificates or keys could not be loaded. Every message names the
/// file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {reason}", .path.display())]
    File { path: PathBuf, reason: String },
    #[error("{}: the private key does not match the certificate in {} ({reason})", .key.display(), .cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS: {0}")]
    Setup(String),
}

fn file_error(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The one crypto provider opswire uses, named explicitly: rustls picks
/// no process default when more than one provider is compiled in.
///
/// `ring`, though rustls 0.23.48 deprecates its provider for lacking
/// post-quantum key exchange: `aws-lc-rs` would add a second crypto
/// library, built from C (`aws-lc-sys`), next to the `ring` that
/// `rediss://` already uses. X25519 and the NIST curves remain.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file (a chain, or a CA bundle).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(file_error(
            path,
            "no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----`)",
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        file_error(
            path,
            format!("no private key in it (expected PEM `-----BEGIN PRIVATE KEY-----`: {e})"),
        )
    })
}

/// A certificate chain and its key, checked to belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert)?;
    let der = read_key(key)?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason: e.to_string(),
        },
        other => file_error(key, format!("unusable private key ({other})")),
    })
}

/// The roots a client trusts: only the CA certificates of `ca_file` when
/// given (a private CA is then the only one that can vouch for the
/// server, as with `curl --cacert`), else the system's store.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                store
                    .add(cert)
                    .map_err(|e| file_error(path, format!("not a usable CA certificate ({e})")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "cannot read some of the system's trusted certificates");
            }
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no trusted CA certificates found on this system (install ca-certificates, or name a CA file)"
                );
            }
        }
    }
    Ok(store)
}

/// A client configuration over [`roots`]: TLS 1.2 and 1.3, the host name
/// checked, no client certificate.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let roots = roots(ca_file)?;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The rustls error behind `e`, if any: it may sit anywhere in the chain
/// of sources, inside `io::Error`s (which hide their inner error from
/// `source()`: hyper wraps tokio-rustls's `io::Error` in another).
pub fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => err.source(),
        };
    }
    None
}

/// A name a certificate presents, as rustls reports it (`DnsName("x")`):
/// the name alone.
fn bare_name(presented: &str) -> &str {
    match (presented.find("(\""), presented.strip_suffix("\")")) {
        (Some(i), Some(rest)) if i + 2 <= rest.len() => &rest[i + 2..],
        _ => presented,
    }
}

/// What a refused server certificate means, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The message: what was wrong, in words an operator can act on.
    pub message: String,
    /// A mistake of the client's configuration (the name it dials, the
    /// CA it trusts) rather than a state the server can leave on its own
    /// (an expired certificate gets renewed).
    pub configuration: bool,
}

/// Describes a failed TLS handshake with `peer` (what the client was
/// told to reach, e.g. `the hub`), `host` the name it dialled, and
/// `ca_hint` what to pass to trust another CA (e.g. `--ca-file`).
pub fn describe(err: &rustls::Error, peer: &str, host: &str, ca_hint: &str) -> Refusal {
    let config = |message: String| Refusal {
        message,
        configuration: true,
    };
    let transient = |message: String| Refusal {
        message,
        configuration: false,
    };
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForNameContext { presented, .. } => config(format!(
                "TLS: {peer}'s certificate is not valid for {host} (it names {}); \
                 connect with a name the certificate holds",
                if presented.is_empty() {
                    "nothing".to_owned()
                } else {
                    let names: Vec<&str> = presented.iter().map(|p| bare_name(p)).collect();
                    names.join(", ")
                }
            )),
            CertificateError::NotValidForName => config(format!(
                "TLS: {peer}'s certificate is not valid for {host}; \
                 connect with a name the certificate holds"
            )),
            CertificateError::UnknownIssuer => config(format!(
                "TLS: {peer}'s certificate is signed by an unknown CA; \
                 pass {ca_hint} with the CA certificate that signed it"
            )),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => transient(
                format!("TLS: {peer}'s certificate has expired ({c}); renew it"),
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                transient(format!(
                    "TLS: {peer}'s certificate is not valid yet ({c}); check both clocks"
                ))
            }
            other => config(format!("TLS: {peer}'s certificate was refused: {other}")),
        },
        rustls::Error::InappropriateMessage { .. } | rustls::Error::InvalidMessage(_) => transient(
            format!("TLS: {peer} did not answer with TLS ({err}); is it serving TLS on that port?"),
        ),
        other => transient(format!("TLS: handshake with {peer} failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_names_are_shown_bare() {
        assert_eq!(bare_name("DnsName(\"hub.example\")"), "hub.example");
        assert_eq!(bare_name("hub.example"), "hub.example");
        assert_eq!(bare_name("IpAddress(\"10.0.0.1\")"), "10.0.0.1");
    }

    #[test]
    fn refusals_say_what_to_fix_and_whether_it_is_configuration() {
        let unknown = describe(
            &rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            "the hub",
            "h",
            "--ca-file",
        );
        assert!(unknown.configuration);
        assert!(unknown.message.contains("unknown CA; pass --ca-file"));
        let expired = describe(
            &rustls::Error::InvalidCertificate(CertificateError::Expired),
            "the hub",
            "h",
            "--ca-file",
        );
        assert!(!expired.configuration);
        assert!(
            expired.message.contains("has expired"),
            "{}",
            expired.message
        );
    }

    #[test]
    fn a_rustls_error_is_found_inside_nested_io_errors() {
        let inner = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let outer = std::io::Error::other(inner);
        assert!(matches!(
            rustls_error(&outer),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ));
        assert!(rustls_error(&std::io::Error::other("plain")).is_none());
    }

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pem");
        std::fs::write(&p, "nothing here").unwrap();
        let e = read_certs(&p).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: no certificate in it", p.display())),
            "{e}"
        );
        let e = read_key(&p).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: no private key in it", p.display())),
            "{e}"
        );
        let e = roots(Some(&dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
