//! The shared inference worker's PostgreSQL side: registration at preload,
//! and the supervisor, a background worker that owns the socket and runs the
//! model host in a child process, restarting it when it dies.
//!
//! Why a child process: PostgreSQL restarts the whole server when any
//! process attached to shared memory dies abnormally. ONNX Runtime runs in a
//! child that detaches from shared memory, so a crash or an OOM kill there
//! costs only the requests in flight, never the sessions.

use crate::pg::gucs;
use crate::worker::host::{self, HostSettings};
use crate::worker::SOCKET_PATH;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::prelude::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set in the postmaster when inf_ir is preloaded; backends inherit it by fork.
static PRELOADED: AtomicBool = AtomicBool::new(false);

/// A host that lived less than this is restarted after a pause, not at once.
const QUICK_DEATH: Duration = Duration::from_secs(5);
const RESTART_PAUSE: Duration = Duration::from_secs(1);

pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

/// Called from `_PG_init`: register the worker when loaded at server start.
pub fn register_if_preloading() {
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    PRELOADED.store(true, Ordering::Relaxed);
    BackgroundWorkerBuilder::new("inf_ir worker")
        .set_type("inf_ir worker")
        .set_library("inf_ir")
        .set_function("inf_ir_worker_main")
        .set_start_time(BgWorkerStartTime::PostmasterStart)
        .set_restart_time(Some(RESTART_PAUSE))
        .load();
}

// The postmaster starts this through the library's symbol table.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn inf_ir_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(
        SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM | SignalWakeFlags::SIGCHLD,
    );
    // The working directory is the data directory (0700): only the server's
    // OS user can reach the socket.
    let _ = std::fs::remove_file(SOCKET_PATH);
    // No host yet, so no search copies: backends need not send index writes.
    let _ = std::fs::remove_file(crate::worker::search_copies::MARKER_PATH);
    if let Some(dir) = std::path::Path::new(SOCKET_PATH).parent() {
        let _ = std::fs::create_dir_all(dir); // initdb makes it; a restored copy may lack it
    }
    let listener =
        UnixListener::bind(SOCKET_PATH).unwrap_or_else(|e| error!("inf_ir worker cannot listen on {SOCKET_PATH}: {e}"));
    let _ = std::fs::set_permissions(SOCKET_PATH, std::fs::Permissions::from_mode(0o600));
    let mut host: Option<(libc::pid_t, Instant)> = None;
    let mut starts = 0u64;
    let mut next_start = Instant::now();
    loop {
        if host.is_none() && Instant::now() >= next_start {
            starts += 1;
            host = start_host(&listener, starts).map(|pid| (pid, Instant::now()));
            if host.is_none() {
                next_start = Instant::now() + RESTART_PAUSE;
            }
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_millis(250))) {
            break; // SIGTERM (shutdown) or the postmaster died
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if let Some((pid, since)) = host {
            if let Some(how) = reap(pid) {
                log!("inf_ir worker: model host (pid {pid}) {how}; starting a new one");
                host = None;
                next_start = if since.elapsed() < QUICK_DEATH {
                    Instant::now() + RESTART_PAUSE
                } else {
                    Instant::now()
                };
            }
        }
    }
    if let Some((pid, _)) = host {
        stop_host(pid);
    }
    let _ = std::fs::remove_file(SOCKET_PATH);
    let _ = std::fs::remove_file(crate::worker::search_copies::MARKER_PATH);
}

/// `Some(description)` once the host has exited.
fn reap(pid: libc::pid_t) -> Option<String> {
    let mut status = 0;
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r != pid {
        return None;
    }
    Some(if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("exited with code {}", libc::WEXITSTATUS(status))
    })
}

fn stop_host(pid: libc::pid_t) {
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if reap(pid).is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

extern "C" {
    // In the server binary; not in pgrx's bindings. Unmaps the main shared
    // memory segment, as PostgreSQL's own syslogger does after its fork.
    fn PGSharedMemoryDetach();
}

fn start_host(listener: &UnixListener, starts: u64) -> Option<libc::pid_t> {
    let settings = HostSettings {
        threads: gucs::threads(),
        batch: gucs::batch_options(),
        batch_wait: gucs::worker_batch_wait(),
        background_yield: gucs::background_yield(),
        max_models: gucs::worker_max_models(),
        supervisor_pid: std::process::id() as i32,
        host_starts: starts,
        embed_device: gucs::embed_device(),
        onnxruntime_cuda: gucs::onnxruntime_cuda(),
    };
    // The supervisor is single-threaded, so fork is safe here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        warning!(
            "inf_ir worker cannot start its model host: {}",
            std::io::Error::last_os_error()
        );
        return None;
    }
    if pid == 0 {
        let listener = listener.try_clone();
        unsafe { become_host_process(settings.supervisor_pid) };
        let code = match listener {
            Ok(listener) => match std::panic::catch_unwind(move || host::serve(listener, settings)) {
                Ok(e) => {
                    host::log(&format!("stopped: {e}"));
                    1
                }
                Err(_) => 2,
            },
            Err(e) => {
                host::log(&format!("cannot use the socket: {e}"));
                1
            }
        };
        // _exit: PostgreSQL's exit handlers belong to the supervisor.
        unsafe { libc::_exit(code) };
    }
    log!("inf_ir worker: model host started (pid {pid})");
    Some(pid)
}

/// Turn the forked child into a plain process: die with the supervisor,
/// default signal handling, no PostgreSQL shared memory.
unsafe fn become_host_process(supervisor: i32) {
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    if libc::getppid() != supervisor {
        libc::_exit(0); // the supervisor died before the prctl
    }
    for signal in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGCHLD,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
    ] {
        libc::signal(signal, libc::SIG_DFL);
    }
    libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    let mut none: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut none);
    libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    pg_sys::set_ps_display(c"model host".as_ptr());
    PGSharedMemoryDetach();
}
