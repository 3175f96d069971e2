//! SOCKS5 (RFC 1928) with username/password authentication (RFC 1929) only: CONNECT and
//! UDP ASSOCIATE, IPv4, IPv6 and domain-name destinations (resolved on the provider's side).
//! Every failure gets its reply code and the connection is closed at once.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncBufRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::credentials::{Grant, Protocols};
use crate::egress::{self, Destination};
use crate::refusal::Refusal;
use crate::relay::{End, unix_now};
use crate::server::{Accepted, Shared};
use crate::udp;

const VERSION: u8 = 5;
const METHOD_USERNAME_PASSWORD: u8 = 2;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CONNECT: u8 = 1;
const UDP_ASSOCIATE: u8 = 3;

/// What the client asked for once authenticated.
pub(crate) struct Request {
    pub(crate) grant: Grant,
    pub(crate) command: u8,
    pub(crate) destination: Option<Destination>,
    pub(crate) port: u16,
}

/// Serves one SOCKS5 client from its greeting to the end of its tunnel or association.
pub(crate) async fn serve(accepted: Accepted, shared: &Shared) -> io::Result<End> {
    let Accepted {
        stream: mut client,
        local_ip,
        first,
        deadline,
    } = accepted;
    let (negotiated, early) = {
        let (read_half, mut write_half) = client.split();
        // The bytes read to tell the protocol come first; a whole negotiation is a few hundred
        // bytes, longer fields just take more reads.
        let mut reader = BufReader::with_capacity(512, (&first[..]).chain(read_half));
        let negotiated = tokio::time::timeout_at(
            deadline,
            negotiate(&mut reader, &mut write_half, local_ip, shared),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "SOCKS5 handshake timeout"))??;
        // Bytes a client sent ahead of our reply belong to the destination.
        let mut early = reader.buffer().to_vec();
        early.extend_from_slice(reader.get_ref().get_ref().0);
        (negotiated, early)
    };
    let Some(request) = negotiated else {
        return Ok(End::Finished);
    };

    let (protocol, name, port) = if request.command == CONNECT {
        (Protocols::SOCKS5, "SOCKS5", request.port)
    } else {
        (
            Protocols::SOCKS5.union(Protocols::VPN),
            "SOCKS5 UDP (vpn)",
            0,
        )
    };
    let (lease, _open) = match shared.admit(request.grant, protocol, name, port) {
        Ok(admitted) => admitted,
        Err(refusal) => return refuse(&mut client, &refusal).await,
    };
    match (request.command, request.destination) {
        (CONNECT, Some(destination)) => {
            let connected = egress::connect(
                &destination,
                request.port,
                // This connection's IP: one lease may hold several IPs.
                request.grant.ip,
                shared.egress_source(request.grant.ip),
                &shared.config.guard,
                shared.config.connect_timeout,
            )
            .await;
            let target = match connected {
                Ok(target) => target,
                Err(refusal) => return refuse(&mut client, &refusal).await,
            };
            client.write_all(&reply(0, target.local_addr()?)).await?;
            shared.tunnel(&client, target, &lease, &early).await
        }
        // A relay carries streams, not datagrams to a port behind the provider's NAT.
        (UDP_ASSOCIATE, _) if shared.config.public_ip.is_some() => {
            refuse(&mut client, &Refusal::CommandNotSupported).await
        }
        (UDP_ASSOCIATE, destination) => {
            let announced = match destination {
                Some(Destination::Ip(ip)) => Some(SocketAddr::new(ip, request.port)),
                _ => None,
            };
            udp::associate(
                client,
                local_ip,
                request.grant.ip,
                announced,
                &lease,
                shared,
            )
            .await
        }
        _ => refuse(&mut client, &Refusal::CommandNotSupported).await,
    }
}

/// Greeting, authentication and request. `Ok(None)`: refused, the reply already sent.
pub(crate) async fn negotiate<R, W>(
    reader: &mut R,
    client: &mut W,
    local_ip: IpAddr,
    shared: &Shared,
) -> io::Result<Option<Request>>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut head = [0u8; 2];
    reader.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Ok(None);
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    reader.read_exact(&mut methods).await?;
    if !methods.contains(&METHOD_USERNAME_PASSWORD) {
        tracing::info!(%local_ip, "SOCKS5 client offers no username/password method");
        client.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]).await?;
        return Ok(None);
    }
    client
        .write_all(&[VERSION, METHOD_USERNAME_PASSWORD])
        .await?;

    // RFC 1929: version 1, username, password.
    if reader.read_u8().await? != 1 {
        client.write_all(&[1, 1]).await?;
        return Ok(None);
    }
    let username = read_short_string(reader).await?;
    let password = read_short_string(reader).await?;
    let grant = match shared
        .config
        .key
        .verify(&username, &password, local_ip, unix_now())
    {
        Ok(grant) => grant,
        Err(error) => {
            tracing::info!(%error, %local_ip, "SOCKS5 authentication refused");
            client.write_all(&[1, 1]).await?;
            return Ok(None);
        }
    };
    client.write_all(&[1, 0]).await?;

    let mut request = [0u8; 4];
    reader.read_exact(&mut request).await?;
    let destination = match request[3] {
        1 => {
            let mut octets = [0u8; 4];
            reader.read_exact(&mut octets).await?;
            Some(Destination::Ip(IpAddr::from(octets)))
        }
        4 => {
            let mut octets = [0u8; 16];
            reader.read_exact(&mut octets).await?;
            Some(Destination::Ip(IpAddr::from(octets)))
        }
        3 => {
            let name = read_short_string(reader).await?;
            String::from_utf8(name).ok().map(Destination::Name)
        }
        _ => {
            client
                .write_all(&failure(Refusal::AddressTypeNotSupported.socks_reply()))
                .await?;
            return Ok(None);
        }
    };
    let port = reader.read_u16().await?;
    if request[0] != VERSION || !matches!(request[1], CONNECT | UDP_ASSOCIATE) {
        client
            .write_all(&failure(Refusal::CommandNotSupported.socks_reply()))
            .await?;
        return Ok(None);
    }
    if request[1] == CONNECT && destination.is_none() {
        client
            .write_all(&failure(Refusal::Dns(String::new()).socks_reply()))
            .await?;
        return Ok(None);
    }
    Ok(Some(Request {
        grant,
        command: request[1],
        destination,
        port,
    }))
}

async fn read_short_string<S: AsyncBufRead + Unpin>(client: &mut S) -> io::Result<Vec<u8>> {
    let len = client.read_u8().await?;
    let mut bytes = vec![0u8; usize::from(len)];
    client.read_exact(&mut bytes).await?;
    Ok(bytes)
}

async fn refuse(client: &mut TcpStream, refusal: &Refusal) -> io::Result<End> {
    tracing::info!(%refusal, "SOCKS5 request refused");
    client.write_all(&failure(refusal.socks_reply())).await?;
    Ok(End::Finished)
}

fn failure(code: u8) -> [u8; 10] {
    [VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// A reply carrying an address (the bound address for CONNECT, the relay for UDP ASSOCIATE).
pub(crate) fn reply(code: u8, bound: SocketAddr) -> Vec<u8> {
    let mut reply = vec![VERSION, code, 0];
    push_address(&mut reply, bound);
    reply
}

/// Appends ATYP, address and port as SOCKS5 writes them.
pub(crate) fn push_address(out: &mut Vec<u8>, address: SocketAddr) {
    match address.ip().to_canonical() {
        IpAddr::V4(v4) => {
            out.push(1);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(4);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&address.port().to_be_bytes());
}
