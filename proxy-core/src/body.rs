//! The one body type every frontend and connector converts to at its boundary.

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// Error type carried by [`ProxyBody`]: whatever the producing side failed with.
pub type BodyError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The boxed, streaming body used for requests and responses inside the core.
///
/// Frontends erase their wire body into this once; the core never sees hyper, h2 or h3 bodies.
pub type ProxyBody = UnsyncBoxBody<Bytes, BodyError>;

/// An empty body (end of stream at once).
pub fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body holding exactly these bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any body whose error converts into [`BodyError`].
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BodyError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// True when the body is known to carry no bytes, so a request built on it can be replayed.
pub fn is_empty(body: &ProxyBody) -> bool {
    body.is_end_stream() || body.size_hint().exact() == Some(0)
}
