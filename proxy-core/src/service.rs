//! Calling a core service from a frontend.

use std::convert::Infallible;
use std::future::Future;

use futures_util::FutureExt as _;
use http::{Request, Response};
use tower_service::Service;

use crate::body::ProxyBody;

/// Calls `service` and unwraps its infallible result, behind a signature that states `Send`.
///
/// rustc cannot prove a generic service's future `Send` for every lifetime when an async
/// block holds it directly (the frontends spawn such blocks); a combinator's auto traits
/// follow `S::Future` directly, so every frontend calls the service through this.
pub fn call<S>(
    service: &mut S,
    req: Request<ProxyBody>,
) -> impl Future<Output = Response<ProxyBody>> + Send + 'static
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    service.call(req).map(|res| match res {
        Ok(resp) => resp,
        Err(never) => match never {},
    })
}
