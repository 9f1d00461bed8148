//! A backend's side of one connection to the worker. Sockets are
//! non-blocking; whenever one would block, the caller's `Waiter` waits (in
//! PostgreSQL: on the latch and the socket, so cancel and timeouts land
//! while a request is queued or running).

use super::protocol::{parse_header, Request, Response, HEADER_LEN};
use crate::engine::{EngineError, EngineResult};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

pub trait Waiter {
    /// Wait until `fd` is readable (or writable), or fail/unwind when the
    /// caller must stop. Spurious returns are fine.
    fn wait(&self, fd: RawFd, writable: bool) -> EngineResult<()>;
}

/// Blocks in poll(2); for tests and tools outside PostgreSQL.
pub struct PollWaiter;

impl Waiter for PollWaiter {
    fn wait(&self, fd: RawFd, writable: bool) -> EngineResult<()> {
        let mut p = libc::pollfd {
            fd,
            events: if writable { libc::POLLOUT } else { libc::POLLIN },
            revents: 0,
        };
        unsafe { libc::poll(&mut p, 1, 1000) };
        Ok(())
    }
}

const GONE: &str = "the inf_ir worker ended during this call";

pub fn worker_gone(detail: impl std::fmt::Display) -> EngineError {
    EngineError::worker(format!("{GONE} ({detail})"))
        .with_hint("the worker restarts by itself; run the statement again. The server log says why it ended")
}

/// Whether `e` says the worker's host ended (closed the connection) mid-call.
pub fn is_worker_gone(e: &EngineError) -> bool {
    e.kind == crate::engine::ErrorKind::Worker && e.message.starts_with(GONE)
}

pub struct Connection {
    stream: UnixStream,
}

impl Connection {
    pub fn connect(path: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        stream.set_nonblocking(true)?;
        Ok(Connection { stream })
    }

    /// Whether the worker closed this connection since its last answer (it
    /// restarted): the worker never sends unasked, so anything readable means closed.
    pub fn is_closed(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents != 0 }
    }

    /// Send `request` and wait for its answer. After an error the
    /// connection is in an unknown state: drop it.
    pub fn call(&mut self, request: &Request, waiter: &dyn Waiter) -> EngineResult<Response> {
        let bytes = request.encode();
        let mut sent = 0;
        while sent < bytes.len() {
            match self.stream.write(&bytes[sent..]) {
                Ok(0) => return Err(worker_gone("connection closed")),
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => waiter.wait(self.stream.as_raw_fd(), true)?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(worker_gone(e)),
            }
        }
        let mut header = [0u8; HEADER_LEN];
        self.read_exact(&mut header, waiter)?;
        let (tag, len) = parse_header(&header)?;
        let mut payload = vec![0u8; len];
        self.read_exact(&mut payload, waiter)?;
        Response::decode(tag, &payload)
    }

    fn read_exact(&mut self, buf: &mut [u8], waiter: &dyn Waiter) -> EngineResult<()> {
        let mut got = 0;
        while got < buf.len() {
            match self.stream.read(&mut buf[got..]) {
                Ok(0) => return Err(worker_gone("connection closed")),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => waiter.wait(self.stream.as_raw_fd(), false)?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(worker_gone(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_that_ended_is_told_apart_from_other_worker_errors() {
        assert!(is_worker_gone(&worker_gone("connection closed")));
        assert!(!is_worker_gone(&EngineError::worker("cannot reach the inf_ir worker")));
        assert!(!is_worker_gone(&EngineError::invalid(
            "the inf_ir worker ended during this call, said a text"
        )));
    }
}
