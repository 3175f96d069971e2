//! Moving bytes between a client and its destination without copying them through user space:
//! a bulk direction `splice(2)`s socket → pipe → socket. Small exchanges are copied through a
//! stack buffer instead (a pipe costs more than it saves for a few hundred bytes); the first
//! full buffer switches a direction to splice. An idle tunnel holds no pipe and no buffer —
//! only its two sockets and a small task. Every move is counted into the lease's meter and
//! refreshes the idle clock.
//!
//! A tunnel ends when both sides are done, on error, when it has been idle too long, when the
//! lease ends or is cut, or when the proxy shuts down — whichever comes first.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::leases::LeaseState;

/// Bytes asked of one splice call, and the pipe size asked for.
const CHUNK: usize = 1024 * 1024;
/// Standing in for "never" where an instant is needed (a century).
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// The copy buffer of a direction before it switches to splice.
const COPY_BUFFER: usize = 8 * 1024;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Both sides closed.
    Finished,
    /// Nothing moved for the idle timeout.
    Idle,
    /// The lease's window is over.
    LeaseEnded,
    /// The lease was cut.
    Cut,
    /// The proxy is shutting down.
    Shutdown,
}

/// When a connection last moved a byte, readable from the watchdog while the pumps write it.
#[derive(Debug)]
pub(crate) struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn touch(&self) {
        let elapsed = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(elapsed, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `limit` (`Some(End::Idle)`) or at `end`.
    async fn idle_for(&self, limit: Duration, end: Instant) -> End {
        loop {
            let last = self.last_ms.load(Ordering::Relaxed);
            let idle_at = self.origin + Duration::from_millis(last) + limit;
            // One timer for both: the idle deadline and the lease's end.
            tokio::time::sleep_until(idle_at.min(end)).await;
            if Instant::now() >= end {
                return End::LeaseEnded;
            }
            if self.last_ms.load(Ordering::Relaxed) == last {
                return End::Idle;
            }
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The instant a lease ends: the first instant of its `not_after` second, to the sub-second —
/// a tunnel opened late in the lease's last second must not outlive it by most of a second.
pub(crate) fn lease_end(lease: &LeaseState) -> Instant {
    instant_of_unix(lease.grant.not_after)
}

/// The monotonic instant of the wall-clock second `unix` (now, if that is past; far in the
/// future if it is too far to add).
fn instant_of_unix(unix: u64) -> Instant {
    let now = Instant::now();
    let wall = SystemTime::now();
    let Some(at) = UNIX_EPOCH.checked_add(Duration::from_secs(unix)) else {
        return now + FAR_FUTURE;
    };
    match at.duration_since(wall) {
        Ok(left) => now.checked_add(left).unwrap_or(now + FAR_FUTURE),
        Err(_) => now,
    }
}

/// Resolves when the lease is over for its connections: it ended, was cut, or the proxy shuts
/// down.
pub(crate) async fn lease_over(lease: &LeaseState, mut shutdown: watch::Receiver<bool>) -> End {
    let mut cut = lease.cut.subscribe();
    tokio::select! {
        () = tokio::time::sleep_until(lease_end(lease)) => End::LeaseEnded,
        _ = cut.wait_for(|cut| *cut) => End::Cut,
        _ = shutdown.wait_for(|stop| *stop) => End::Shutdown,
    }
}

/// Resolves with the first outside reason to end a connection of `lease`.
pub(crate) async fn outside_end(
    lease: &LeaseState,
    activity: &Activity,
    idle: Duration,
    shutdown: watch::Receiver<bool>,
) -> End {
    tokio::select! {
        end = activity.idle_for(idle, lease_end(lease)) => end,
        end = lease_over(lease, shutdown) => end,
    }
}

/// Relays between `client` and `target` until one of the ends above.
pub(crate) async fn tunnel(
    client: &TcpStream,
    target: &TcpStream,
    lease: &LeaseState,
    idle: Duration,
    shutdown: watch::Receiver<bool>,
) -> io::Result<End> {
    let activity = Activity::new();
    let one_done = AtomicBool::new(false);
    let pumps = async {
        tokio::try_join!(
            pump(client, target, &lease.bytes_up, &activity, &one_done),
            pump(target, client, &lease.bytes_down, &activity, &one_done),
        )
    };
    tokio::select! {
        pumped = pumps => pumped.map(|_| End::Finished),
        end = outside_end(lease, &activity, idle, shutdown) => Ok(end),
    }
}

/// One direction: copies `from` → `to` until `from` closes, then half-closes `to`.
///
/// It starts by copying through a stack buffer: a small exchange (a request, a short response)
/// then costs one read and one write, with no pipe to make and close. The first read that
/// fills the buffer shows a bulk transfer, and the direction switches to splice for good.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    counter: &AtomicU64,
    activity: &Activity,
    one_done: &AtomicBool,
) -> io::Result<()> {
    let mut pipe: Option<(OwnedFd, OwnedFd)> = None;
    // Bytes read but not yet written (only when `to` could not take a whole read at once).
    let mut pending = Vec::new();
    loop {
        from.readable().await?;
        let (moved, in_pipe) = match &pipe {
            None => {
                // The buffer lives only between awaits, so it is not part of the task's state
                // and an idle tunnel does not carry it.
                let mut buffer = [0u8; COPY_BUFFER];
                let read = match from.try_read(&mut buffer) {
                    Ok(read) => read,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(error) => return Err(error),
                };
                if read > 0 {
                    let written = match to.try_write(&buffer[..read]) {
                        Ok(written) => written,
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
                        Err(error) => return Err(error),
                    };
                    pending.extend_from_slice(&buffer[written..read]);
                }
                if read == COPY_BUFFER {
                    pipe = Some(bulk_pipe()?);
                }
                (read, false)
            }
            Some((_, pipe_in)) => {
                // The pipe is empty here, so EAGAIN can only mean the socket has nothing to
                // read, which is what `try_io` needs to clear the readiness it cached.
                match from.try_io(Interest::READABLE, || {
                    splice(from.as_fd(), None, pipe_in.as_fd(), None, CHUNK, flags())
                        .map_err(io::Error::from)
                }) {
                    Ok(moved) => (moved, true),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(error) => return Err(error),
                }
            }
        };
        if moved == 0 {
            if one_done.swap(true, Ordering::AcqRel) {
                // Both directions are done: closing the sockets says the rest.
                return Ok(());
            }
            // Half-close: the other direction may still be sending.
            return match nix::sys::socket::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(to),
                nix::sys::socket::Shutdown::Write,
            ) {
                Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
                Err(errno) => Err(errno.into()),
            };
        }
        counter.fetch_add(moved as u64, Ordering::Relaxed);
        activity.touch();
        while !pending.is_empty() {
            to.writable().await?;
            match to.try_write(&pending) {
                Ok(written) => {
                    pending.drain(..written);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            }
        }
        if let (true, Some((pipe_out, _))) = (in_pipe, &pipe) {
            let mut left = moved;
            while left > 0 {
                to.writable().await?;
                match to.try_io(Interest::WRITABLE, || {
                    splice(pipe_out.as_fd(), None, to.as_fd(), None, left, flags())
                        .map_err(io::Error::from)
                }) {
                    Ok(written) => left -= written,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(error) => return Err(error),
                }
            }
        }
    }
}

/// A pipe for a bulk direction, grown to [`CHUNK`] when the system allows (fewer splices per
/// byte; its pages are only taken while bytes are in flight).
fn bulk_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (pipe_out, pipe_in) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let size = i32::try_from(CHUNK).unwrap_or(i32::MAX);
    if let Err(errno) = nix::fcntl::fcntl(&pipe_in, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size)) {
        tracing::debug!(%errno, "pipe stays at its default size");
    }
    Ok((pipe_out, pipe_in))
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{Grant, Protocols};
    use crate::leases::LeaseTable;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (connected, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (connected.expect("connect"), accepted.expect("accept").0)
    }

    fn lease(table: &LeaseTable) -> std::sync::Arc<LeaseState> {
        table.enter(
            Grant {
                lease: 9,
                ip: "127.0.0.1".parse().expect("ip"),
                protocols: Protocols::SOCKS5,
                not_before: 0,
                not_after: unix_now() + 600,
            },
            unix_now(),
        )
    }

    #[tokio::test]
    async fn relays_both_ways_with_half_close_and_meters_every_byte() {
        let (mut user, client) = pair().await;
        let (target, mut server) = pair().await;
        let table = LeaseTable::default();
        let state = lease(&table);
        let (_stop, shutdown) = watch::channel(false);
        let relay = tokio::spawn(async move {
            tunnel(&client, &target, &state, Duration::from_secs(30), shutdown).await
        });

        let upload = vec![7u8; 1_000_000];
        user.write_all(&upload).await.expect("write");
        user.shutdown().await.expect("half-close");
        let mut received = Vec::new();
        server.read_to_end(&mut received).await.expect("read");
        assert_eq!(received.len(), upload.len());
        server
            .write_all(b"thanks")
            .await
            .expect("reply after half-close");
        drop(server);
        let mut reply = Vec::new();
        user.read_to_end(&mut reply).await.expect("read reply");
        assert_eq!(reply, b"thanks");

        assert_eq!(relay.await.expect("join").expect("relay"), End::Finished);
        let usage = table.usage(9).expect("usage");
        assert_eq!((usage.bytes_up, usage.bytes_down), (1_000_000, 6));
    }

    #[tokio::test]
    async fn a_grant_without_end_does_not_overflow_the_clock() {
        let (mut user, client) = pair().await;
        let (target, mut server) = pair().await;
        let table = LeaseTable::default();
        let state = table.enter(
            Grant {
                lease: 10,
                ip: "127.0.0.1".parse().expect("ip"),
                protocols: Protocols::SOCKS5,
                not_before: 0,
                not_after: u64::MAX,
            },
            unix_now(),
        );
        let (_stop, shutdown) = watch::channel(false);
        let relay = tokio::spawn(async move {
            tunnel(&client, &target, &state, Duration::from_secs(30), shutdown).await
        });
        user.write_all(b"x").await.expect("write");
        drop(user);
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("read");
        drop(server);
        assert_eq!(got, b"x");
        assert_eq!(relay.await.expect("join").expect("relay"), End::Finished);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_ends_after_the_idle_timeout_and_not_before() {
        let (mut user, client) = pair().await;
        let (target, _server) = pair().await;
        let table = LeaseTable::default();
        let state = lease(&table);
        let (_stop, shutdown) = watch::channel(false);
        let relay = tokio::spawn(async move {
            tunnel(&client, &target, &state, Duration::from_secs(60), shutdown).await
        });
        tokio::time::sleep(Duration::from_secs(45)).await;
        user.write_all(b"still here").await.expect("write");
        tokio::time::sleep(Duration::from_secs(45)).await;
        assert!(
            !relay.is_finished(),
            "activity at 45 s keeps it open at 90 s"
        );
        let ended = relay.await.expect("join").expect("relay");
        assert_eq!(ended, End::Idle);
    }
}
