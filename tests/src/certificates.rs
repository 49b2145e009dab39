//! Test certificates: a CA of the test bed's own and a server certificate it signs, made
//! with the `openssl` command (rustls refuses a self-signed certificate as a server's, so
//! the chain is a real one).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// A CA and a server certificate for one host name, as PEM files.
#[derive(Debug, Clone)]
pub struct TestCertificates {
    /// The CA certificate: what a client trusts.
    pub ca_file: PathBuf,
    /// The server's certificate.
    pub cert_file: PathBuf,
    /// The server's private key.
    pub key_file: PathBuf,
}

impl TestCertificates {
    /// Makes a CA and a certificate for the DNS name `host` in `dir`.
    pub fn make(dir: &Path, host: &str) -> Result<TestCertificates> {
        let path = |name: &str| dir.join(name);
        let certificates = TestCertificates {
            ca_file: path("ca.pem"),
            cert_file: path("server.pem"),
            key_file: path("server.key"),
        };
        let ca_key = path("ca.key");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Trestle test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &text(&ca_key),
            "-out",
            &text(&certificates.ca_file),
        ])?;
        let request = path("server.csr");
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={host}"),
            "-keyout",
            &text(&certificates.key_file),
            "-out",
            &text(&request),
        ])?;
        let extensions = path("server.ext");
        std::fs::write(
            &extensions,
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:{host}\n"
            ),
        )
        .map_err(Error::io(format!("writing {}", extensions.display())))?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &text(&request),
            "-days",
            "2",
            "-CA",
            &text(&certificates.ca_file),
            "-CAkey",
            &text(&ca_key),
            "-CAcreateserial",
            "-extfile",
            &text(&extensions),
            "-out",
            &text(&certificates.cert_file),
        ])?;
        Ok(certificates)
    }
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

fn openssl(args: &[&str]) -> Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .map_err(Error::io("running openssl".to_owned()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "openssl {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}
