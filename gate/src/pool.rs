//! The gate's exits, sans I/O: which leased IP serves which request, when to lease more, what
//! to give back. Time comes in as an argument (unix milliseconds) and decisions go out as
//! [`Action`]s, so every rule here is tested with a hand-driven clock.
//!
//! ```text
//! pick(target, conn, now) ─► Ready(exit) │ Wait (a lease is on its way) │ Refused(why)
//!      │ a filter's pool runs below `warm` free exits ─► Action::Lease { filter, count }
//! leased(filter, exits) / lease_failed(filter, why)     ◄─ the node's answer
//! succeeded(exit, ttfb) / failed(exit, fatal)           ◄─ what the request saw
//! ended(deal, why)                                      ◄─ the node ended a lease (cut, voided…)
//! release(conn) / tick(now)   ─► Action::Cancel { deal } for deals nobody needs any more
//! ```
//!
//! * **Spread** requests take the least recently used shared exit of their filter's pool.
//! * A **session** binds to the shared exit with the fewest sessions and keeps it while it is
//!   used; idle past its session time it ends. The pool keeps `warm` exits with no session on
//!   them, so a new session finds one without waiting (the lease call runs behind it). If its
//!   exit fails or its lease is ended by the node, the session is *gone*: its requests are
//!   refused (the crawler starts a new session) until it would have timed out anyway. An exit
//!   close to its lease's end is replaced: the session moves to another exit (leases are long;
//!   see [`PoolConfig::lease_secs`]).
//! * **Rotate** gives each client connection an exit of its own that no session holds; it is
//!   retired (never handed out again) when the connection closes.
//! * An exit no request and no session used for `pool_idle_secs` is given back.
//! * Exit quality: an exit failing more than half its requests, or answering `slow_factor`
//!   times slower than its pool's median, is dropped.
//!
//! A deal (one lease call's share from one provider) is cancelled when all its exits are
//! retired. Limits are checked before each lease call against the worst case (every IP at the
//! lease's maximum price), so the fleet never holds more IPs or burns more per minute than it
//! allows.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use crate::target::{Filter, Stickiness, Target};

/// How the pool behaves.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Free exits kept ready per filter in use.
    pub warm: usize,
    /// IPs asked for at least, per lease call.
    pub batch: u32,
    /// Seconds each lease lasts (cancelled earlier when not needed).
    pub lease_secs: u64,
    /// Exits whose lease ends within this many seconds are no longer picked, and replaced.
    pub renew_margin_secs: u64,
    /// An exit no request or session used this long is given back.
    pub pool_idle_secs: u64,
    /// After a lease call found nothing, requests needing a new exit are refused this long.
    pub retry_after_secs: u64,
    /// Most IPs held at once.
    pub max_ips: usize,
    /// Most tokens (base units) the held leases may accrue per minute.
    pub max_spend_per_minute: Option<u128>,
    /// Highest price per IP-second ever paid.
    pub max_price: u128,
    /// Attempts after which an exit's success rate is judged.
    pub judge_after: u32,
    /// Below this success rate, percent, an exit is dropped.
    pub min_success_percent: u32,
    /// An exit whose time to first byte is this many times its pool's median is dropped (when
    /// no session holds it and the pool has at least three judged exits); 0 never.
    pub slow_factor: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            warm: 4,
            batch: 8,
            lease_secs: 600,
            renew_margin_secs: 10,
            pool_idle_secs: 300,
            retry_after_secs: 2,
            max_ips: 100,
            max_spend_per_minute: None,
            max_price: u128::MAX,
            judge_after: 10,
            min_success_percent: 50,
            slow_factor: 5,
        }
    }
}

/// Where an exit is reached: the provider's proxy and the lease's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The leased IP (where traffic leaves from).
    pub ip: IpAddr,
    /// The provider's proxy.
    pub proxy: SocketAddr,
    /// The lease credentials as the proxy takes them: `Proxy-Authorization: Basic …`.
    pub authorization: http::HeaderValue,
}

impl Upstream {
    /// The exit at `proxy` for leased `ip`, with the lease's credentials (encoded once here).
    pub fn new(ip: IpAddr, proxy: SocketAddr, username: &str, password: &str) -> Self {
        use base64::Engine as _;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let authorization = http::HeaderValue::from_str(&format!("Basic {token}"))
            .unwrap_or(http::HeaderValue::from_static(""));
        Self {
            ip,
            proxy,
            authorization,
        }
    }
}

/// One exit: a leased IP of a deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExitKey {
    /// The deal.
    pub deal: u64,
    /// The IP.
    pub ip: IpAddr,
}

/// An exit handed to a request.
#[derive(Debug, Clone)]
pub struct Exit {
    /// Which one.
    pub key: ExitKey,
    /// How to reach it.
    pub upstream: Arc<Upstream>,
}

/// A leased IP the node just handed over.
#[derive(Debug, Clone)]
pub struct NewExit {
    /// Its deal.
    pub deal: u64,
    /// Where and how.
    pub upstream: Upstream,
    /// First second after the lease.
    pub end: u64,
    /// Price per IP-second.
    pub price: u128,
}

/// Why a request gets no exit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The session's exit failed or its lease ended; start a new session.
    #[error("session {session}'s exit is gone ({reason})")]
    SessionGone {
        /// The session id.
        session: String,
        /// What happened to its exit.
        reason: String,
    },
    /// The gate holds as many IPs as it may.
    #[error("holding {held} IPs, the most allowed")]
    MaxIps {
        /// IPs held.
        held: usize,
    },
    /// Leasing more would pass the spend limit.
    #[error("the leases held accrue {per_minute} a minute; the limit is {limit}")]
    SpendLimit {
        /// What the held leases accrue per minute.
        per_minute: u128,
        /// The limit.
        limit: u128,
    },
    /// The node had nothing for this filter (or refused the lease).
    #[error("no exits for {filter}: {reason}")]
    NoExits {
        /// The filter.
        filter: String,
        /// The node's reason (its error code, or `no_offers`).
        reason: String,
        /// The node's error code when it refused the lease (e.g. `unknown_country`).
        code: Option<String>,
    },
}

/// What the pool wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Lease `count` IPs for `filter`, each for `secs`, at most `max_price` per IP-second.
    Lease {
        /// The filter.
        filter: Filter,
        /// How many IPs.
        count: u32,
        /// Lease length.
        secs: u64,
        /// Highest price.
        max_price: u128,
    },
    /// End this deal now: nobody needs its IPs.
    Cancel {
        /// The deal.
        deal: u64,
        /// Whether one of its exits was dropped for failing (worth a low rating).
        bad: bool,
    },
}

/// The answer to [`Pools::pick`].
#[derive(Debug, Clone)]
pub enum Pick {
    /// Use this exit.
    Ready(Exit),
    /// A lease is on its way: wait for [`Pools::leased`] (or a failure), then pick again.
    Wait,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    /// Serves spread requests and sessions.
    Shared,
    /// Held by one rotating client connection.
    Connection(u64),
    /// Out of service: nobody picks it again.
    Retired,
}

#[derive(Debug, Clone, Default)]
struct Quality {
    attempts: u32,
    failures: u32,
    /// Exponentially weighted time to first byte, microseconds.
    ttfb_us: u64,
}

#[derive(Debug)]
struct ExitState {
    filter: Filter,
    upstream: Arc<Upstream>,
    end_ms: u64,
    claim: Claim,
    /// Sessions bound to it.
    sessions: u32,
    last_used_ms: u64,
    quality: Quality,
    dropped: bool,
}

#[derive(Debug)]
struct DealState {
    live: usize,
    ips: usize,
    price: u128,
    end_ms: u64,
}

#[derive(Debug)]
struct Session {
    /// `Err(reason)` once the exit is gone.
    exit: Result<ExitKey, String>,
    idle_ms: u64,
    last_used_ms: u64,
}

#[derive(Debug, Default)]
struct FilterPool {
    /// Shared exits, least recently used first.
    shared: VecDeque<ExitKey>,
    sessions: HashMap<String, Session>,
    connections: HashMap<u64, ExitKey>,
    /// IPs asked for in the lease call under way.
    leasing: Option<u32>,
    /// The last lease call found nothing: (when, refusal).
    failed: Option<(u64, Refusal)>,
    last_used_ms: u64,
}

/// Every exit the gate holds, by filter (see the [module docs](self)).
#[derive(Debug)]
pub struct Pools {
    config: PoolConfig,
    exits: HashMap<ExitKey, ExitState>,
    deals: HashMap<u64, DealState>,
    filters: HashMap<Filter, FilterPool>,
    /// IPs and rate of lease calls under way (their worst case).
    reserved: (usize, u128),
    actions: Vec<Action>,
}

impl Pools {
    /// An empty pool.
    pub fn new(config: PoolConfig) -> Self {
        Self {
            config,
            exits: HashMap::default(),
            deals: HashMap::default(),
            filters: HashMap::default(),
            reserved: (0, 0),
            actions: Vec::new(),
        }
    }

    /// What to do now (leases to make, deals to cancel); drains the list.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// IPs held (every IP of every deal not yet ended or cancelled).
    pub fn held_ips(&self) -> usize {
        self.deals.values().map(|d| d.ips).sum()
    }

    /// What the held leases accrue per second.
    pub fn held_rate(&self) -> u128 {
        self.deals
            .values()
            .map(|d| d.price.saturating_mul(d.ips as u128))
            .sum()
    }

    /// Sessions alive (including gone ones not yet timed out).
    pub fn sessions(&self) -> usize {
        self.filters.values().map(|f| f.sessions.len()).sum()
    }

    /// The exit for a request of `target` on client connection `conn`.
    pub fn pick(&mut self, target: &Target, conn: u64, now_ms: u64) -> Result<Pick, Refusal> {
        let filter = &target.filter;
        match self.filters.get_mut(filter) {
            Some(pool) => pool.last_used_ms = now_ms,
            None => {
                let pool = FilterPool {
                    last_used_ms: now_ms,
                    ..FilterPool::default()
                };
                self.filters.insert(filter.clone(), pool);
            }
        }
        let picked = match &target.stickiness {
            Stickiness::Spread => self.spread(filter, now_ms),
            Stickiness::Session { id, idle_secs } => {
                self.session(filter, id, idle_secs * 1_000, now_ms)?
            }
            Stickiness::Rotate => self.rotate(filter, conn, now_ms),
        };
        if let Some(exit) = picked.as_ref().and_then(|e| self.exits.get_mut(&e.key)) {
            exit.last_used_ms = now_ms;
        }
        // A spread request binds nothing, so the pool's stock is unchanged (the clock's tick
        // tops it up as leases near their end); anything else may have used a free exit.
        if picked.is_none() || target.stickiness != Stickiness::Spread {
            self.refill(filter, now_ms);
        }
        match picked {
            Some(exit) => Ok(Pick::Ready(exit)),
            None => self.waiting(filter).map(|()| Pick::Wait),
        }
    }

    /// When no exit is free: wait for the lease under way, or say why none is coming.
    fn waiting(&self, filter: &Filter) -> Result<(), Refusal> {
        let pool = self.filters.get(filter);
        if pool.is_some_and(|p| p.leasing.is_some()) {
            return Ok(());
        }
        if let Some((_, refusal)) = pool.and_then(|p| p.failed.as_ref()) {
            return Err(refusal.clone());
        }
        // No lease could be started: a limit stands in the way.
        Err(self.limit_refusal())
    }

    fn limit_refusal(&self) -> Refusal {
        let held = self.held_ips() + self.reserved.0;
        if held >= self.config.max_ips {
            return Refusal::MaxIps { held };
        }
        let per_minute = (self.held_rate() + self.reserved.1).saturating_mul(60);
        Refusal::SpendLimit {
            per_minute,
            limit: self.config.max_spend_per_minute.unwrap_or(u128::MAX),
        }
    }

    /// Shared and not about to end.
    fn usable(&self, key: &ExitKey, now_ms: u64) -> bool {
        self.exits.get(key).is_some_and(|exit| {
            exit.claim == Claim::Shared
                && exit.end_ms > now_ms + self.config.renew_margin_secs * 1_000
        })
    }

    /// Unusable exits leave the shared line (they end on their own or are retired).
    fn prune(&mut self, filter: &Filter, now_ms: u64) {
        let Some(mut shared) = self
            .filters
            .get_mut(filter)
            .map(|p| std::mem::take(&mut p.shared))
        else {
            return;
        };
        shared.retain(|key| self.usable(key, now_ms));
        if let Some(pool) = self.filters.get_mut(filter) {
            pool.shared = shared;
        }
    }

    /// The least recently used usable shared exit, moved to the back of the line.
    fn spread(&mut self, filter: &Filter, now_ms: u64) -> Option<Exit> {
        let key = loop {
            let key = self.filters.get_mut(filter)?.shared.pop_front()?;
            if self.usable(&key, now_ms) {
                break key;
            }
        };
        self.filters.get_mut(filter)?.shared.push_back(key);
        self.exit(key)
    }

    /// The usable shared exit with the fewest sessions (least recently used among equals),
    /// moved to the back of the line.
    fn least_bound(&mut self, filter: &Filter, now_ms: u64) -> Option<ExitKey> {
        self.prune(filter, now_ms);
        let pool = self.filters.get_mut(filter)?;
        let position = pool
            .shared
            .iter()
            .enumerate()
            .min_by_key(|(at, key)| (self.exits.get(key).map_or(u32::MAX, |e| e.sessions), *at))
            .map(|(at, _)| at)?;
        let key = pool.shared.remove(position)?;
        pool.shared.push_back(key);
        Some(key)
    }

    fn exit(&self, key: ExitKey) -> Option<Exit> {
        self.exits.get(&key).map(|exit| Exit {
            key,
            upstream: Arc::clone(&exit.upstream),
        })
    }

    fn session(
        &mut self,
        filter: &Filter,
        id: &str,
        idle_ms: u64,
        now_ms: u64,
    ) -> Result<Option<Exit>, Refusal> {
        let margin_ms = self.config.renew_margin_secs * 1_000;
        let existing = self
            .filters
            .get_mut(filter)
            .and_then(|pool| pool.sessions.remove(id));
        if let Some(mut session) = existing {
            let alive = now_ms.saturating_sub(session.last_used_ms) < session.idle_ms;
            match (&session.exit, alive) {
                (Err(reason), true) => {
                    let reason = reason.clone();
                    session.last_used_ms = now_ms;
                    self.filters
                        .entry(filter.clone())
                        .or_default()
                        .sessions
                        .insert(id.to_owned(), session);
                    return Err(Refusal::SessionGone {
                        session: id.to_owned(),
                        reason,
                    });
                }
                (Ok(key), true) => {
                    let key = *key;
                    let lasting = self.exits.get(&key).is_some_and(|exit| {
                        exit.claim == Claim::Shared && exit.end_ms > now_ms + margin_ms
                    });
                    if lasting {
                        session.last_used_ms = now_ms;
                        session.idle_ms = idle_ms;
                        self.filters
                            .entry(filter.clone())
                            .or_default()
                            .sessions
                            .insert(id.to_owned(), session);
                        return Ok(self.exit(key));
                    }
                    // Its lease runs out: the session moves to another exit.
                    self.unbind(key);
                }
                (Ok(key), false) => self.unbind(*key),
                (Err(_), false) => {}
            }
        }
        let Some(key) = self.least_bound(filter, now_ms) else {
            return Ok(None);
        };
        if let Some(exit) = self.exits.get_mut(&key) {
            exit.sessions += 1;
        }
        self.filters
            .entry(filter.clone())
            .or_default()
            .sessions
            .insert(
                id.to_owned(),
                Session {
                    exit: Ok(key),
                    idle_ms,
                    last_used_ms: now_ms,
                },
            );
        Ok(self.exit(key))
    }

    fn unbind(&mut self, key: ExitKey) {
        if let Some(exit) = self.exits.get_mut(&key) {
            exit.sessions = exit.sessions.saturating_sub(1);
        }
    }

    fn rotate(&mut self, filter: &Filter, conn: u64, now_ms: u64) -> Option<Exit> {
        let held = self.filters.get(filter)?.connections.get(&conn).copied();
        if let Some(key) = held {
            let still_held = self
                .exits
                .get(&key)
                .is_some_and(|exit| exit.claim == Claim::Connection(conn));
            if still_held {
                return self.exit(key);
            }
        }
        // A fresh exit: shared, with no session on it; it leaves the shared line for good.
        self.prune(filter, now_ms);
        let pool = self.filters.get_mut(filter)?;
        let position = pool
            .shared
            .iter()
            .position(|key| self.exits.get(key).is_some_and(|e| e.sessions == 0))?;
        let key = pool.shared.remove(position)?;
        pool.connections.insert(conn, key);
        if let Some(exit) = self.exits.get_mut(&key) {
            exit.claim = Claim::Connection(conn);
        }
        self.exit(key)
    }

    /// Exits of `filter` ready for a new session or connection: shared, lasting, no session.
    fn unbound(&self, filter: &Filter, now_ms: u64) -> usize {
        self.filters.get(filter).map_or(0, |pool| {
            pool.shared
                .iter()
                .filter(|key| {
                    self.usable(key, now_ms) && self.exits.get(key).is_some_and(|e| e.sessions == 0)
                })
                .count()
        })
    }

    /// Starts a lease call if `filter`'s pool runs low and the limits allow.
    fn refill(&mut self, filter: &Filter, now_ms: u64) {
        let unbound = self.unbound(filter, now_ms);
        let retry_ms = self.config.retry_after_secs * 1_000;
        let Some(pool) = self.filters.get(filter) else {
            return;
        };
        if pool.leasing.is_some() || unbound >= self.config.warm.max(1) {
            return;
        }
        if pool
            .failed
            .as_ref()
            .is_some_and(|(at, _)| now_ms < at + retry_ms)
        {
            return;
        }
        let want = u32::try_from(self.config.warm.saturating_sub(unbound))
            .unwrap_or(u32::MAX)
            .max(self.config.batch)
            .max(1);
        let price = self.lease_price(filter);
        let count = self.room(price).min(want);
        if count == 0 {
            return;
        }
        if let Some(pool) = self.filters.get_mut(filter) {
            pool.leasing = Some(count);
            pool.failed = None;
        }
        self.reserved.0 += count as usize;
        self.reserved.1 += price.saturating_mul(u128::from(count));
        self.actions.push(Action::Lease {
            filter: filter.clone(),
            count,
            secs: self.config.lease_secs,
            max_price: price,
        });
    }

    /// The highest price a lease for `filter` may pay: the crawler's, capped by the fleet's.
    fn lease_price(&self, filter: &Filter) -> u128 {
        filter
            .max_price
            .map_or(self.config.max_price, |p| p.min(self.config.max_price))
    }

    /// How many more IPs at `price` the limits allow.
    fn room(&self, price: u128) -> u32 {
        let held = self.held_ips() + self.reserved.0;
        let by_ips = self.config.max_ips.saturating_sub(held);
        let by_spend = match self.config.max_spend_per_minute {
            None => usize::MAX,
            Some(_) if price == 0 => usize::MAX,
            Some(limit) => {
                let rate = self.held_rate() + self.reserved.1;
                let room = (limit / 60).saturating_sub(rate);
                usize::try_from(room / price).unwrap_or(usize::MAX)
            }
        };
        u32::try_from(by_ips.min(by_spend)).unwrap_or(u32::MAX)
    }

    /// The node answered a lease call of `filter` with these exits (maybe none).
    pub fn leased(&mut self, filter: &Filter, exits: Vec<NewExit>, now_ms: u64) {
        self.lease_done(filter);
        let pool = self.filters.entry(filter.clone()).or_default();
        if exits.is_empty() {
            pool.failed = Some((
                now_ms,
                Refusal::NoExits {
                    filter: filter.to_string(),
                    reason: "no IP on offer matches".to_owned(),
                    code: None,
                },
            ));
            return;
        }
        for new in exits {
            let key = ExitKey {
                deal: new.deal,
                ip: new.upstream.ip,
            };
            let deal = self.deals.entry(new.deal).or_insert(DealState {
                live: 0,
                ips: 0,
                price: new.price,
                end_ms: new.end * 1_000,
            });
            deal.live += 1;
            deal.ips += 1;
            pool.shared.push_front(key);
            self.exits.insert(
                key,
                ExitState {
                    filter: filter.clone(),
                    upstream: Arc::new(new.upstream),
                    end_ms: new.end * 1_000,
                    claim: Claim::Shared,
                    sessions: 0,
                    last_used_ms: now_ms,
                    quality: Quality::default(),
                    dropped: false,
                },
            );
        }
    }

    /// The node refused a lease call of `filter` (`code` is its error code).
    pub fn lease_failed(&mut self, filter: &Filter, code: &str, message: &str, now_ms: u64) {
        self.lease_done(filter);
        let pool = self.filters.entry(filter.clone()).or_default();
        pool.failed = Some((
            now_ms,
            Refusal::NoExits {
                filter: filter.to_string(),
                reason: message.to_owned(),
                code: Some(code.to_owned()),
            },
        ));
    }

    fn lease_done(&mut self, filter: &Filter) {
        let price = self.lease_price(filter);
        if let Some(count) = self.filters.get_mut(filter).and_then(|p| p.leasing.take()) {
            self.reserved.0 = self.reserved.0.saturating_sub(count as usize);
            self.reserved.1 = self
                .reserved
                .1
                .saturating_sub(price.saturating_mul(u128::from(count)));
        }
    }

    /// A request through `key` got its first byte after `ttfb_us`.
    /// Returns whether the exit was dropped as persistently slow.
    pub fn succeeded(&mut self, key: ExitKey, ttfb_us: u64) -> bool {
        let Some(exit) = self.exits.get_mut(&key) else {
            return false;
        };
        let quality = &mut exit.quality;
        quality.attempts += 1;
        quality.ttfb_us = if quality.ttfb_us == 0 {
            ttfb_us
        } else {
            (quality.ttfb_us * 7 + ttfb_us) / 8
        };
        if !self.slow(key) {
            return false;
        }
        if let Some(exit) = self.exits.get_mut(&key) {
            exit.dropped = true;
        }
        self.gone(key, "slow");
        true
    }

    /// Whether a judged, shared, session-free exit answers far slower than its pool's median.
    fn slow(&self, key: ExitKey) -> bool {
        let Some(exit) = self.exits.get(&key) else {
            return false;
        };
        let judged = |e: &ExitState| e.quality.attempts >= self.config.judge_after;
        if self.config.slow_factor == 0
            || !judged(exit)
            || exit.claim != Claim::Shared
            || exit.sessions > 0
        {
            return false;
        }
        let mut pool: Vec<u64> = self
            .exits
            .values()
            .filter(|e| e.filter == exit.filter && e.claim != Claim::Retired && judged(e))
            .map(|e| e.quality.ttfb_us)
            .collect();
        if pool.len() < 3 {
            return false;
        }
        pool.sort_unstable();
        let median = pool[pool.len() / 2];
        exit.quality.ttfb_us > median.saturating_mul(self.config.slow_factor)
    }

    /// A request through `key` failed because of the exit. `fatal`: the provider cannot serve
    /// the lease any more (its proxy is unreachable or refuses the lease), so every exit of the
    /// deal goes; otherwise it counts against the exit's success rate, and a persistently bad
    /// exit is dropped. Returns whether anything was dropped.
    pub fn failed(&mut self, key: ExitKey, fatal: bool, reason: &str) -> bool {
        let judge_after = self.config.judge_after;
        let min_success = self.config.min_success_percent;
        let Some(exit) = self.exits.get_mut(&key) else {
            return false;
        };
        let quality = &mut exit.quality;
        quality.attempts += 1;
        quality.failures += 1;
        let successes = quality.attempts - quality.failures;
        let bad =
            quality.attempts >= judge_after && successes * 100 < min_success * quality.attempts;
        if !(fatal || bad) || exit.claim == Claim::Retired {
            return false;
        }
        exit.dropped = true;
        let victims = if fatal {
            self.deal_exits(key.deal)
        } else {
            vec![key]
        };
        for victim in victims {
            self.gone(victim, reason);
        }
        true
    }

    /// The node ended `deal` (cut, voided, dropped, completed): its exits are gone.
    pub fn ended(&mut self, deal: u64, reason: &str) {
        // Forgotten first, so taking its exits out of service does not cancel it again.
        self.deals.remove(&deal);
        for key in self.deal_exits(deal) {
            self.gone(key, reason);
            self.exits.remove(&key);
        }
    }

    fn deal_exits(&self, deal: u64) -> Vec<ExitKey> {
        self.exits
            .keys()
            .filter(|key| key.deal == deal)
            .copied()
            .collect()
    }

    /// Takes an exit out of service: sessions on it are gone, it is never picked again.
    fn gone(&mut self, key: ExitKey, reason: &str) {
        let Some(exit) = self.exits.get(&key) else {
            return;
        };
        if exit.sessions > 0
            && let Some(pool) = self.filters.get_mut(&exit.filter)
        {
            for session in pool.sessions.values_mut() {
                if session.exit == Ok(key) {
                    session.exit = Err(reason.to_owned());
                }
            }
        }
        self.retire(key);
    }

    /// Client connection `conn` closed: a rotating exit it held is retired.
    pub fn release(&mut self, conn: u64) {
        let held: Vec<ExitKey> = self
            .filters
            .values_mut()
            .filter_map(|pool| pool.connections.remove(&conn))
            .collect();
        for key in held {
            self.retire(key);
        }
    }

    fn retire(&mut self, key: ExitKey) {
        let Some(exit) = self.exits.get_mut(&key) else {
            return;
        };
        if exit.claim == Claim::Retired {
            return;
        }
        exit.claim = Claim::Retired;
        let Some(deal) = self.deals.get_mut(&key.deal) else {
            return;
        };
        deal.live = deal.live.saturating_sub(1);
        if deal.live == 0 {
            self.deals.remove(&key.deal);
            let bad = self
                .exits
                .iter()
                .any(|(k, exit)| k.deal == key.deal && exit.dropped);
            self.exits.retain(|k, _| k.deal != key.deal);
            self.actions.push(Action::Cancel {
                deal: key.deal,
                bad,
            });
        }
    }

    /// Once a second or so: sessions idle past their time end, exits nobody used for the pool's
    /// idle time are given back, leases past their end are forgotten, pools in use topped up.
    pub fn tick(&mut self, now_ms: u64) {
        let idle_ms = self.config.pool_idle_secs * 1_000;
        let mut unbind = Vec::new();
        let mut idle_filters = Vec::new();
        for (filter, pool) in &mut self.filters {
            pool.sessions.retain(|_, session| {
                let alive = now_ms.saturating_sub(session.last_used_ms) < session.idle_ms;
                if let (false, Ok(key)) = (alive, &session.exit) {
                    unbind.push(*key);
                }
                alive
            });
            if now_ms.saturating_sub(pool.last_used_ms) >= idle_ms
                && pool.sessions.is_empty()
                && pool.connections.is_empty()
                && pool.leasing.is_none()
            {
                idle_filters.push(filter.clone());
            }
        }
        for key in unbind {
            self.unbind(key);
        }
        let idle: Vec<ExitKey> = self
            .exits
            .iter()
            .filter(|(_, exit)| {
                exit.claim == Claim::Shared
                    && exit.sessions == 0
                    && now_ms.saturating_sub(exit.last_used_ms) >= idle_ms
            })
            .map(|(key, _)| *key)
            .collect();
        for key in idle {
            self.retire(key);
        }
        let ended: Vec<u64> = self
            .deals
            .iter()
            .filter(|(_, deal)| deal.end_ms <= now_ms)
            .map(|(deal, _)| *deal)
            .collect();
        for deal in ended {
            self.ended(deal, "lease_ended");
        }
        for filter in idle_filters {
            self.filters.remove(&filter);
        }
        let in_use: Vec<Filter> = self.filters.keys().cloned().collect();
        for filter in in_use {
            self.prune(&filter, now_ms);
            self.refill(&filter, now_ms);
        }
    }

    /// Whether `key` is an exit the pool still holds.
    pub fn holds(&self, key: &ExitKey) -> bool {
        self.exits.contains_key(key)
    }
}

#[cfg(test)]
mod tests;
