//! Leaving from the leased IP: destinations are resolved here (the client's resolver never sees
//! them), every resolved address passes the guard, and sockets are bound to the leased IP
//! before they connect or send, so a lease for IP A never egresses from IP B.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::credentials::{Grant, Protocols};
use crate::guard::Guard;
use crate::refusal::Refusal;

/// Ports only a lease with SMTP may reach.
pub(crate) const SMTP_PORTS: [u16; 3] = [25, 465, 587];

/// Where a client wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    /// An address given as such.
    Ip(IpAddr),
    /// A name, resolved on the provider's side.
    Name(String),
}

impl Destination {
    /// Parses the host part of an HTTP authority or URI (`[v6]`, v4 or name).
    pub(crate) fn from_host(host: &str) -> Self {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Self::Ip(ip),
            Err(_) => Self::Name(bare.to_owned()),
        }
    }
}

/// Checks the lease includes `protocol`, and SMTP when the port is a mail port.
pub(crate) fn check_protocol(
    grant: &Grant,
    protocol: Protocols,
    name: &'static str,
    port: u16,
) -> Result<(), Refusal> {
    if !grant.protocols.contains(protocol) {
        return Err(Refusal::ProtocolNotLeased(name));
    }
    if SMTP_PORTS.contains(&port) && !grant.protocols.contains(Protocols::SMTP) {
        return Err(Refusal::ProtocolNotLeased("SMTP"));
    }
    Ok(())
}

/// The addresses of `destination` that may be reached from `leased`: same family, guard passed.
pub(crate) async fn resolve(
    destination: &Destination,
    port: u16,
    leased: IpAddr,
    guard: &Guard,
) -> Result<Vec<SocketAddr>, Refusal> {
    let candidates: Vec<IpAddr> = match destination {
        Destination::Ip(ip) => vec![ip.to_canonical()],
        Destination::Name(name) => tokio::net::lookup_host((name.as_str(), port))
            .await
            .map_err(|_| Refusal::Dns(name.clone()))?
            .map(|addr| addr.ip().to_canonical())
            .collect(),
    };
    // Only the leased IP's family can leave from the leased IP.
    let leased = leased.to_canonical();
    let same_family: Vec<IpAddr> = candidates
        .into_iter()
        .filter(|ip| ip.is_ipv4() == leased.is_ipv4())
        .collect();
    if same_family.is_empty() {
        return Err(Refusal::Family);
    }
    let mut allowed = Vec::with_capacity(same_family.len());
    let mut refused = None;
    for ip in same_family {
        match guard.check(ip) {
            Ok(()) => allowed.push(SocketAddr::new(ip, port)),
            Err(guarded) => refused = Some(guarded),
        }
    }
    match (allowed.is_empty(), refused) {
        (true, Some(guarded)) => Err(Refusal::Guarded(guarded)),
        (true, None) => Err(Refusal::Family),
        (false, _) => Ok(allowed),
    }
}

/// Resolves, guards and connects from `source` (the leased IP; `None` behind NAT, where the
/// default route leaves from it), trying each allowed address in turn, all within `timeout`.
pub(crate) async fn connect(
    destination: &Destination,
    port: u16,
    leased: IpAddr,
    source: Option<IpAddr>,
    guard: &Guard,
    timeout: Duration,
) -> Result<TcpStream, Refusal> {
    let attempt = async {
        let mut last = Refusal::ConnectFailed("no address".to_owned());
        for target in resolve(destination, port, leased, guard).await? {
            match connect_from(source, target).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last = connect_refusal(&error),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Refusal::ConnectTimeout),
    }
}

fn connect_refusal(error: &io::Error) -> Refusal {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => Refusal::ConnectionRefused,
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => Refusal::Unreachable,
        io::ErrorKind::TimedOut => Refusal::ConnectTimeout,
        _ => Refusal::ConnectFailed(error.to_string()),
    }
}

/// Bind before connect: the connection leaves from `from`, never from another address.
async fn connect_from(from: Option<IpAddr>, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = match to {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    let Some(from) = from else {
        let stream = socket.connect(to).await?;
        stream.set_nodelay(true)?;
        return Ok(stream);
    };
    // Let connect() pick the source port for the whole 4-tuple: bind(ip, 0) alone reserves a
    // port per connection, and a busy lease would run out of ports to TIME_WAIT.
    if let Err(errno) = nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    ) {
        tracing::debug!(%errno, "IP_BIND_ADDRESS_NO_PORT unavailable");
    }
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A UDP socket that sends from the leased IP.
pub(crate) async fn udp_from(leased: IpAddr) -> io::Result<UdpSocket> {
    UdpSocket::bind(SocketAddr::new(leased.to_canonical(), 0)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(protocols: Protocols) -> Grant {
        Grant {
            lease: 1,
            ip: "127.0.0.2".parse().expect("ip"),
            protocols,
            not_before: 0,
            not_after: 10,
        }
    }

    #[test]
    fn mail_ports_need_smtp() {
        let web = grant(Protocols::SOCKS5);
        for port in SMTP_PORTS {
            assert_eq!(
                check_protocol(&web, Protocols::SOCKS5, "SOCKS5", port),
                Err(Refusal::ProtocolNotLeased("SMTP"))
            );
        }
        let mail = grant(Protocols::SOCKS5.union(Protocols::SMTP));
        assert_eq!(
            check_protocol(&mail, Protocols::SOCKS5, "SOCKS5", 25),
            Ok(())
        );
        assert_eq!(
            check_protocol(&web, Protocols::HTTP, "HTTP", 80),
            Err(Refusal::ProtocolNotLeased("HTTP"))
        );
    }

    #[test]
    fn hosts_parse_as_addresses_or_names() {
        assert_eq!(
            Destination::from_host("[::1]"),
            Destination::Ip("::1".parse().expect("ip"))
        );
        assert_eq!(
            Destination::from_host("10.0.0.1"),
            Destination::Ip("10.0.0.1".parse().expect("ip"))
        );
        assert_eq!(
            Destination::from_host("example.org"),
            Destination::Name("example.org".into())
        );
    }

    #[tokio::test]
    async fn a_name_resolving_only_to_guarded_addresses_is_refused_as_guarded() {
        let leased = "127.0.0.2".parse().expect("ip");
        let refused = resolve(
            &Destination::Name("localhost".into()),
            80,
            leased,
            &Guard::default(),
        )
        .await;
        assert!(matches!(refused, Err(Refusal::Guarded(_))), "{refused:?}");
    }
}
