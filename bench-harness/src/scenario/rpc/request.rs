//! What an `rpc` request carries and how an error response is counted.
//!
//! Why it exists: the request body is shared by the workers and the limit probe (whose
//! WebSocket frames must be the ones `rpc --mode echo` sends), and the error key is how
//! every report names an error response; both are pure functions with their own tests.

use ringgate::proto::bannou::ResponseCode;

/// The request body: a JSON object of exactly `n` bytes when `n >= 8`.
pub fn payload(n: usize) -> Vec<u8> {
    match n {
        0 => Vec::new(),
        1..=7 => {
            let mut v = b"{}".to_vec();
            v.resize(n.max(2), b' ');
            v.truncate(n);
            v
        }
        _ => {
            let mut v = b"{\"p\":\"".to_vec();
            v.resize(n - 2, b'x');
            v.extend_from_slice(b"\"}");
            v
        }
    }
}

/// `"code:Name"`, the key of an error response in `RequestStats::errors`.
pub fn code_key(code: u8) -> String {
    match ResponseCode::from_u8(code) {
        Some(c) => format!("{code}:{c:?}"),
        None => format!("{code}:Unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_requested_length_and_is_json() {
        for n in [0, 1, 2, 7, 8, 9, 64, 1000] {
            let p = payload(n);
            assert_eq!(p.len(), n, "{n}");
            if n >= 8 {
                serde_json::from_slice::<serde_json::Value>(&p).unwrap();
            }
        }
        assert_eq!(payload(8), b"{\"p\":\"\"}");
    }

    #[test]
    fn code_keys() {
        assert_eq!(code_key(12), "12:TooManyRequests");
        assert_eq!(code_key(60), "60:InternalError");
        assert_eq!(code_key(250), "250:Unknown");
    }
}
