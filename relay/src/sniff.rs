//! Reading just enough of a requester's connection to find its lease credentials — sans-I/O,
//! on the bytes received so far. Everything read is passed on to the provider unchanged (the
//! provider runs the whole protocol again and checks the credentials itself).
//!
//! * SOCKS5 (RFC 1928/1929): the greeting, then the username/password sub-negotiation. The
//!   relay answers the greeting itself (it must, to be sent credentials).
//! * HTTP proxy: the first request head; credentials in `Proxy-Authorization: Basic`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The longest request head the relay reads (as the provider's proxy).
pub const MAX_HEAD: usize = 16 * 1024;

/// What the bytes so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed<T> {
    /// More bytes needed.
    Incomplete,
    /// Parsed; the message took `.0` bytes.
    Done(usize, T),
    /// Not the protocol: drop the connection.
    Invalid(&'static str),
}

/// Lease credentials as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// The username (a lease id).
    pub username: Vec<u8>,
    /// The password (grant, tag, seal).
    pub password: Vec<u8>,
}

/// SOCKS5 greeting: whether the client offers username/password (method 2).
pub fn socks_greeting(bytes: &[u8]) -> Sniffed<bool> {
    match bytes {
        [] | [_] => Sniffed::Incomplete,
        [version, ..] if *version != 5 => Sniffed::Invalid("not SOCKS5"),
        [_, count, methods @ ..] => {
            let count = usize::from(*count);
            if methods.len() < count {
                return Sniffed::Incomplete;
            }
            Sniffed::Done(2 + count, methods[..count].contains(&2))
        }
    }
}

/// SOCKS5 username/password sub-negotiation (RFC 1929).
pub fn socks_auth(bytes: &[u8]) -> Sniffed<Presented> {
    let Some((&version, rest)) = bytes.split_first() else {
        return Sniffed::Incomplete;
    };
    if version != 1 {
        return Sniffed::Invalid("not RFC 1929 authentication");
    }
    let Some((username, rest)) = short_string(rest) else {
        return Sniffed::Incomplete;
    };
    let Some((password, _)) = short_string(rest) else {
        return Sniffed::Incomplete;
    };
    Sniffed::Done(
        3 + username.len() + password.len(),
        Presented {
            username: username.to_vec(),
            password: password.to_vec(),
        },
    )
}

fn short_string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&length, rest) = bytes.split_first()?;
    let length = usize::from(length);
    (rest.len() >= length).then(|| rest.split_at(length))
}

/// An HTTP proxy request head: its length and its credentials, if any.
pub fn http_head(bytes: &[u8]) -> Sniffed<Option<Presented>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => {
            let credentials = request
                .headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("proxy-authorization"))
                .and_then(|header| basic(header.value));
            Sniffed::Done(length, credentials)
        }
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD => {
            Sniffed::Invalid("request head too long")
        }
        Ok(httparse::Status::Partial) => Sniffed::Incomplete,
        Err(_) => Sniffed::Invalid("not an HTTP request"),
    }
}

fn basic(value: &[u8]) -> Option<Presented> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&byte| byte == b':')?;
    Some(Presented {
        username: decoded[..colon].to_vec(),
        password: decoded[colon + 1..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn socks_messages_parse_when_whole() {
        assert_eq!(socks_greeting(&[5]), Sniffed::Incomplete);
        assert_eq!(socks_greeting(&[5, 2, 0]), Sniffed::Incomplete);
        assert_eq!(socks_greeting(&[5, 2, 0, 2, 9]), Sniffed::Done(4, true));
        assert_eq!(socks_greeting(&[5, 1, 0]), Sniffed::Done(3, false));
        assert!(matches!(socks_greeting(&[4, 1]), Sniffed::Invalid(_)));
        let auth = [1, 2, b'4', b'2', 3, b'a', b'.', b'b'];
        assert_eq!(
            socks_auth(&auth),
            Sniffed::Done(
                8,
                Presented {
                    username: b"42".to_vec(),
                    password: b"a.b".to_vec()
                }
            )
        );
        assert_eq!(socks_auth(&auth[..7]), Sniffed::Incomplete);
        assert!(matches!(socks_auth(&[5, 1]), Sniffed::Invalid(_)));
    }

    #[test]
    fn http_heads_give_their_basic_credentials() {
        let head = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\
                     Proxy-Authorization: Basic NDI6YS5i\r\n\r\nrest";
        assert_eq!(
            http_head(head),
            Sniffed::Done(
                head.len() - 4,
                Some(Presented {
                    username: b"42".to_vec(),
                    password: b"a.b".to_vec()
                })
            )
        );
        assert_eq!(
            http_head(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            Sniffed::Done(35, None)
        );
        assert_eq!(
            http_head(b"GET http://a/ HTTP/1.1\r\n"),
            Sniffed::Incomplete
        );
        assert!(matches!(
            http_head(b"\x16\x03\x01garbage\r\n\r\n"),
            Sniffed::Invalid(_)
        ));
        let mut endless = b"GET http://a/ HTTP/1.1\r\nX: ".to_vec();
        endless.resize(MAX_HEAD, b'a');
        assert!(matches!(http_head(&endless), Sniffed::Invalid(_)));
    }

    proptest! {
        #[test]
        fn no_bytes_make_the_parsers_panic_or_overrun(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Sniffed::Done(length, _) = socks_greeting(&bytes) {
                prop_assert!(length <= bytes.len());
            }
            if let Sniffed::Done(length, _) = socks_auth(&bytes) {
                prop_assert!(length <= bytes.len());
            }
            if let Sniffed::Done(length, _) = http_head(&bytes) {
                prop_assert!(length <= bytes.len());
            }
        }
    }
}
