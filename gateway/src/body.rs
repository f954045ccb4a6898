//! The body type the gateway sends both ways: a stream passed through, bytes it holds,
//! or nothing. An enum rather than a boxed trait object, so no allocation per request.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::{Full, LengthLimitError, Limited};
use hyper::body::Incoming;

/// Errors while streaming a body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body.
#[derive(Debug)]
pub enum Body {
    /// No body.
    Empty,
    /// Bytes in memory.
    Full(Full<Bytes>),
    /// A stream from the other side, passed through.
    Stream(Incoming),
    /// A client's stream, cut off with an error past the size limit.
    Limited(Limited<Incoming>),
}

impl Body {
    /// A body of these bytes (empty bytes make an empty body).
    pub fn bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() { Self::Empty } else { Self::Full(Full::new(bytes)) }
    }
}

/// Whether a streaming error was the size limit.
pub fn is_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(full) => Pin::new(full).poll_frame(cx).map_err(|never| match never {}),
            Body::Stream(incoming) => Pin::new(incoming).poll_frame(cx).map_err(Into::into),
            Body::Limited(limited) => Pin::new(limited).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(full) => full.is_end_stream(),
            Body::Stream(incoming) => incoming.is_end_stream(),
            Body::Limited(limited) => limited.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(full) => full.size_hint(),
            Body::Stream(incoming) => incoming.size_hint(),
            Body::Limited(limited) => limited.size_hint(),
        }
    }
}
