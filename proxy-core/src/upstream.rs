//! An upstream: a named pool of endpoints with its balancer, timeouts and retry policy.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::balance::{self, Balancer, BalancerKind, PickContext};
use crate::connector::{ConnectOptions, Connector};
use crate::endpoint::{Endpoint, PassiveHealth};

/// Where a consistent-hash balancer takes its key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// The value of a request header.
    Header(http::HeaderName),
    /// The value of a cookie.
    Cookie(String),
}

/// Timeouts for each phase of an upstream exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// From sending the request to the response head.
    pub response_header: Duration,
    /// Longest pause between two pieces of the response body.
    pub idle: Duration,
}

impl Default for Timeouts {
    /// nginx-like defaults: 5 s connect, 60 s for the response head and between body reads.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            response_header: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

/// Settings of an upstream apart from its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamPolicy {
    /// The balancing algorithm.
    pub balancer: BalancerKind,
    /// Key source for consistent hashing.
    pub hash_key: Option<HashKey>,
    /// Passive health (ejection) settings.
    pub health: PassiveHealth,
    /// Phase timeouts.
    pub timeouts: Timeouts,
    /// Most endpoints one request may be sent to (first try included).
    pub max_attempts: u32,
}

impl Default for UpstreamPolicy {
    fn default() -> Self {
        UpstreamPolicy {
            balancer: BalancerKind::RoundRobin,
            hash_key: None,
            health: PassiveHealth::default(),
            timeouts: Timeouts::default(),
            max_attempts: 3,
        }
    }
}

/// A named pool of endpoints and how to reach them.
pub struct Upstream {
    name: Arc<str>,
    endpoints: Vec<Arc<Endpoint>>,
    balancer: Box<dyn Balancer>,
    policy: UpstreamPolicy,
    connector: Arc<dyn Connector>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Builds an upstream; the balancer is created from `policy.balancer`.
    pub fn new(
        name: impl Into<Arc<str>>,
        endpoints: Vec<Arc<Endpoint>>,
        policy: UpstreamPolicy,
        connector: Arc<dyn Connector>,
    ) -> Self {
        let balancer = balance::build(policy.balancer, &endpoints);
        Upstream {
            name: name.into(),
            endpoints,
            balancer,
            policy,
            connector,
        }
    }

    /// The upstream's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoints, in configuration order.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The policy.
    pub fn policy(&self) -> &UpstreamPolicy {
        &self.policy
    }

    /// The connector requests to this upstream go through.
    pub fn connector(&self) -> &Arc<dyn Connector> {
        &self.connector
    }

    /// Options passed to the connector on each send.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            connect_timeout: self.policy.timeouts.connect,
        }
    }

    /// Picks an endpoint not in `tried`, or `None` when none is eligible.
    pub fn pick(&self, now: Instant, tried: &[usize], hash: Option<u64>) -> Option<usize> {
        self.balancer
            .pick(&self.endpoints, &PickContext { now, tried, hash })
    }

    /// How long until the first ejected endpoint returns (for `Retry-After`).
    pub fn retry_after(&self, now: Instant) -> Duration {
        self.endpoints
            .iter()
            .map(|e| e.ejected_for(now))
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(Duration::from_secs(1))
    }
}
