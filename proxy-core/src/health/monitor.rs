//! The task behind an upstream's health: sends active checks through the upstream's own
//! connector and sweeps outlier-detection timers.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderValue, Request, Uri, header};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::{ActiveCheck, CheckKind, HttpCheck};
use crate::body;
use crate::connector::{ConnectOptions, TcpDialer};
use crate::endpoint::Endpoint;
use crate::error::{UpstreamError, chain};
use crate::upstream::Upstream;

/// How often outlier-detection timers are looked at (ended ejections are logged within it).
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// The `User-Agent` of HTTP checks.
const USER_AGENT: &str = "proxy-health-check/1";

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The endpoint answered as expected.
    Passed,
    /// It did not; the reason is for the log.
    Failed(String),
    /// The probe could not be made for a reason that says nothing about the endpoint (the
    /// upstream's own connection limit); it is not counted.
    Inconclusive(String),
}

/// Probes `endpoint` once as `check` says, within `check.timeout`.
pub async fn probe(
    upstream: &Upstream,
    endpoint: &Arc<Endpoint>,
    check: &ActiveCheck,
) -> ProbeOutcome {
    let run = async {
        match &check.kind {
            CheckKind::Tcp => match TcpDialer::connect(endpoint.addr(), check.timeout).await {
                Ok(_) => ProbeOutcome::Passed,
                Err(e) => ProbeOutcome::Failed(chain(&e, true)),
            },
            CheckKind::Http(h) => http_probe(upstream, endpoint, h, check.timeout).await,
        }
    };
    tokio::time::timeout(check.timeout, run)
        .await
        .unwrap_or_else(|_| ProbeOutcome::Failed("timed out".to_owned()))
}

async fn http_probe(
    upstream: &Upstream,
    endpoint: &Arc<Endpoint>,
    check: &HttpCheck,
    timeout: Duration,
) -> ProbeOutcome {
    let mut req = Request::new(body::empty());
    *req.method_mut() = check.method.clone();
    *req.uri_mut() = Uri::from(check.path.clone());
    let host = check
        .host
        .clone()
        .or_else(|| HeaderValue::from_str(endpoint.authority().as_str()).ok());
    if let Some(host) = host {
        req.headers_mut().insert(header::HOST, host);
    }
    req.headers_mut()
        .insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    let opts = ConnectOptions {
        connect_timeout: upstream.policy().timeouts.connect.min(timeout),
    };
    let resp = match upstream.connector().send(endpoint, opts, req).await {
        Ok(r) => r,
        Err(e) if matches!(e.error, UpstreamError::ConnectionLimit) => {
            return ProbeOutcome::Inconclusive(chain(&e.error, true));
        }
        Err(e) => return ProbeOutcome::Failed(chain(&e.error, true)),
    };
    let status = resp.status().as_u16();
    if !check.status_passes(status) {
        return ProbeOutcome::Failed(format!("status {status}"));
    }
    let Some(needle) = &check.body_contains else {
        // The body is not read: a health path that streams must not time the probe out.
        return ProbeOutcome::Passed;
    };
    let mut body = resp.into_body();
    let mut seen = BytesMut::new();
    while seen.len() < HttpCheck::MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = HttpCheck::MAX_BODY - seen.len();
                    seen.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(e)) => return ProbeOutcome::Failed(format!("body: {e}")),
            None => break,
        }
    }
    if contains(&seen, needle) {
        ProbeOutcome::Passed
    } else {
        ProbeOutcome::Failed("body does not contain the expected text".to_owned())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Starts the health tasks of `upstream`: one probe loop per endpoint when active checks
/// are configured, and a sweep of outlier-detection timers. They hold the upstream weakly
/// and stop when it is dropped or [retired](Upstream::retire).
pub fn monitor(upstream: &Arc<Upstream>) {
    let weak = Arc::downgrade(upstream);
    tokio::spawn(sweep_loop(weak.clone()));
    if let Some(check) = upstream.policy().health.active.clone() {
        for index in 0..upstream.endpoints().len() {
            tokio::spawn(probe_loop(weak.clone(), index, check.clone()));
        }
    }
}

fn jitter(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(if nanos == 0 {
        0
    } else {
        fastrand::u64(..=nanos)
    })
}

async fn probe_loop(upstream: Weak<Upstream>, index: usize, check: ActiveCheck) {
    // The first probe comes soon, spread so that endpoints are not all probed at once.
    let mut delay = jitter(check.jitter.min(check.interval));
    loop {
        tokio::time::sleep(delay).await;
        let Some(up) = upstream.upgrade() else { return };
        if up.is_retired() {
            return;
        }
        let Some(endpoint) = up.endpoints().get(index).cloned() else {
            return;
        };
        let outcome = probe(&up, &endpoint, &check).await;
        if up.is_retired() {
            return;
        }
        let detail = match &outcome {
            ProbeOutcome::Passed => None,
            ProbeOutcome::Inconclusive(reason) => {
                tracing::debug!(upstream = up.name(), endpoint = %endpoint.addr(), reason = reason.as_str(), "health check not made");
                delay = check.interval + jitter(check.jitter);
                continue;
            }
            ProbeOutcome::Failed(reason) => {
                tracing::debug!(upstream = up.name(), endpoint = %endpoint.addr(), reason = reason.as_str(), "health check failed");
                Some(reason.as_str())
            }
        };
        up.record_check(index, detail.is_none(), detail, Instant::now());
        delay = check.interval + jitter(check.jitter);
    }
}

async fn sweep_loop(upstream: Weak<Upstream>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(up) = upstream.upgrade() else { return };
        if up.is_retired() {
            return;
        }
        up.sweep(Instant::now());
    }
}
