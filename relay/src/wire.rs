//! The control stream: the first bidirectional stream a provider opens on its connection. The
//! provider says who it is with a ticket from the node; the relay answers with the address it
//! sees the connection come from (the provider's public IP, which its offers must name) or a
//! typed refusal. Each message is a 2-byte big-endian length and that many bytes of JSON.
//!
//! Every other stream is opened by the relay and carries one requester connection, byte for
//! byte, from its first SOCKS5 or HTTP byte on.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The ALPN protocol both ends ask for.
pub const ALPN: &[u8] = b"ipsx-relay/1";
/// The name in the relay's certificate (the certificate itself is pinned, not the name).
pub const SERVER_NAME: &str = "ipsx-relay";
/// The largest control message either side accepts.
const MAX_MESSAGE: usize = 4096;

/// The provider's first message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The ticket the node issued to the provider.
    pub ticket: String,
}

/// The relay's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Answer {
    /// Connected: requester connections for `observed` come down this connection.
    Welcome {
        /// The source address the relay sees: the IP the provider may offer.
        observed: IpAddr,
        /// Back within the grace from the same IP: its offers and deals still stand. When
        /// false, the provider must offer again.
        resumed: bool,
    },
    /// Not connected, and why.
    Refused {
        /// What went wrong.
        code: RefusalCode,
    },
}

/// Why the relay refused a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The ticket does not verify or has expired: ask the node for a new one.
    #[error("the relay ticket is invalid or expired")]
    BadTicket,
    /// Another provider is connected from the same public IP.
    #[error("another provider serves this public IP")]
    IpInUse,
    /// The relay holds as many providers as it may.
    #[error("the relay is full")]
    Full,
    /// The hello did not parse.
    #[error("malformed hello")]
    Malformed,
}

/// A control message that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream failed or ended early.
    #[error("control stream: {0}")]
    Io(#[from] std::io::Error),
    /// Longer than allowed, or not the expected JSON.
    #[error("malformed control message")]
    Malformed,
}

/// Writes one message.
pub async fn write<T: Serialize>(
    out: &mut (impl AsyncWrite + Unpin),
    message: &T,
) -> Result<(), WireError> {
    let body = serde_json::to_vec(message).map_err(|_| WireError::Malformed)?;
    let length = u16::try_from(body.len())
        .ok()
        .filter(|&length| usize::from(length) <= MAX_MESSAGE)
        .ok_or(WireError::Malformed)?;
    out.write_all(&length.to_be_bytes()).await?;
    out.write_all(&body).await?;
    Ok(())
}

/// Reads one message.
pub async fn read<T: for<'de> Deserialize<'de>>(
    input: &mut (impl AsyncRead + Unpin),
) -> Result<T, WireError> {
    let length = usize::from(input.read_u16().await?);
    if length > MAX_MESSAGE {
        return Err(WireError::Malformed);
    }
    let mut body = vec![0; length];
    input.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|_| WireError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_round_trip_and_oversized_or_garbage_ones_are_refused() {
        let mut buffer = Vec::new();
        let answer = Answer::Welcome {
            observed: "203.0.113.7".parse().expect("ip"),
            resumed: false,
        };
        write(&mut buffer, &answer).await.expect("write");
        let read_back: Answer = read(&mut buffer.as_slice()).await.expect("read");
        assert_eq!(read_back, answer);

        let mut huge = Vec::from(u16::MAX.to_be_bytes());
        huge.resize(2 + usize::from(u16::MAX), b' ');
        assert!(matches!(
            read::<Hello>(&mut huge.as_slice()).await,
            Err(WireError::Malformed)
        ));
        let mut garbage = Vec::from(3u16.to_be_bytes());
        garbage.extend_from_slice(b"{x}");
        assert!(matches!(
            read::<Hello>(&mut garbage.as_slice()).await,
            Err(WireError::Malformed)
        ));
        assert!(matches!(
            read::<Hello>(&mut [0u8, 9, b'{'].as_slice()).await,
            Err(WireError::Io(_))
        ));
    }
}
