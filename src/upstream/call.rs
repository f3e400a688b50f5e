//! The call contract both backends share: where a started call's answer goes.
//!
//! Why apart: the HTTP pool and the link each keep a started call until its answer
//! arrives and then hand the answer on, and neither should know what a client
//! connection is. A client's request carries a [`Reply`] (a plain value the backend
//! keeps with the call: no allocation per request); anything else (an awaited call's
//! waker, a test) a boxed callback.

use crate::proto::http1::Response;

use super::error::BackendError;
use super::reply::Reply;

/// A callback for a started call's result.
pub type OnDone = Box<dyn FnOnce(Result<Response, BackendError>)>;

/// Where a started call's result goes, for the pool (`upstream::http::Pool::start`) and the link
/// (`upstream::link::Link::start`) alike: a client's [`Reply`] (a plain value, kept with
/// the call: no allocation per request), or any callback (boxed: an awaited link
/// call's waker, tests).
pub enum Done {
    Reply(Reply),
    Callback(OnDone),
}

impl Done {
    /// Hands `result` over.
    pub fn run(self, result: Result<Response, BackendError>) {
        match self {
            Done::Reply(r) => r.send(result),
            Done::Callback(f) => f(result),
        }
    }
}
