//! `GET /v1/stream`: one WebSocket per signed-in party (bearer token on the upgrade request).
//!
//! Down: the party's [`StreamEvent`]s as JSON text messages, starting with where it stands:
//! `settled` (what its leases folded away came to), then each metered lease not folded
//! (`lease_ready` if running, `lease_ended` with final terms if not), so a client that
//! reconnects meters the same cumulative totals as the node — with a greeting as small as what
//! is running, however long the party has traded.
//! Up: [`StreamRequest`]s; a requester's `proof` is checked, stored (fsync) and counted before
//! the node answers `proof_accepted`; anything refused is answered with an `error` event and
//! changes nothing. Messages above 64 KiB close the stream.

use crate::error::ErrorCode;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use ipsx_api::{StreamEvent, StreamRequest, TokenAmount};

use crate::error::ApiError;
use crate::feed::terms_view;
use crate::server::{AppState, Caller};

const MAX_MESSAGE: usize = 64 * 1024;

/// Upgrades a signed-in caller to its event stream.
pub(crate) async fn stream(
    Caller(party): Caller,
    State(state): State<Arc<AppState>>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // Subscribed before the greeting is read: an event between the two comes twice (clients
    // take lease events idempotently) rather than never.
    let events = state.streams.subscribe(party);
    let mut greeting = Vec::new();
    if let Some(payments) = state.payments()? {
        let ((paid, earned), leases) = payments.position_of(party)?;
        greeting.push(StreamEvent::Settled {
            paid: TokenAmount(paid),
            earned: TokenAmount(earned),
        });
        for lease in leases {
            greeting.push(if lease.ended {
                StreamEvent::LeaseEnded {
                    terms: terms_view(lease.terms),
                    status: ipsx_api::LeaseEnd::Ended,
                    provider: lease.provider,
                    requester: lease.requester,
                }
            } else {
                StreamEvent::LeaseReady {
                    terms: terms_view(lease.terms),
                    provider: lease.provider,
                    requester: lease.requester,
                }
            });
        }
    }
    Ok(upgrade
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(socket, state, party, greeting, events)))
}

fn text(event: &StreamEvent) -> Message {
    Message::Text(serde_json::to_string(event).unwrap_or_default().into())
}

async fn serve(
    mut socket: WebSocket,
    state: Arc<AppState>,
    party: alloy_primitives::Address,
    greeting: Vec<StreamEvent>,
    mut events: tokio::sync::mpsc::Receiver<Arc<str>>,
) {
    for event in &greeting {
        if socket.send(text(event)).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                if socket.send(Message::Text(event.as_ref().into())).await.is_err() {
                    break;
                }
            }
            message = socket.recv() => {
                let reply = match message {
                    Some(Ok(Message::Text(body))) => answer(&state, party, body.as_str()).await,
                    Some(Ok(Message::Binary(_))) => StreamEvent::Error {
                        code: ErrorCode::TextRequired,
                        message: "send JSON text messages".into(),
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                };
                if socket.send(text(&reply)).await.is_err() {
                    break;
                }
            }
        }
    }
}

async fn answer(
    state: &Arc<AppState>,
    party: alloy_primitives::Address,
    body: &str,
) -> StreamEvent {
    let refused = |error: ApiError| StreamEvent::Error {
        code: error.code.to_owned(),
        message: error.message,
    };
    let request: StreamRequest = match serde_json::from_str(body) {
        Ok(request) => request,
        Err(error) => {
            return refused(ApiError::bad_request(ErrorCode::BadJson, error.to_string()));
        }
    };
    match request {
        StreamRequest::Proof { proof } => {
            let Some(payments) = state.payments.running() else {
                return refused(ApiError::bad_request(
                    ErrorCode::PaymentsDisabled,
                    "this node runs without a chain",
                ));
            };
            match payments.receive_proof(party, &proof).await {
                Ok((amount, paid_through)) => {
                    state.metrics.proofs_received.inc();
                    StreamEvent::ProofAccepted {
                        amount: TokenAmount(amount),
                        paid_through,
                    }
                }
                Err(error) => refused(error),
            }
        }
    }
}
