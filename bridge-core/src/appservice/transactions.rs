//! `PUT /_matrix/app/v1/transactions/{txnId}` (and the legacy `PUT /transactions/{txnId}`):
//! parses a pushed transaction and hands it to the [`TransactionSink`], answering `200 {}`
//! only once the sink holds it, so a failure makes the homeserver send it again.
//!
//! [`TransactionSink`]: crate::transaction::TransactionSink

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use ruma::OwnedTransactionId;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ErrorCode, MatrixError};
use super::extract::{PathParam, read_body};
use crate::metrics::TransactionLabels;
use crate::transaction::{Accepted, BodyError, IncomingTransaction, SinkError, TransactionBody};

/// Handles one pushed transaction.
pub(crate) async fn put_transaction(
    State(state): State<AppState>,
    PathParam(txn_id): PathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, MatrixError> {
    if txn_id.is_empty() {
        return Err(MatrixError::invalid_param("the transaction id is empty"));
    }
    let txn_id = OwnedTransactionId::from(txn_id);
    let bytes = read_body(&headers, body, state.body_limit).await?;
    let body = TransactionBody::parse(&bytes).map_err(|error| match error {
        BodyError::NotJson(error) => {
            MatrixError::not_json(format!("the body is not JSON: {error}"))
        }
        BodyError::BadJson(message) => MatrixError::bad_json(message),
    })?;
    let event_count = body.events.len();

    // The sink runs in its own task so that a homeserver hanging up mid-request cannot
    // cancel a commit halfway; the homeserver's retry then finds it stored.
    let sink = state.sink.clone();
    let transaction = IncomingTransaction {
        txn_id: txn_id.clone(),
        body,
    };
    let outcome = tokio::spawn(async move { sink.accept(transaction).await })
        .await
        .unwrap_or_else(|join_error| Err(SinkError::Failed(join_error.to_string())));

    match outcome {
        Ok(Accepted::Stored) => {
            // The ingest counts the events it stored (after removing repeats).
            count_transaction(&state, "stored");
            tracing::debug!(?txn_id, events = event_count, "transaction stored");
            Ok(Json(json!({})))
        }
        Ok(Accepted::AlreadySeen) => {
            count_transaction(&state, "duplicate");
            tracing::debug!(?txn_id, "transaction seen before");
            Ok(Json(json!({})))
        }
        Err(SinkError::OutOfOrder(missing)) => {
            count_transaction(&state, "out_of_order");
            tracing::info!(
                ?txn_id,
                missing,
                "refused once after a gap in the numbering"
            );
            Err(MatrixError::new(
                StatusCode::CONFLICT,
                ErrorCode::Unknown,
                format!("transactions from {missing} were not received; send any unsent first"),
            ))
        }
        Err(error) => {
            count_transaction(&state, "failed");
            tracing::error!(?txn_id, %error, "could not accept a transaction");
            Err(MatrixError::internal(
                "the transaction could not be stored; retry later",
            ))
        }
    }
}

fn count_transaction(state: &AppState, outcome: &'static str) {
    state
        .metrics
        .transactions
        .get_or_create(&TransactionLabels { outcome })
        .inc();
}
