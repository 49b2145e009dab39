//! Client certificates for SASL EXTERNAL: a Matrix user may have the bridge make them a
//! key and self-signed certificate for a network. Their puppet presents it on every TLS
//! connection, services know them by its fingerprint (NickServ `CERT ADD`), and they
//! are logged in without a password kept anywhere. The key is sealed in the login store
//! like a password.

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest as _;

/// A user's certificate and key, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The self-signed certificate.
    pub cert_pem: String,
    /// Its private key (a secret).
    pub key_pem: String,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientCert({})", self.fingerprint().unwrap_or_default())
    }
}

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Making the key or certificate failed.
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The stored PEM does not parse.
    #[error("the stored certificate is unreadable: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
}

impl ClientCert {
    /// A new P-256 key and a certificate for it naming `subject` (the Matrix user).
    pub fn generate(subject: &str) -> Result<ClientCert, CertError> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, subject);
        let cert = params.self_signed(&key)?;
        Ok(ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The certificate and key as rustls takes them.
    pub fn der(&self) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), CertError> {
        Ok((
            CertificateDer::from_pem_slice(self.cert_pem.as_bytes())?,
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())?,
        ))
    }

    /// The SHA-256 fingerprint of the certificate in lower-case hex, as IRC servers and
    /// services show it.
    pub fn fingerprint(&self) -> Result<String, CertError> {
        let cert = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())?;
        Ok(sha2::Sha256::digest(cert.as_ref())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_made_read_back_and_told_apart() {
        let alice = ClientCert::generate("@alice:example.org").unwrap();
        let bob = ClientCert::generate("@bob:example.org").unwrap();
        let fingerprint = alice.fingerprint().unwrap();
        assert_eq!(fingerprint.len(), 64);
        assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(fingerprint, bob.fingerprint().unwrap());
        assert!(alice.der().is_ok());
        assert!(!format!("{alice:?}").contains("PRIVATE"));
        let broken = ClientCert {
            key_pem: "not pem".to_owned(),
            ..alice
        };
        assert!(broken.der().is_err());
    }
}
