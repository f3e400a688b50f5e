//! `Wire`: a connection's descriptor, through its TLS session if it has one — the one
//! type the outbox flushes to and the connection tasks read from, so the plain path
//! stays the plain syscalls and TLS is one branch at each call.

use std::io;
use std::os::fd::RawFd;

use bytes::BytesMut;

use super::session::TlsSession;
use crate::rt::sys::{self, Nb};

/// A descriptor with or without a TLS session (borrowed for the call's length).
#[derive(Debug)]
pub struct Wire<'a> {
    fd: RawFd,
    tls: Option<&'a mut TlsSession>,
}

impl<'a> Wire<'a> {
    /// A plain descriptor.
    pub fn plain(fd: RawFd) -> Wire<'static> {
        Wire { fd, tls: None }
    }

    /// `fd`, through `tls` if given.
    pub fn new(fd: RawFd, tls: Option<&'a mut TlsSession>) -> Wire<'a> {
        Wire { fd, tls }
    }

    /// The descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Reads into `buf`'s spare capacity (plaintext, with TLS): see `sys::recv_into`.
    pub fn recv_into(&mut self, buf: &mut BytesMut) -> io::Result<Nb> {
        match self.tls.as_deref_mut() {
            None => sys::recv_into(self.fd, buf),
            Some(t) => t.recv_into(self.fd, buf),
        }
    }

    /// Writes `slices` in order: see `sys::send_vectored` (with TLS, the count is of
    /// plaintext taken; call [`Wire::drain`] once nothing else is left to write).
    pub fn send_vectored(&mut self, slices: &[&[u8]]) -> io::Result<Nb> {
        match self.tls.as_deref_mut() {
            None => sys::send_vectored(self.fd, slices),
            Some(t) => t.send_vectored(self.fd, slices),
        }
    }

    /// Writes what the TLS session holds unsent; true when nothing is left (always,
    /// without TLS: the plain path keeps nothing below the caller).
    pub fn drain(&mut self) -> io::Result<bool> {
        match self.tls.as_deref_mut() {
            None => Ok(true),
            Some(t) => t.drain(self.fd),
        }
    }

    /// Ends what this side sends: close_notify first with TLS, then the FIN.
    pub fn shutdown_write(&mut self) {
        if let Some(t) = self.tls.as_deref_mut() {
            t.close_notify(self.fd);
        }
        sys::shutdown_write(self.fd);
    }
}
