//! TLS settings: which certificate authorities a registrar's certificate must chain to, and the
//! certificate the gateway shows when registrars or proxies connect to it over TLS.
//!
//! Verification is never optional. By default the system's roots are trusted (what an operator
//! expects of a public SIP trunk); `[tls] ca_file` replaces them with the operator's own CA (a
//! private PKI or a pinned provider CA). The server name checked is the host of the row's SIP
//! URI, not the SRV target (RFC 5922 §4.1), so a DNS answer cannot redirect us to a host that
//! merely holds some valid certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|err| format!("cannot read certificates from {}: {err}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|err| format!("bad certificate in {}: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

/// The client side: roots from `ca_file` only, or the system's when `None`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_certificates(path)? {
                roots
                    .add(cert)
                    .map_err(|err| format!("unusable CA in {}: {err}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no system CA certificates found; set [tls] ca_file to the registrars' CA"
                        .into(),
                );
            }
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS setup: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server side, for TLS connections to the gateway's own port.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certificates(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|err| {
        format!(
            "cannot read a private key from {}: {err}",
            key_file.display()
        )
    })?;
    build_server_config(certs, key)
        .map_err(|err| format!("TLS certificate {}: {err}", cert_file.display()))
}

/// The same from PEM text, for tests and the demo.
pub fn server_config_from_pem(cert_pem: &str, key_pem: &str) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|err| format!("bad certificate: {err}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|err| format!("bad private key: {err}"))?;
    build_server_config(certs, key).map_err(|err| format!("TLS certificate: {err}"))
}

fn build_server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|err| err.to_string())?;
    Ok(Arc::new(config))
}
