//! Non-blocking socket calls made directly on a connection's descriptor.
//!
//! Why: docs/DESIGN.md §1 says an idle connection must not pin a read buffer. monoio's reads take
//! an owned buffer per pending read, so a parked read costs a buffer per connection.
//! Instead a connection waits for readiness (`TcpStream::readable`, an io_uring PollAdd)
//! and then reads here, synchronously, into the shard's one read buffer; writes gather
//! the whole outbox into one `sendmsg`. `MSG_DONTWAIT` makes each call non-blocking
//! whatever mode the descriptor is in, and `MSG_NOSIGNAL` keeps a peer reset from
//! raising SIGPIPE.

use std::io;
use std::os::fd::RawFd;

/// Outcome of a non-blocking call.
#[derive(Debug, PartialEq, Eq)]
pub enum Nb {
    /// This many bytes moved (0 from `recv` = the peer closed its side).
    Done(usize),
    /// The socket is not ready; wait for readiness.
    WouldBlock,
}

fn classify(ret: isize) -> io::Result<Nb> {
    if ret >= 0 {
        return Ok(Nb::Done(ret as usize));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Ok(Nb::WouldBlock),
        Some(libc::EINTR) => Ok(Nb::WouldBlock),
        _ => Err(e),
    }
}

/// Reads into `buf`'s spare capacity; on `Done(n)` the length has grown by `n`.
pub fn recv_into(fd: RawFd, buf: &mut bytes::BytesMut) -> io::Result<Nb> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by `buf`; recv
    // writes at most that many bytes, and we only extend the length by what it wrote.
    let ret = unsafe {
        libc::recv(
            fd,
            spare.as_mut_ptr().cast(),
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    let r = classify(ret)?;
    if let Nb::Done(n) = r {
        // SAFETY: recv initialised the first n bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
    }
    Ok(r)
}

/// Slices one [`send_vectored`] call passes to the kernel; later ones wait for the next
/// call (callers advance by the byte count returned).
pub const MAX_IOVECS: usize = 128;

/// Writes the slices in order with one gathering `sendmsg`; returns bytes written.
pub fn send_vectored(fd: RawFd, slices: &[&[u8]]) -> io::Result<Nb> {
    // Only the entries used are written (zeroing all 128 per call showed in profiles).
    let mut iov = [const { std::mem::MaybeUninit::<libc::iovec>::uninit() }; MAX_IOVECS];
    let n = slices.len().min(iov.len());
    for (v, s) in iov.iter_mut().zip(slices) {
        v.write(libc::iovec {
            iov_base: s.as_ptr() as *mut libc::c_void,
            iov_len: s.len(),
        });
    }
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // The first n entries were written above; the kernel reads only those.
    msg.msg_iov = iov.as_mut_ptr().cast();
    msg.msg_iovlen = n as _;
    // SAFETY: the first n iovecs (all the kernel reads: msg_iovlen = n) were written
    // above and point into live slices borrowed for this call; sendmsg only reads them.
    let ret = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    classify(ret)
}

/// Shuts down both halves: a task parked on the socket's readiness wakes (EOF or an
/// error), while the descriptor stays owned by its stream. Errors (already closed) are
/// moot.
/// Sets `TCP_NOTSENT_LOWAT`: the kernel takes no more from `sendmsg` once this many
/// bytes wait unsent in the socket, so a slow reader's backlog stays in user space
/// (where it is bounded, and keyed messages are conflated) instead of in a send buffer
/// of up to several MiB. Best effort: false if the kernel refused it.
pub fn set_notsent_lowat(fd: RawFd, bytes: u32) -> bool {
    let v = bytes as libc::c_int;
    // SAFETY: `fd` is an open socket; the option value is a live c_int of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            std::ptr::from_ref(&v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

pub fn shutdown(fd: RawFd) {
    // SAFETY: plain syscall on a descriptor the caller's stream still owns.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Shuts down the write half (the FIN after a close frame).
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: plain syscall on a descriptor we own; errors (already closed) are moot.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

/// Random bytes from the OS (ids, secrets).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).expect("the OS random source works");
    b
}

/// A random RFC 4122 version-4 UUID in canonical form (generated session ids).
pub fn random_uuid() -> String {
    let mut b: [u8; 16] = random_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    crate::proto::guid::format_guid(&b)
}
/// The process's soft RLIMIT_NOFILE (for log lines that explain a descriptor limit).
pub fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur
    } else {
        0
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) after.
pub fn raise_nofile_limit() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return (0, 0);
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r = want;
            }
        }
    }
    (r.rlim_cur, r.rlim_max)
}

/// A second descriptor for the same open socket (a connection handed to another
/// shard's runtime: the first descriptor stays with the runtime that accepted it).
pub fn dup(fd: RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we hold returns a new one we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(new) })
}
