//! The homeserver client: what a bridge says to its homeserver over the client-server
//! API, as the appservice bot or masquerading as one of its ghost users.
//!
//! - [`client`]: [`HomeserverClient`] (one shared HTTP client, the appservice token) and
//!   [`UserHandle`] (requests made as one user, via the `user_id` query parameter);
//! - [`retry`]: the [`RetryPolicy`] (exponential backoff with jitter, honouring the
//!   homeserver's `retry_after_ms` and `Retry-After`);
//! - [`error`]: [`MatrixError`] and the homeserver's own [`MatrixApiError`];
//! - [`server`]: waiting for the homeserver and the appservice ping;
//! - [`profile`]: registering ghost users and setting their profiles;
//! - [`rooms`]: creating, joining, inviting to and leaving rooms;
//! - [`events`]: sending message and state events (with deterministic transaction ids
//!   and remote timestamps) and redacting;
//! - [`media`]: uploading to and downloading from the media repository;
//! - [`ephemeral`]: typing notifications, read receipts and presence.

pub mod client;
pub mod ephemeral;
pub mod error;
pub mod events;
pub mod media;
pub mod profile;
pub mod retry;
pub mod rooms;
pub mod server;

pub use client::{HomeserverClient, UserHandle};
pub use error::{MatrixApiError, MatrixError, TransientFailure};
pub use media::Media;
pub use retry::RetryPolicy;
pub use rooms::power_level_of;
