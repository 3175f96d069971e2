//! SOCKS5 UDP ASSOCIATE (RFC 1928 §7): the client sends datagrams with a SOCKS header to a relay
//! socket on the IP it connected to; they leave from a socket bound to the leased IP. Replies
//! come back only from destinations the client has sent to (so the association is not an open
//! inbound port). The association lives as long as its TCP control connection.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::egress::{self, Destination};
use crate::leases::LeaseState;
use crate::refusal::Refusal;
use crate::relay::{Activity, End, outside_end};
use crate::server::Shared;
use crate::socks5;

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// The longest SOCKS UDP header: RSV(2) FRAG(1) ATYP(1) IPv6(16) PORT(2).
const MAX_HEADER: usize = 22;
/// Destinations one association may have sent to (replies are accepted only from these).
const MAX_PEERS: usize = 4_096;
/// Names one association keeps resolved.
const MAX_NAMES: usize = 256;

/// Runs one association until its control connection closes or an outside end.
pub(crate) async fn associate(
    mut control: TcpStream,
    local_ip: IpAddr,
    leased_ip: IpAddr,
    announced: Option<SocketAddr>,
    lease: &Arc<LeaseState>,
    shared: &Shared,
) -> io::Result<End> {
    let client_ip = control.peer_addr()?.ip().to_canonical();
    let relay = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    let egress = egress::udp_from(leased_ip).await?;
    control
        .write_all(&socks5::reply(0, relay.local_addr()?))
        .await?;
    tracing::debug!(lease = lease.grant.lease, relay = %relay.local_addr()?, "UDP association open");

    let mut association = Association {
        lease,
        leased_ip,
        shared,
        client_ip,
        // RFC 1928: the port the client will send from, if it knows it (zero if not; then the
        // first datagram from the client's IP fixes it). The IP is always the control
        // connection's: clients behind NAT announce addresses that mean nothing here.
        client: announced
            .filter(|a| a.port() != 0)
            .map(|a| SocketAddr::new(client_ip, a.port())),
        peers: HashSet::new(),
        names: HashMap::new(),
    };
    let activity = Activity::new();
    let ends = outside_end(
        lease,
        &activity,
        shared.config.idle_timeout,
        shared.closing.clone(),
    );
    tokio::pin!(ends);
    let mut up = vec![0u8; MAX_HEADER + MAX_DATAGRAM].into_boxed_slice();
    let mut down = vec![0u8; MAX_HEADER + MAX_DATAGRAM].into_boxed_slice();
    let mut control_byte = [0u8; 1];
    loop {
        tokio::select! {
            end = &mut ends => return Ok(end),
            read = control.read(&mut control_byte) => match read {
                Ok(0) | Err(_) => return Ok(End::Finished),
                Ok(_) => {} // nothing is expected on the control connection; ignore it
            },
            received = relay.recv_from(&mut up) => {
                let (len, from) = received?;
                if let Some((payload, target)) = association.outbound(&up[..len], from).await {
                    egress.send_to(payload, target).await?;
                    lease.count_up(payload.len());
                    activity.touch();
                }
            }
            received = egress.recv_from(&mut down[MAX_HEADER..]) => {
                let (len, from) = received?;
                let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                let Some(client) = association.client else { continue };
                if !association.peers.contains(&from) {
                    tracing::debug!(%from, "UDP datagram from a destination never contacted, dropped");
                    continue;
                }
                let mut header = vec![0, 0, 0];
                socks5::push_address(&mut header, from);
                let start = MAX_HEADER - header.len();
                down[start..MAX_HEADER].copy_from_slice(&header);
                relay.send_to(&down[start..MAX_HEADER + len], client).await?;
                lease.count_down(len);
                activity.touch();
            }
        }
    }
}

struct Association<'a> {
    lease: &'a LeaseState,
    leased_ip: IpAddr,
    shared: &'a Shared,
    client_ip: IpAddr,
    client: Option<SocketAddr>,
    peers: HashSet<SocketAddr>,
    names: HashMap<(String, u16), SocketAddr>,
}

impl Association<'_> {
    /// Checks a datagram from the client and finds where it goes. `None`: dropped (logged).
    async fn outbound<'d>(
        &mut self,
        datagram: &'d [u8],
        from: SocketAddr,
    ) -> Option<(&'d [u8], SocketAddr)> {
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        if from.ip() != self.client_ip || self.client.is_some_and(|client| client != from) {
            tracing::debug!(%from, "UDP datagram from outside the association, dropped");
            return None;
        }
        let (destination, port, payload) = match parse_header(datagram) {
            Ok(parsed) => parsed,
            Err(reason) => {
                tracing::debug!(%from, reason, "UDP datagram dropped");
                return None;
            }
        };
        self.client.get_or_insert(from);
        let target = match self.target(&destination, port).await {
            Ok(target) => target,
            Err(refusal) => {
                tracing::info!(lease = self.lease.grant.lease, %refusal, "UDP datagram refused");
                return None;
            }
        };
        if self.peers.len() < MAX_PEERS {
            self.peers.insert(target);
        } else if !self.peers.contains(&target) {
            tracing::info!(
                lease = self.lease.grant.lease,
                "UDP association at its peer limit"
            );
            return None;
        }
        Some((payload, target))
    }

    async fn target(
        &mut self,
        destination: &Destination,
        port: u16,
    ) -> Result<SocketAddr, Refusal> {
        let name = match destination {
            Destination::Name(name) => Some((name.clone(), port)),
            Destination::Ip(_) => None,
        };
        if let Some(known) = name.as_ref().and_then(|key| self.names.get(key)) {
            return Ok(*known);
        }
        let resolved =
            egress::resolve(destination, port, self.leased_ip, &self.shared.config.guard).await?;
        let target = *resolved.first().ok_or(Refusal::Family)?;
        if let Some(key) = name.filter(|_| self.names.len() < MAX_NAMES) {
            self.names.insert(key, target);
        }
        Ok(target)
    }
}

/// Splits a client datagram into destination, port and payload.
pub(crate) fn parse_header(datagram: &[u8]) -> Result<(Destination, u16, &[u8]), &'static str> {
    let [_, _, fragment, kind, rest @ ..] = datagram else {
        return Err("shorter than a SOCKS UDP header");
    };
    if *fragment != 0 {
        // RFC 1928 lets a server drop fragments instead of reassembling them.
        return Err("fragmented datagram");
    }
    let (destination, rest) = match kind {
        1 if rest.len() >= 4 => {
            let octets: [u8; 4] = rest[..4].try_into().map_err(|_| "short IPv4 address")?;
            (Destination::Ip(IpAddr::from(octets)), &rest[4..])
        }
        4 if rest.len() >= 16 => {
            let octets: [u8; 16] = rest[..16].try_into().map_err(|_| "short IPv6 address")?;
            (Destination::Ip(IpAddr::from(octets)), &rest[16..])
        }
        3 if !rest.is_empty() && rest.len() > usize::from(rest[0]) => {
            let len = usize::from(rest[0]);
            let name = std::str::from_utf8(&rest[1..=len]).map_err(|_| "name is not UTF-8")?;
            (Destination::Name(name.to_owned()), &rest[1 + len..])
        }
        1 | 3 | 4 => return Err("truncated address"),
        _ => return Err("unknown address type"),
    };
    let [high, low, payload @ ..] = rest else {
        return Err("truncated port");
    };
    Ok((destination, u16::from_be_bytes([*high, *low]), payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_for_each_address_type() {
        let v4 = [0, 0, 0, 1, 8, 8, 8, 8, 0, 53, b'h', b'i'];
        assert_eq!(
            parse_header(&v4),
            Ok((
                Destination::Ip("8.8.8.8".parse().expect("ip")),
                53,
                &b"hi"[..]
            ))
        );
        let mut v6 = vec![0, 0, 0, 4];
        v6.extend_from_slice(
            &"2001:4860::8888"
                .parse::<std::net::Ipv6Addr>()
                .expect("ip")
                .octets(),
        );
        v6.extend_from_slice(&[1, 187]);
        assert_eq!(
            parse_header(&v6),
            Ok((
                Destination::Ip("2001:4860::8888".parse().expect("ip")),
                443,
                &b""[..]
            ))
        );
        let name = [0, 0, 0, 3, 3, b'a', b'.', b'b', 0, 80, b'x'];
        assert_eq!(
            parse_header(&name),
            Ok((Destination::Name("a.b".into()), 80, &b"x"[..]))
        );
    }

    #[test]
    fn malformed_headers_are_dropped_not_guessed() {
        assert!(parse_header(&[0, 0]).is_err());
        assert!(
            parse_header(&[0, 0, 1, 1, 8, 8, 8, 8, 0, 53]).is_err(),
            "fragment"
        );
        assert!(parse_header(&[0, 0, 0, 1, 8, 8]).is_err(), "short v4");
        assert!(parse_header(&[0, 0, 0, 3, 9, b'a']).is_err(), "short name");
        assert!(
            parse_header(&[0, 0, 0, 1, 8, 8, 8, 8, 0]).is_err(),
            "short port"
        );
        assert!(
            parse_header(&[0, 0, 0, 9, 1, 2, 3]).is_err(),
            "unknown type"
        );
    }
}
