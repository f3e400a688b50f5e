//! A canned HTTP/1.1 backend on 127.0.0.1 for the pool's tests (std threads, one
//! per connection): it records every request it reads and answers by route,
//! misbehaving on request (slow, hanging up, closing or resetting; see `serve_conn`).
//!
//! Why apart: it is test scaffolding, not the pool, and the pool's tests read better
//! without two hundred lines of server in front of them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream as StdStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub(super) struct Recorded {
    /// The connection it came on: 1 for the first accepted, and so on.
    pub(super) conn: usize,
    pub(super) method: String,
    pub(super) path: String,
    headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Recorded {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
pub(super) struct Stats {
    accepted: AtomicUsize,
    open: AtomicUsize,
    /// The most connections open at once.
    pub(super) max_open: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
}

pub(super) struct Server {
    pub(super) addr: SocketAddr,
    pub(super) stats: Arc<Stats>,
}

impl Server {
    pub(super) fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let st = stats.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let id = st.accepted.fetch_add(1, SeqCst) + 1;
                let open = st.open.fetch_add(1, SeqCst) + 1;
                st.max_open.fetch_max(open, SeqCst);
                let st = st.clone();
                thread::spawn(move || {
                    serve_conn(stream, id, &st);
                    st.open.fetch_sub(1, SeqCst);
                });
            }
        });
        Server { addr, stats }
    }

    pub(super) fn url(&self, base: &str) -> String {
        format!("http://{}{base}", self.addr)
    }

    pub(super) fn accepted(&self) -> usize {
        self.stats.accepted.load(SeqCst)
    }

    pub(super) fn requests(&self) -> Vec<Recorded> {
        self.stats.requests.lock().unwrap().clone()
    }
}

/// Read one request; `None` on EOF/error.
fn read_request(s: &mut StdStream, buf: &mut Vec<u8>, conn: usize) -> Option<Recorded> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = req.parse(buf) {
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            let (method, path) = (req.method.unwrap().to_owned(), req.path.unwrap().to_owned());
            while buf.len() < n + len {
                read_more(s, buf)?;
            }
            let body = buf[n..n + len].to_vec();
            buf.drain(..n + len);
            return Some(Recorded {
                conn,
                method,
                path,
                headers,
                body,
            });
        }
        read_more(s, buf)?;
    }
}

fn read_more(s: &mut StdStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut tmp = [0u8; 16 * 1024];
    match s.read(&mut tmp) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Some(())
        }
    }
}

fn ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

/// Routes (on the last path segment(s)):
/// `echo` → 200 with the request body; `chunked`; `close-delimited`;
/// `slow` → 1.5 s delay; `close-after` → respond, then close;
/// `close-header` → after 50 ms respond with `Connection: close`, then close;
/// `hangup` → close without responding;
/// `drop-next` / `reset-next` → respond, then read the next request on
/// this connection and close (FIN / RST) without answering it;
/// `delay/<ms>/<tag>` → respond `tag` after `ms`.
fn serve_conn(mut s: StdStream, conn: usize, st: &Stats) {
    let mut buf = Vec::new();
    let mut kill_next: Option<bool> = None; // Some(rst?)
    while let Some(req) = read_request(&mut s, &mut buf, conn) {
        st.requests.lock().unwrap().push(req.clone());
        if let Some(rst) = kill_next {
            if rst {
                set_linger_zero(&s);
            }
            return;
        }
        let path = req.path.as_str();
        let resp = if path.ends_with("/echo") {
            ok(&req.body)
        } else if path.ends_with("/chunked") {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n2\r\n, \r\nd\r\nchunked world\r\n0\r\nX-Trailer: t\r\n\r\n"
                .to_vec()
        } else if path.ends_with("/close-delimited") {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the very end");
            return;
        } else if path.ends_with("/slow") {
            thread::sleep(Duration::from_millis(1500));
            ok(b"too late")
        } else if path.ends_with("/hangup") {
            return;
        } else if path.ends_with("/close-header") {
            // Late enough that requests pipelined behind it are sent.
            thread::sleep(Duration::from_millis(50));
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nlast",
            );
            return;
        } else if path.ends_with("/close-after") {
            let _ = s.write_all(&ok(b"first"));
            return;
        } else if path.ends_with("/drop-next") || path.ends_with("/reset-next") {
            kill_next = Some(path.ends_with("/reset-next"));
            ok(b"served")
        } else if let Some(rest) = path.split("/delay/").nth(1) {
            let (ms, tag) = rest.split_once('/').unwrap();
            thread::sleep(Duration::from_millis(ms.parse().unwrap()));
            ok(tag.as_bytes())
        } else {
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()
        };
        if s.write_all(&resp).is_err() {
            return;
        }
    }
}

fn set_linger_zero(s: &StdStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket fd and a properly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}
