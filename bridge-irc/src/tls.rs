//! TLS settings for IRC connections: the system's CA certificates, or those of a PEM
//! file the operator names (a private network's own CA). The server name is checked
//! (SNI and certificate) against the configured host. A user's own client certificate
//! (SASL EXTERNAL) is presented when they have one.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A client config trusting `ca_file`'s certificates, or the system's if `None`.
pub fn client_config(ca_file: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    config_with(Arc::new(roots(ca_file)?), None)
}

/// The CA certificates of `ca_file`, or the system's if `None`.
pub fn roots(ca_file: Option<&Path>) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("the CA file {} is not PEM", path.display()))?;
            if certs.is_empty() {
                anyhow::bail!("the CA file {} holds no certificate", path.display());
            }
            for cert in certs {
                roots
                    .add(cert)
                    .with_context(|| format!("a certificate in {} is invalid", path.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                anyhow::bail!("no system CA certificates found; set `ca_file`");
            }
        }
    }
    Ok(roots)
}

/// A client config trusting `roots`, presenting `client` (a certificate and its key)
/// when given.
pub fn config_with(
    roots: Arc<rustls::RootCertStore>,
    client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    Ok(match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(vec![cert], key)
            .context("the client certificate")?,
        None => builder.with_no_client_auth(),
    })
}
