//! The way out: the writer task, which sends the whole write buffer with one `sendmsg`
//! whenever it has bytes, and the flush it (and a closing connection) uses. Whoever
//! puts bytes into the write buffer wakes it ([`Inner::wake_writer`]). A `wss://`
//! link's bytes go through its TLS session (`tls::Wire`): a flush is done only when
//! rustls holds nothing unsent either.

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::task::Poll;

use monoio::net::TcpStream;

use crate::rt::sys::{self, Nb};
use crate::tls::Wire;

use super::inner::{Inner, READ_CHUNK};

impl Inner {
    pub(super) fn wake_writer(&self) {
        if let Some(w) = self.writer.borrow_mut().take() {
            w.wake();
        }
    }

    /// Sends what is unsent: `Ok(true)` when all of it went (with TLS: and rustls holds
    /// nothing encrypted unsent), `Ok(false)` when the socket is full.
    pub(super) fn flush(&self, fd: RawFd) -> io::Result<bool> {
        let mut st = self.st.borrow_mut();
        let mut tls = self.conn_tls.borrow_mut();
        let mut wire = Wire::new(fd, tls.as_deref_mut());
        while st.sent < st.wbuf.len() {
            match wire.send_vectored(&[&st.wbuf[st.sent..]])? {
                Nb::Done(n) => st.sent += n,
                Nb::WouldBlock => {
                    // A socket that never drains completely must not keep what was sent.
                    if st.sent >= READ_CHUNK && st.sent * 2 >= st.wbuf.len() {
                        let sent = std::mem::take(&mut st.sent);
                        st.wbuf.drain(..sent);
                    }
                    return Ok(false);
                }
            }
        }
        st.wbuf.clear();
        st.sent = 0;
        if st.wbuf.capacity() > 4 * READ_CHUNK {
            st.wbuf = Vec::new();
        }
        wire.drain()
    }
}

/// Sends the write buffer whenever it has bytes, until the connection is dead.
pub(super) async fn write_loop(link: Rc<Inner>, stream: Rc<TcpStream>, dead: Rc<Cell<bool>>) {
    let fd = stream.as_raw_fd();
    'serve: loop {
        poll_fn(|cx| {
            let st = link.st.borrow();
            if dead.get() || st.sent < st.wbuf.len() {
                Poll::Ready(())
            } else {
                *link.writer.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        // Until all is written: with TLS that includes what rustls holds encrypted,
        // which the write buffer no longer shows.
        loop {
            if dead.get() {
                return;
            }
            match link.flush(fd) {
                Ok(true) => break,
                Ok(false) => {
                    if stream.writable(false).await.is_err() {
                        break 'serve;
                    }
                }
                Err(e) => {
                    tracing::debug!(service = %link.service, error = %e, "backend link write failed");
                    break 'serve;
                }
            }
        }
    }
    // Wake the reader with EOF: the link task notices and tears down.
    dead.set(true);
    sys::shutdown(fd);
}
