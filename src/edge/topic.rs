//! Topic endpoints (seed 004: a pose controller streams binary frames to games):
//! endpoints the gateway answers itself — publish the caller's payload to a topic,
//! subscribe or unsubscribe the caller — with no backend hop. Roles apply as to any
//! endpoint (checked before this is reached).

use std::rc::Rc;

use bytes::Bytes;

use crate::proto::bannou::REQUEST_HEADER_LEN;
use crate::proto::bannou::{flags, RequestHeader, ResponseCode, ResponseHeader};
use crate::registry::{Action, KeyFrom};
use crate::session::ConnShared;
use crate::shard::ShardCtx;

use super::answer::answer_error;

/// Carries out a topic endpoint's `action` for the caller and answers code 0 with an
/// empty payload (nothing for an event). `message` is the whole client message.
pub fn run(
    ctx: &ShardCtx,
    shared: &Rc<ConnShared>,
    header: &RequestHeader,
    action: &Action,
    message: &Bytes,
) -> ResponseCode {
    let code = match action {
        Action::Forward => return ResponseCode::InternalError,
        _ if header.flags & flags::META != 0 => ResponseCode::NotFound,
        Action::Publish { topic, key } => {
            let s = &shared.session;
            let key = match key {
                Some(KeyFrom::Session) => Some(&*s.session_id),
                Some(KeyFrom::Account) => Some(s.account_id.as_deref().unwrap_or(&s.session_id)),
                None => None,
            };
            let binary = header.flags & flags::BINARY != 0;
            match ctx
                .plane
                .hub
                .publish(topic, key, binary, &message[REQUEST_HEADER_LEN..])
            {
                Ok(_) => ResponseCode::Ok,
                Err(e) => {
                    tracing::warn!(shard = ctx.id, topic = %topic, error = %e, "topic endpoint could not publish");
                    ResponseCode::InternalError
                }
            }
        }
        Action::Subscribe(topic) => {
            ctx.plane.subscribe(shared, topic);
            ResponseCode::Ok
        }
        Action::Unsubscribe(topic) => {
            ctx.plane.unsubscribe(shared, topic);
            ResponseCode::Ok
        }
    };
    if code == ResponseCode::Ok {
        if header.flags & flags::EVENT == 0 {
            shared.send_binary(
                &ResponseHeader::answering(header, ResponseCode::Ok).encode(),
                Bytes::new(),
            );
        }
    } else {
        answer_error(shared, header, code);
    }
    code
}
