//! Warm Blender: processes that stay alive between renders, each serving one job at a time
//! (`render.py -- --serve`: a PARAMS.json path per stdin line, an end marker per job on
//! stdout). A still then pays neither Blender's start-up nor its Python's.
//!
//! A job takes an idle process or starts one, so there are never more processes than
//! renders in flight (at most one per slot). The job owns its process while it runs: when
//! the attempt is dropped (its timeout, a cancellation, the worker shutting down), the
//! process group is killed with it, as a cold render's would be. A process that dies
//! mid-job fails the attempt as retryable and is not reused; one that served `max_jobs`
//! jobs or grew above `max_rss` is replaced. Nothing of a job outlives it inside the
//! process: the script starts each job from the factory startup file.

use crate::module::ModuleError;
use crate::tools::{self, GroupGuard, Ran};
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// Lines kept of a process's output for a job's log tail.
const TAIL_LINES: usize = 40;
/// The script's end-of-job line: `renderfleet-done <code> <message>`.
const DONE: &str = "renderfleet-done ";

/// The warm processes of one worker.
pub(crate) struct Pool {
    program: String,
    script: PathBuf,
    cwd: PathBuf,
    max_jobs: u32,
    max_rss_bytes: u64,
    idle: Mutex<Vec<Process>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("program", &self.program).field("idle", &self.idle()).finish()
    }
}

struct Process {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Filled by a reader task: stderr must be drained or a chatty Blender would block.
    stderr: Arc<Mutex<VecDeque<String>>>,
    jobs: u32,
    /// Declared last: kills the group after the pipes are closed.
    _group: GroupGuard,
}

impl Pool {
    pub(crate) fn new(program: &str, script: &Path, cwd: &Path, max_jobs: u32, max_rss_mib: u64) -> Pool {
        Pool {
            program: program.into(),
            script: script.into(),
            cwd: cwd.into(),
            max_jobs: max_jobs.max(1),
            max_rss_bytes: max_rss_mib.saturating_mul(1024 * 1024),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Processes waiting for a job (for tests and logs).
    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().expect("warm pool").len()
    }

    /// Runs the job in `params` on a warm process; `what` names it in errors. Errors are
    /// those of a cold run: the script's own failure is fatal, a dead process retryable.
    pub(crate) async fn run(&self, params: &Path, what: &str) -> Result<Ran, ModuleError> {
        let started = Instant::now();
        // An idle process that died meanwhile (the OOM killer, an operator) is not handed a job.
        let mut p = loop {
            let taken = self.idle.lock().expect("warm pool").pop();
            match taken {
                Some(mut p) => {
                    if matches!(p.child.try_wait(), Ok(None)) {
                        break p;
                    }
                    tracing::info!("an idle warm Blender process had exited; starting another");
                }
                None => break self.start(what)?,
            }
        };
        p.stderr.lock().expect("stderr tail").clear();
        let mut out: VecDeque<String> = VecDeque::new();
        let line = format!("{}\n", params.display());
        let sent = async {
            p.stdin.write_all(line.as_bytes()).await?;
            p.stdin.flush().await
        };
        let end = match sent.await {
            Ok(()) => loop {
                match p.stdout.next_line().await {
                    Ok(Some(l)) => match l.strip_prefix(DONE) {
                        Some(rest) => break Some(rest.to_string()),
                        None => keep(&mut out, l),
                    },
                    Ok(None) | Err(_) => break None,
                }
            },
            Err(_) => None,
        };
        p.jobs += 1;
        let log_tail = |p: &Process, out: &VecDeque<String>| {
            let err = p.stderr.lock().expect("stderr tail");
            tools::tail(&out.iter().chain(err.iter()).cloned().collect::<Vec<_>>().join("\n"))
        };
        let Some(end) = end else {
            // The process is gone mid-job (a crash, the OOM killer): this attempt fails as
            // retryable and the next job gets a fresh process.
            tokio::time::sleep(Duration::from_millis(50)).await; // the last stderr lines
            let tail = log_tail(&p, &out);
            let status = tokio::time::timeout(Duration::from_secs(2), p.child.wait()).await.ok().and_then(Result::ok);
            return Err(match status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)) {
                Some(signal) => tools::killed(what, &self.program, signal, tail),
                None => ModuleError::Retryable {
                    message: format!("{what} failed: the warm Blender process ended mid-job ({status:?}); a fresh one takes the next job"),
                    log_tail: Some(tail),
                },
            });
        };
        let (code, message) = end.split_once(' ').unwrap_or((end.as_str(), ""));
        let result = if code == "0" {
            Ok(Ran { stdout: out.iter().cloned().collect::<Vec<_>>().join("\n"), tail: log_tail(&p, &out), wall: started.elapsed() })
        } else {
            let reason =
                if message.trim().is_empty() { format!("render.py ended the job with code {code}") } else { message.trim().to_string() };
            Err(ModuleError::Fatal { message: format!("{what} failed: {reason}"), log_tail: Some(log_tail(&p, &out)) })
        };
        self.put_back(p);
        result
    }

    fn start(&self, what: &str) -> Result<Process, ModuleError> {
        let args = super::script_args(&self.program, &self.script, &[OsStr::new("--serve")]);
        let (mut child, group) = tools::serve(&self.program, &args, &self.cwd).map_err(|e| tools::cannot_start(what, &self.program, &e))?;
        let (stdin, stdout, stderr) =
            (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let sink = tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                keep(&mut sink.lock().expect("stderr tail"), l);
            }
        });
        tracing::info!(pid = child.id(), "warm Blender process started");
        Ok(Process { child, stdin, stdout: BufReader::new(stdout).lines(), stderr: tail, jobs: 0, _group: group })
    }

    /// Keeps `p` for the next job unless it is due for replacement.
    fn put_back(&self, p: Process) {
        let rss = p.child.id().and_then(rss_bytes).unwrap_or(0);
        if p.jobs >= self.max_jobs || rss > self.max_rss_bytes {
            tracing::info!(jobs = p.jobs, rss_mib = rss / (1024 * 1024), "warm Blender process replaced");
            return; // dropped: its group is killed
        }
        self.idle.lock().expect("warm pool").push(p);
    }
}

fn keep(tail: &mut VecDeque<String>, line: String) {
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

/// Resident memory of process `pid` (`VmRSS` in `/proc/<pid>/status`).
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}
