//! The node's HTTP API (axum): sign-in, sessions, limits, and the JSON error envelope.
//!
//! Every call is checked in this order: body size (`max_body`), JSON shape, session (bearer
//! token from [`crate::session`]), rate (per session; per client IP before sign-in). A refusal
//! at any step is an [`ApiError`] and changes nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::Address;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::rate::{Rate, RateLimiter};
use crate::session::{SignIn, SignInDomain, SignInLimits};

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// What sign-in messages say about the node.
    pub domain: SignInDomain,
    /// The key session tokens are MACed with; keep it across restarts to keep sessions.
    pub session_key: [u8; 32],
    /// Challenge and session lifetimes.
    pub sign_in: SignInLimits,
    /// Calls per signed-in address. Default 200/s, bursts of 400.
    pub session_rate: Rate,
    /// Calls per client IP before sign-in. Default 20/s, bursts of 40.
    pub anonymous_rate: Rate,
    /// Largest request body, bytes. Default 1 MiB (a batch lease of 100,000 IPs fits).
    pub max_body: usize,
}

impl GatewayConfig {
    /// Defaults for a node on `listen` settling on `chain_id`.
    pub fn new(listen: SocketAddr, chain_id: u64, session_key: [u8; 32]) -> Self {
        Self {
            listen,
            domain: SignInDomain {
                domain: listen.to_string(),
                uri: format!("http://{listen}"),
                chain_id,
                statement: "Sign in to the IPSX node.".to_owned(),
            },
            session_key,
            sign_in: SignInLimits::default(),
            session_rate: Rate {
                per_second: 200.0,
                burst: 400.0,
            },
            anonymous_rate: Rate {
                per_second: 20.0,
                burst: 40.0,
            },
            max_body: 1 << 20,
        }
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct GatewayHandle {
    /// The bound address.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl GatewayHandle {
    /// Stops accepting, lets calls in progress finish, and returns when the server is down.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.stop.send_replace(true);
        self.served
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }
}

struct AppState {
    sign_in: Mutex<SignIn>,
    per_session: Mutex<RateLimiter<Address>>,
    per_ip: Mutex<RateLimiter<IpAddr>>,
    origin: Instant,
}

type Shared = Arc<AppState>;

impl AppState {
    fn seconds(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Binds and serves the API until [`GatewayHandle::shutdown`].
pub async fn start(config: GatewayConfig) -> std::io::Result<GatewayHandle> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState {
        sign_in: Mutex::new(SignIn::new(
            config.domain.clone(),
            config.sign_in,
            config.session_key,
        )),
        per_session: Mutex::new(RateLimiter::new(config.session_rate, 100_000)),
        per_ip: Mutex::new(RateLimiter::new(config.anonymous_rate, 100_000)),
        origin: Instant::now(),
    });
    let app = router(state, config.max_body);
    let (stop, mut stopped) = watch::channel(false);
    let served = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await
    });
    tracing::info!(%addr, "gateway listening");
    Ok(GatewayHandle { addr, stop, served })
}

fn router(state: Shared, max_body: usize) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/auth/challenge", post(challenge))
        .route("/v1/auth/session", post(open_session))
        .route("/v1/me", get(me))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Extractors: JSON bodies with our error envelope, sessions, anonymous rate limits.

/// A JSON body; shape errors become [`ApiError`]s instead of axum's plain-text ones.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_error(&rejection)),
        }
    }
}

fn json_error(rejection: &JsonRejection) -> ApiError {
    let status = rejection.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "json_required",
        _ => "bad_json",
    };
    ApiError::new(
        if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        },
        code,
        rejection.body_text(),
    )
}

/// The signed-in caller, rate-limited per address.
pub struct Caller(pub Address);

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "session_required",
                    "sign in first: Authorization: Bearer <token>",
                )
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("invalid_session", "expected `Bearer <token>`")
            })?;
        let address = lock(&state.sign_in).verify(token, unix_now())?;
        lock(&state.per_session)
            .check(&address, state.seconds())
            .map_err(ApiError::rate_limited)?;
        Ok(Self(address))
    }
}

/// A caller not signed in yet, rate-limited per IP.
pub struct Anonymous;

impl FromRequestParts<Shared> for Anonymous {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no_peer",
                    "peer address unknown",
                )
            })?;
        lock(&state.per_ip)
            .check(&ip, state.seconds())
            .map_err(ApiError::rate_limited)?;
        Ok(Self)
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// `POST /v1/auth/challenge`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The wallet address that will sign (`0x…`, any case).
    pub address: String,
}

/// The answer to [`ChallengeRequest`].
#[derive(Debug, Deserialize, Serialize)]
pub struct ChallengeResponse {
    /// Names the challenge in [`SessionRequest`].
    pub nonce: String,
    /// The exact EIP-4361 text to sign with `personal_sign`.
    pub message: String,
    /// Last second it may be answered (unix).
    pub expires_at: u64,
}

async fn challenge(
    _: Anonymous,
    State(state): State<Shared>,
    ApiJson(request): ApiJson<ChallengeRequest>,
) -> Result<Json<ChallengeResponse>, ApiError> {
    let address: Address = request.address.trim().parse().map_err(|_| {
        ApiError::bad_request(
            "bad_address",
            format!("{:?} is not an Ethereum address", request.address),
        )
    })?;
    let mut randomness = [0u8; 16];
    getrandom::fill(&mut randomness).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_randomness",
            e.to_string(),
        )
    })?;
    let challenge = lock(&state.sign_in).challenge(address, unix_now(), randomness)?;
    Ok(Json(ChallengeResponse {
        nonce: challenge.nonce,
        message: challenge.message,
        expires_at: challenge.expires_at,
    }))
}

/// `POST /v1/auth/session`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// From [`ChallengeResponse`].
    pub nonce: String,
    /// The 65-byte `personal_sign` signature, hex (`0x…`).
    pub signature: String,
}

/// A session.
#[derive(Debug, Deserialize, Serialize)]
pub struct SessionResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Whose session it is.
    pub address: Address,
    /// First second it is no longer valid (unix).
    pub expires_at: u64,
}

async fn open_session(
    _: Anonymous,
    State(state): State<Shared>,
    ApiJson(request): ApiJson<SessionRequest>,
) -> Result<Json<SessionResponse>, ApiError> {
    let signature = alloy_primitives::hex::decode(request.signature.trim()).map_err(|_| {
        ApiError::bad_request(
            "bad_signature",
            "the signature must be hex (0x + 130 digits)",
        )
    })?;
    let session = lock(&state.sign_in).complete(&request.nonce, &signature, unix_now())?;
    Ok(Json(SessionResponse {
        token: session.token,
        address: session.address,
        expires_at: session.expires_at,
    }))
}

/// `GET /v1/me`.
#[derive(Debug, Deserialize, Serialize)]
pub struct MeResponse {
    /// The signed-in address.
    pub address: Address,
}

async fn me(Caller(address): Caller) -> Json<MeResponse> {
    Json(MeResponse { address })
}
