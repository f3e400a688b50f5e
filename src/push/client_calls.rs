//! Calls a backend made to a client (service → client RPC, link action CALL_CLIENT)
//! that wait for the client's answer, on the shard that holds the client.
//!
//! Why a table per shard, keyed by (session, message id): the client answers with a
//! response frame carrying the request's message id, on its own connection, so the
//! shard that sent the request is the one that sees the answer; the entry says which
//! shard's link, service and call the answer goes back to. Entries leave on the answer,
//! on the timeout, or when the client goes (answered 31).

use std::collections::HashMap;
use std::sync::Arc;

/// Where a client's answer goes: the link of `service` on shard `origin`, call `call`.
#[derive(Debug, Clone)]
pub struct ClientCall {
    pub origin: u16,
    pub service: Arc<str>,
    pub call: u64,
}

/// The calls to clients of one shard awaiting their answers.
#[derive(Debug, Default)]
pub struct ClientCalls {
    waiting: HashMap<(u64, u64), ClientCall, ahash::RandomState>,
}

impl ClientCalls {
    /// A request with `message_id` went to session `session` (its shard-unique number).
    pub fn insert(&mut self, session: u64, message_id: u64, call: ClientCall) {
        self.waiting.insert((session, message_id), call);
    }

    /// The call a client's response frame answers, if it is still awaited.
    pub fn take(&mut self, session: u64, message_id: u64) -> Option<ClientCall> {
        self.waiting.remove(&(session, message_id))
    }

    /// Session `session` ended: the calls it will never answer.
    pub fn take_session(&mut self, session: u64) -> Vec<ClientCall> {
        if self.waiting.is_empty() {
            return Vec::new();
        }
        let keys: Vec<_> = self
            .waiting
            .keys()
            .filter(|(s, _)| *s == session)
            .copied()
            .collect();
        keys.iter().filter_map(|k| self.waiting.remove(k)).collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: u64) -> ClientCall {
        ClientCall {
            origin: 0,
            service: "svc".into(),
            call: n,
        }
    }

    #[test]
    fn an_answer_is_matched_once_by_session_and_message_id() {
        let mut t = ClientCalls::default();
        t.insert(1, 100, call(7));
        t.insert(2, 100, call(8));
        assert!(t.take(1, 101).is_none());
        assert_eq!(t.take(1, 100).unwrap().call, 7);
        assert!(t.take(1, 100).is_none(), "only once");
        assert_eq!(t.take_session(2).len(), 1);
        assert_eq!(t.len(), 0);
    }
}
