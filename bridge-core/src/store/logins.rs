//! Logins (puppets): a Matrix user's identity on a network, its settings, and its secret
//! sealed with the configured key.

use sqlx::Row;

use super::{SecretBox, Store, StoreError, now_ms};

/// One Matrix user's login on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The Matrix user.
    pub user_id: String,
    /// The network (connector instance), e.g. `irc:libera`.
    pub network: String,
    /// Their identity there (an IRC nick, an XMPP JID), once known.
    pub remote_id: Option<String>,
    /// Connector-owned settings, JSON.
    pub settings: String,
    /// The secret in clear (a password), if any.
    pub secret: Option<String>,
}

fn secret_context(user_id: &str, network: &str) -> String {
    format!("login\u{0}{user_id}\u{0}{network}")
}

impl Store {
    /// Saves a login, sealing its secret.
    pub async fn save_login(&self, login: &Login, secrets: &SecretBox) -> Result<(), StoreError> {
        let sealed = login
            .secret
            .as_deref()
            .map(|s| secrets.seal(s, &secret_context(&login.user_id, &login.network)));
        sqlx::query(
            "INSERT INTO logins (user_id, network, remote_id, settings, secret, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (user_id, network) DO UPDATE SET remote_id = $3, settings = $4, \
             secret = $5, updated_at = $6",
        )
        .bind(&login.user_id)
        .bind(&login.network)
        .bind(login.remote_id.as_deref())
        .bind(&login.settings)
        .bind(sealed.as_deref())
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Loads a login, opening its secret.
    pub async fn load_login(
        &self,
        user_id: &str,
        network: &str,
        secrets: &SecretBox,
    ) -> Result<Option<Login>, StoreError> {
        let row = sqlx::query(
            "SELECT remote_id, settings, secret FROM logins WHERE user_id = $1 AND network = $2",
        )
        .bind(user_id)
        .bind(network)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let secret = row
            .try_get::<Option<String>, _>("secret")?
            .map(|sealed| secrets.open(&sealed, &secret_context(user_id, network)))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("login secret of {user_id}: {e}")))?;
        Ok(Some(Login {
            user_id: user_id.to_owned(),
            network: network.to_owned(),
            remote_id: row.try_get("remote_id")?,
            settings: row.try_get("settings")?,
            secret,
        }))
    }

    /// Deletes a login.
    pub async fn delete_login(&self, user_id: &str, network: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM logins WHERE user_id = $1 AND network = $2")
            .bind(user_id)
            .bind(network)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
