//! Owning a server process: spawn it with its output in a log file, probe it until ready,
//! and make sure it dies with us.
//!
//! Servers are spawned from one long-lived "keeper" thread with `PR_SET_PDEATHSIG`, because
//! that signal fires when the *thread* that forked the child exits: spawned from a test's
//! own thread, a shared server would be killed as soon as that test finished. From the
//! keeper thread it fires only when the whole test process is gone, even on a crash or
//! SIGKILL, so no server outlives its run.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use crate::{Error, Result};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// A running server, killed (with its whole process group) when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Mutex<Child>,
    log: PathBuf,
    stop_signal: libc::c_int,
    group_killed: AtomicBool,
}

impl ServerProcess {
    /// Starts `command` with stdout and stderr appended to `log`, in its own process group.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io(format!("opening {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(Error::io(format!("opening {}", log.display())))?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        set_parent_death_signal(&mut command);
        let (reply, answer) = mpsc::channel();
        keeper()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send((command, reply))
            .map_err(|_| Error::Protocol("the process keeper thread is gone".into()))?;
        let child = answer
            .recv()
            .map_err(|_| Error::Protocol("the process keeper thread is gone".into()))?
            .map_err(|source| Error::ServerStart {
                server: name.to_owned(),
                reason: format!("cannot execute: {source}"),
                log: log.to_path_buf(),
                log_tail: String::new(),
            })?;
        Ok(ServerProcess {
            name: name.to_owned(),
            child: Mutex::new(child),
            log: log.to_path_buf(),
            stop_signal: libc::SIGTERM,
            group_killed: AtomicBool::new(false),
        })
    }

    /// Sets the signal [`stop`](Self::stop) sends (SIGTERM unless set; PostgreSQL wants
    /// SIGINT, as SIGTERM waits for every client to leave).
    pub fn with_stop_signal(mut self, signal: libc::c_int) -> Self {
        self.stop_signal = signal;
        self
    }

    /// The server's name as used in messages, e.g. `synapse`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.lock().id()
    }

    /// The log file that receives the server's output.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// The exit status if the process has ended.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.lock().try_wait().ok().flatten()
    }

    /// A start failure of this server, with its log tail.
    pub fn start_error(&self, reason: impl Into<String>) -> Error {
        Error::ServerStart {
            server: self.name.clone(),
            reason: reason.into(),
            log: self.log.clone(),
            log_tail: self.log_tail(40),
        }
    }

    /// Calls `probe` until it says ready. Fails with the log tail if the process exits
    /// first or `timeout` passes.
    pub async fn wait_ready<F, Fut>(&self, timeout: Duration, mut probe: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            if let Some(status) = self.exit_status() {
                return Err(self.start_error(format!("exited early with {status}")));
            }
            if probe().await {
                tracing::debug!(server = %self.name, elapsed = ?start.elapsed(), "ready");
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(self.start_error(format!("not ready after {timeout:?}")));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Kills the process group at once and reaps the process.
    pub fn kill(&self) {
        let mut child = self.lock();
        // The group is signalled even when the leader is gone: a worker it forked may still
        // run in it and hold its ports or files. Only once, though: once the group is empty
        // its id may be reused, and a later signal could hit a stranger's group.
        if !self.group_killed.swap(true, Ordering::SeqCst) {
            signal_group(child.id(), libc::SIGKILL);
        }
        // A leader that left the group is not reached by the group signal.
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Asks the server to stop (its stop signal to its group) and waits up to `grace`
    /// before killing it.
    pub async fn stop(&self, grace: Duration) {
        let pid = self.pid();
        signal_group(pid, self.stop_signal);
        let start = Instant::now();
        while self.exit_status().is_none() && start.elapsed() < grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a log file (at most its last 64 KiB are read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a short setup command to completion (e.g. `initdb`), failing with its output.
pub fn run_to_completion(what: &str, command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .map_err(Error::io(format!("running {what}")))?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Protocol(format!(
        "{what} failed with {}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )))
}

fn keeper() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    KEEPER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testbed-process-keeper".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
                // The sender lives in a static, so this loop (and thread) never ends
                // before the process does.
            })
            .expect("cannot start the process keeper thread");
        Mutex::new(requests)
    })
}

#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (prctl), touching no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals the process group the server leads
    // (it was spawned with process_group(0)); it touches no memory.
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// Makes `command` run as the system user `user` when we are root, else as ourselves.
///
/// Servers that refuse root (PostgreSQL) or switch to another user by themselves (ngircd)
/// are started as that user directly: a process that changes its own credentials loses
/// its parent-death signal and would outlive the test run.
pub fn run_as_system_user(command: &mut Command, user: &str) -> Result<()> {
    if is_root()? {
        let (uid, gid) = system_user_ids(user)?;
        command.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    Ok(())
}

/// Whether this process runs as root.
pub fn is_root() -> Result<bool> {
    Ok(id(&["-u"])? == 0)
}

/// The uid and gid of a system user.
pub fn system_user_ids(user: &str) -> Result<(u32, u32)> {
    Ok((id(&["-u", user])?, id(&["-g", user])?))
}

fn id(args: &[&str]) -> Result<u32> {
    let output = Command::new("id")
        .args(args)
        .output()
        .map_err(Error::io("running id"))?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| Error::Missing(format!("no such user: id {}", args.join(" "))))
}

/// A free TCP port on 127.0.0.1. Ports handed out in this process are never handed out
/// twice, so two servers started in one run cannot be given the same one.
pub fn free_port() -> Result<u16> {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..100 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(Error::io("binding a probe socket"))?;
        let port = listener
            .local_addr()
            .map_err(Error::io("reading a probe socket"))?
            .port();
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    Err(Error::Protocol("no free port found".into()))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}
