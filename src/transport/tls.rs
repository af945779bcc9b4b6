//! TLS settings: which certificate authorities a registrar's certificate must chain to, and the
//! certificate the gateway shows when registrars or proxies connect to it over TLS.
//!
//! Verification is never optional. By default the system's roots are trusted (what an operator
//! expects of a public SIP trunk); `[tls] ca_file` replaces them with the operator's own CA (a
//! private PKI or a pinned provider CA). The server name checked is the host of the row's SIP
//! URI, not the SRV target (RFC 5922 §4.1), so a DNS answer cannot redirect us to a host that
//! merely holds some valid certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;

/// Why a TLS configuration could not be built. The texts name the file at fault; the daemon
/// prints them after "TLS: ".
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read certificates from {}: {source}", path.display())]
    ReadCertificates {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A PEM block that is not a certificate (`path`: None for PEM text).
    #[error("bad certificate{}: {source}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    BadCertificate {
        path: Option<PathBuf>,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate in {}", path.display())]
    NoCertificate { path: PathBuf },
    /// A certificate rustls cannot use as a trust anchor.
    #[error("unusable CA in {}: {source}", path.display())]
    UnusableCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("no system CA certificates found; set [tls] ca_file to the registrars' CA")]
    NoSystemRoots,
    #[error("cannot read a private key from {}: {source}", path.display())]
    ReadKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("bad private key: {0}")]
    BadKey(#[source] rustls::pki_types::pem::Error),
    /// The crypto provider offers none of the protocol versions asked for.
    #[error("TLS setup: {0}")]
    Setup(#[source] rustls::Error),
    /// The certificate and key do not make a usable server identity (a key that does not match).
    #[error("TLS certificate{}: {source}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Certificate {
        path: Option<PathBuf>,
        #[source]
        source: rustls::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|source| TlsError::ReadCertificates {
            path: path.to_path_buf(),
            source,
        })?
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::BadCertificate {
            path: Some(path.to_path_buf()),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The client side: roots from `ca_file` only, or the system's when `None`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certificates(path)? {
                roots.add(cert).map_err(|source| TlsError::UnusableCa {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server side, for TLS connections to the gateway's own port.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::ReadKey {
        path: key_file.to_path_buf(),
        source,
    })?;
    build_server_config(certs, key, Some(cert_file))
}

/// The same from PEM text, for tests and the demo.
#[cfg(feature = "demo")]
pub fn server_config_from_pem(
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::BadCertificate { path: None, source })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(TlsError::BadKey)?;
    build_server_config(certs, key, None)
}

fn build_server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_file: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Certificate {
            path: cert_file.map(Path::to_path_buf),
            source,
        })?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_names_its_cause() {
        let missing = Path::new("/nonexistent/uacreg-ca.pem");
        let err = client_config(Some(missing)).unwrap_err();
        assert!(matches!(err, TlsError::ReadCertificates { .. }), "{err:?}");
        assert!(
            err.to_string().contains("/nonexistent/uacreg-ca.pem"),
            "{err}"
        );

        let dir = std::env::temp_dir().join(format!("uacreg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no PEM here\n").unwrap();
        let err = read_certificates(&empty).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
        let _ = std::fs::remove_dir_all(dir);

        let err = server_config_from_pem("", "").unwrap_err();
        assert!(matches!(err, TlsError::BadKey(_)), "{err:?}");
    }
}
