//! Entry points for `cargo fuzz` (the `fuzz/` folder), compiled only with `--cfg fuzzing`: the
//! gate's SOCKS5 negotiation with a client that sends hostile bytes.

use std::sync::OnceLock;

use tokio::io::{AsyncWriteExt, BufReader};

use crate::control::{GateConfig, Shared};
use crate::pool::PoolConfig;

/// The password of the gate that requires one.
pub const PASSWORD: &str = "s3cret";

fn gates() -> &'static [Shared; 2] {
    static GATES: OnceLock<[Shared; 2]> = OnceLock::new();
    GATES.get_or_init(|| {
        let open = GateConfig::new(PoolConfig::default());
        let mut locked = GateConfig::new(PoolConfig::default());
        locked.password = Some(PASSWORD.to_owned());
        [Shared::detached(open), Shared::detached(locked)]
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

/// A SOCKS5 negotiation with a client that sends `data` after its first byte (odd: the gate
/// needs its password). Whatever the bytes: no panic, a gate with a password accepts only
/// that password, and an accepted request names a `host:port` authority.
pub fn socks5(data: &[u8]) {
    let Some((flag, rest)) = data.split_first() else {
        return;
    };
    let shared = &gates()[usize::from(flag & 1)];
    // What the client sends and what the gate replies both fit the pipe: nothing blocks.
    let rest = &rest[..rest.len().min(16 * 1024)];
    runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        if client.write_all(rest).await.is_err() || client.shutdown().await.is_err() {
            return;
        }
        // The client sent all it will: reads past it end.
        let mut server = BufReader::new(server);
        let negotiated = crate::server::negotiate(&mut server, shared).await;
        drop(client);
        if let Ok(Ok((target, authority))) = negotiated {
            if shared.config.password.is_some() {
                assert_eq!(target.secret, PASSWORD, "only the gate's password gets in");
            }
            let parsed = http::uri::Authority::try_from(authority.as_str())
                .expect("an authority the upstream CONNECT can carry");
            assert!(parsed.port_u16().is_some());
        }
    });
}
