//! The response body of every endpoint: a whole buffer, or chunks handed over by a
//! task (the `/events?follow` stream).
//!
//! ```text
//! Body::full("ok\n")        one frame, Content-Length set by hyper
//! Body::stream(receiver)    one frame per chunk received, chunked encoding; the end
//!                           of the stream is the sender being dropped
//! ```

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// The whole body at once (`None` once sent).
    Full(Option<Bytes>),
    /// Chunks sent by a producer task; dropping this drops the receiver, which the
    /// producer sees as `Sender::closed`, so a client going away ends the task.
    Stream(mpsc::Receiver<Bytes>),
}

impl Body {
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Body::Full((!data.is_empty()).then_some(data))
    }

    pub fn stream(chunks: mpsc::Receiver<Bytes>) -> Self {
        Body::Stream(chunks)
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::Stream(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(Frame::data(c)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}
