//! Running external tools (Blender, Python with cascadio, ffmpeg) for modules, and probing
//! for them at start-up.
//!
//! A tool runs in a process group of its own. The running future owns a guard that kills
//! the whole group when it is dropped, which is how the executor's timeout and cancellation
//! reach the tool: nothing a module starts outlives its attempt. Errors carry the tail of
//! the tool's output, which is what an operator needs to see first.
//!
//! A worker killed with SIGKILL runs none of that, so a tool is also started under
//! util-linux `setpriv --pdeathsig KILL`: the kernel kills it when the worker dies. (The
//! parent that counts is the thread that spawned it; tools are spawned from the runtime's
//! worker threads, which live as long as the worker.)

use crate::module::ModuleError;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Lines of output kept for errors and logs.
const TAIL_LINES: usize = 40;

/// A finished tool run.
#[derive(Debug)]
pub(crate) struct Ran {
    pub(crate) stdout: String,
    /// The last lines of stdout and stderr together, for logs.
    pub(crate) tail: String,
    pub(crate) wall: Duration,
}

/// Kills the tool's process group unless the tool has been waited for.
pub(crate) struct GroupGuard {
    pgid: Option<i32>,
}

/// A long-lived tool (a warm Blender): started in a process group of its own with piped
/// stdin, stdout and stderr, under `setpriv --pdeathsig KILL`. The guard kills the group.
pub(crate) fn serve(program: &str, args: &[&OsStr], cwd: &Path) -> std::io::Result<(tokio::process::Child, GroupGuard)> {
    let mut cmd = command(program)?;
    cmd.args(args).current_dir(cwd).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let child = cmd.spawn()?;
    let guard = GroupGuard { pgid: child.id().map(|id| id as i32) };
    Ok((child, guard))
}

/// Why a tool that was killed by `signal` failed: not about the input, so another attempt,
/// perhaps on another host, may succeed.
pub(crate) fn killed(what: &str, program: &str, signal: i32, log_tail: String) -> ModuleError {
    let name = Signal::try_from(signal).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {signal}"));
    let hint = if signal == 9 { "; likely out of memory: lower this host's `concurrency` or the render's resolution" } else { "" };
    ModuleError::Host { message: format!("{what} failed: `{program}` was killed by {name}{hint}"), log_tail: Some(log_tail) }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// A tool that would not start: a host fault (retryable elsewhere), with the fix.
pub(crate) fn cannot_start(what: &str, program: &str, e: &dyn std::fmt::Display) -> ModuleError {
    ModuleError::Host {
        message: format!("{what}: cannot start `{program}` on this host: {e}; install it or set its path in the worker's [tools] settings"),
        log_tail: None,
    }
}

/// The last `TAIL_LINES` lines of `text`.
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Runs `program args` in `cwd` to the end. A non-zero exit is an error whose message is
/// `what` failed plus the line the tool marked as its error (`renderfleet-error: ...`), if
/// any, and whose log tail is the tool's output. `fatal_exit` decides whether another
/// attempt could help.
pub(crate) async fn run(program: &str, args: &[&OsStr], cwd: &Path, what: &str, fatal_exit: bool) -> Result<Ran, ModuleError> {
    let started = Instant::now();
    // About this host, not the input: another host may have the tool, so the node is
    // retried there, and a host that keeps failing so quarantines the module.
    let cannot_start = |e: &dyn std::fmt::Display| cannot_start(what, program, e);
    let mut cmd = command(program).map_err(|e| cannot_start(&e))?;
    cmd.args(args).current_dir(cwd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| cannot_start(&e))?;
    let guard = GroupGuard { pgid: child.id().map(|id| id as i32) };
    let (mut out, mut err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let (status, _, _) = tokio::join!(child.wait(), out.read_to_end(&mut stdout), err.read_to_end(&mut stderr));
    // Reap whatever the tool left in its group (a helper process it forked).
    drop(guard);
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    let both = format!("{stdout}\n{stderr}");
    let log_tail = tail(both.trim());
    let status = status.map_err(|e| ModuleError::Retryable { message: format!("{what}: waiting for `{program}`: {e}"), log_tail: None })?;
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        // Killed from outside (the OOM killer, an operator).
        return Err(killed(what, program, signal, log_tail));
    }
    if !status.success() {
        let marked = both.lines().rev().find_map(|l| l.split_once("renderfleet-error: ").map(|(_, m)| m.trim().to_string()));
        let reason = marked.unwrap_or_else(|| format!("`{program}` exited with status {}", status.code().unwrap_or(-1)));
        let message = format!("{what} failed: {reason}");
        return Err(if fatal_exit {
            ModuleError::Fatal { message, log_tail: Some(log_tail) }
        } else {
            ModuleError::Retryable { message, log_tail: Some(log_tail) }
        });
    }
    Ok(Ran { stdout, tail: log_tail, wall: started.elapsed() })
}

/// Whether `program args` runs and exits 0 within `limit` (start-up probes); its standard
/// output when it does (where a tool's version is read).
pub(crate) async fn probe(program: &str, args: &[&str], limit: Duration) -> Result<String, String> {
    let mut cmd = command(program).map_err(|e| format!("`{program}` cannot be started: {e}"))?;
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("`{program}` cannot be started: {e}"))?;
    let guard = GroupGuard { pgid: child.id().map(|id| id as i32) };
    let out = tokio::time::timeout(limit, child.wait_with_output()).await;
    drop(guard);
    match out {
        Err(_) => Err(format!("`{program} {}` did not answer within {limit:?}", args.join(" "))),
        Ok(Err(e)) => Err(format!("`{program}`: {e}")),
        Ok(Ok(o)) if !o.status.success() => {
            Err(format!("`{program} {}` failed: {}", args.join(" "), tail(String::from_utf8_lossy(&o.stderr).trim())))
        }
        Ok(Ok(o)) => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
    }
}

/// `program` to be run under `setpriv --pdeathsig KILL` when util-linux is there (see the
/// module's doc). The program is looked up first, so that a missing tool is named as such
/// rather than as setpriv's failure to run it.
fn command(program: &str) -> std::io::Result<tokio::process::Command> {
    let path = find(program).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "not found (PATH searched)"))?;
    Ok(match setpriv() {
        Some(setpriv) => {
            let mut cmd = tokio::process::Command::new(setpriv);
            cmd.args(["--pdeathsig", "KILL", "--"]).arg(path);
            cmd
        }
        None => tokio::process::Command::new(path),
    })
}

/// `program` as given (made absolute: tools run in a scratch directory) when it names a
/// file, else its first match on `PATH`.
fn find(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return std::path::absolute(program).ok().filter(|p| p.is_file());
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// util-linux's setpriv when it can set a parent-death signal (2.33 and later), looked up
/// once; a warning when it cannot.
fn setpriv() -> Option<&'static Path> {
    static SETPRIV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let works = |p: &PathBuf| {
                std::process::Command::new(p)
                    .args(["--pdeathsig", "KILL", "--", "true"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            let found = find("setpriv").filter(works);
            if found.is_none() {
                tracing::warn!("no setpriv with --pdeathsig (util-linux 2.33+): tools will outlive a SIGKILLed worker; install util-linux");
            }
            found
        })
        .as_deref()
}

/// A directory for one attempt's files, removed when dropped (also on timeout or cancel).
pub(crate) struct Scratch {
    pub(crate) dir: PathBuf,
}

impl Scratch {
    pub(crate) async fn new(root: &Path, label: &str) -> Result<Scratch, ModuleError> {
        let dir = root.join(format!("rf-{label}-{}", uuid::Uuid::now_v7().simple()));
        tokio::fs::create_dir_all(&dir).await.map_err(|e| ModuleError::Host {
            message: format!(
                "cannot create scratch directory {}: {e}; check the worker's `scratch_dir` (free space, permissions)",
                dir.display()
            ),
            log_tail: None,
        })?;
        Ok(Scratch { dir })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_tool_reports_its_marked_error_and_tail() {
        let dir = std::env::temp_dir();
        let argv = ["-c", "echo working; echo 'renderfleet-error: the file is broken; fix it' >&2; exit 3"];
        let args: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
        let err = run("sh", &args, &dir, "converting", true).await.unwrap_err();
        assert!(!err.retryable());
        assert_eq!(err.to_string(), "converting failed: the file is broken; fix it");
        assert!(err.log_tail().unwrap().contains("working"));
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_whole_group() {
        let dir = std::env::temp_dir();
        let marker = format!("rf-sleeper-{}", uuid::Uuid::now_v7().simple());
        // A shell that starts a grandchild: dropping the attempt must kill the grandchild too
        // (the direct child, the shell, tokio kills anyway).
        let script = format!("(exec -a {marker} sleep 30) & wait");
        let argv = ["-c", script.as_str()];
        let args: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
        let mut attempt = Box::pin(run("bash", &args, &dir, "sleeping", false));
        tokio::select! {
            _ = &mut attempt => panic!("the tool should still have been running"),
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        let started = std::process::Command::new("pgrep").args(["-f", &marker]).output().unwrap();
        assert!(!started.stdout.is_empty(), "the grandchild never started");
        drop(attempt);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let left = std::process::Command::new("pgrep").args(["-f", &marker]).output().unwrap();
        assert!(left.stdout.is_empty(), "left behind: {}", String::from_utf8_lossy(&left.stdout));
    }
}
