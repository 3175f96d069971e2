//! The node's event and proof stream (`GET /v1/stream`, a WebSocket).

use futures_util::{SinkExt, StreamExt};
use ipsx_api::{StreamEvent, StreamRequest};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::SdkError;

/// A signed-in party's stream: [`StreamEvent`]s down, [`StreamRequest`]s up.
#[derive(Debug)]
pub struct EventStream {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl EventStream {
    pub(crate) async fn connect(base: &str, token: &str) -> Result<Self, SdkError> {
        let url = format!(
            "{}/v1/stream",
            base.replacen("http://", "ws://", 1)
                .replacen("https://", "wss://", 1)
        );
        let mut request = url
            .into_client_request()
            .map_err(|e| SdkError::Stream(e.to_string()))?;
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| SdkError::Stream("the session token is not a header value".into()))?;
        request.headers_mut().insert("authorization", bearer);
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|error| match error {
                // The node refused the upgrade with an answer of its own (not_leader, …).
                tokio_tungstenite::tungstenite::Error::Http(response) => {
                    let status = reqwest::StatusCode::from_u16(response.status().as_u16())
                        .unwrap_or(reqwest::StatusCode::BAD_GATEWAY);
                    let body = response
                        .body()
                        .as_deref()
                        .and_then(|bytes| serde_json::from_slice(bytes).ok());
                    crate::api_error(status, body)
                }
                error => SdkError::Stream(error.to_string()),
            })?;
        Ok(Self { socket })
    }

    /// The next event; `None` once the node closed the stream.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, SdkError>> {
        loop {
            match self.socket.next().await? {
                Ok(Message::Text(text)) => {
                    return Some(
                        serde_json::from_str(text.as_str())
                            .map_err(|e| SdkError::Stream(format!("unreadable event: {e}"))),
                    );
                }
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(error) => return Some(Err(SdkError::Stream(error.to_string()))),
            }
        }
    }

    /// Sends a request (a proof).
    pub async fn send(&mut self, request: &StreamRequest) -> Result<(), SdkError> {
        let text = serde_json::to_string(request).map_err(|e| SdkError::Stream(e.to_string()))?;
        self.socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| SdkError::Stream(e.to_string()))
    }

    /// Sends a raw text message (for clients speaking a newer protocol, and tests of the
    /// node's refusals).
    pub async fn send_text(&mut self, text: String) -> Result<(), SdkError> {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| SdkError::Stream(e.to_string()))
    }

    /// Closes the stream.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
