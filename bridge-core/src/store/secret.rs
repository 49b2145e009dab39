//! Secrets at rest (IRC passwords, SASL credentials): sealed with XChaCha20-Poly1305 under
//! the key from the config, bound to the row they belong to, so a database dump alone
//! reveals nothing and a sealed value copied to another row does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The prefix of a sealed value, naming the format so it can change later.
const FORMAT: &str = "xc20p1:";

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The configured key is not 32 bytes of base64.
    #[error("the encryption key must be 32 bytes, base64-encoded")]
    BadKey,
    /// The stored value is not in the sealed format.
    #[error("the stored secret is not in a known format")]
    BadFormat,
    /// The value does not open with this key and row: wrong key, or tampered.
    #[error("the stored secret does not open with the configured key")]
    WrongKey,
}

/// Seals and opens secrets with one key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// A box for a base64-encoded 32-byte key.
    pub fn from_base64(key: &str) -> Result<SecretBox, SecretError> {
        let bytes = STANDARD
            .decode(key.trim())
            .map_err(|_| SecretError::BadKey)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SecretError::BadKey)?;
        Ok(SecretBox { cipher })
    }

    /// A box for the configured key.
    pub fn from_key(key: &crate::config::EncryptionKey) -> SecretBox {
        SecretBox {
            cipher: XChaCha20Poly1305::new(key.as_bytes().into()),
        }
    }

    /// A fresh random key, base64-encoded (for `generate-config`).
    pub fn generate_key() -> String {
        STANDARD.encode(rand::random::<[u8; 32]>())
    }

    /// Seals `plaintext` for the row named by `context`.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let nonce_bytes = rand::random::<[u8; 24]>();
        let nonce = XNonce::from_slice(&nonce_bytes);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: context.as_bytes(),
        };
        #[allow(clippy::expect_used)]
        let sealed = self
            .cipher
            .encrypt(nonce, payload)
            .expect("XChaCha20-Poly1305 encryption with a valid key cannot fail");
        let mut bytes = nonce_bytes.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{FORMAT}{}", STANDARD.encode(bytes))
    }

    /// Opens a value sealed for the row named by `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SecretError> {
        let encoded = sealed.strip_prefix(FORMAT).ok_or(SecretError::BadFormat)?;
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::BadFormat)?;
        if bytes.len() < 24 {
            return Err(SecretError::BadFormat);
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let payload = Payload {
            msg: ciphertext,
            aad: context.as_bytes(),
        };
        let plaintext = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| SecretError::WrongKey)?;
        String::from_utf8(plaintext).map_err(|_| SecretError::BadFormat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_row() {
        let key = SecretBox::generate_key();
        let secrets = SecretBox::from_base64(&key).unwrap();
        let sealed = secrets.seal("hunter2", "login:@a:x:irc");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(secrets.open(&sealed, "login:@a:x:irc").unwrap(), "hunter2");
        assert!(matches!(
            secrets.open(&sealed, "login:@b:x:irc"),
            Err(SecretError::WrongKey)
        ));
        let other = SecretBox::from_base64(&SecretBox::generate_key()).unwrap();
        assert!(matches!(
            other.open(&sealed, "login:@a:x:irc"),
            Err(SecretError::WrongKey)
        ));
        assert!(matches!(
            secrets.open("plain", "x"),
            Err(SecretError::BadFormat)
        ));
        assert!(matches!(
            SecretBox::from_base64("c2hvcnQ="),
            Err(SecretError::BadKey)
        ));
    }

    #[test]
    fn sealing_twice_gives_different_values() {
        let secrets = SecretBox::from_base64(&SecretBox::generate_key()).unwrap();
        assert_ne!(secrets.seal("a", "c"), secrets.seal("a", "c"));
    }
}
