//! Child processes whose output is collected line by line, killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Output {
    stdout: String,
    stderr: Vec<String>,
}

/// A running child process.
pub struct Proc {
    name: String,
    child: Child,
    out: Arc<(Mutex<Output>, Condvar)>,
    readers: Vec<std::thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
    /// The process's own data directory, unless the test gave one.
    _data: Option<crate::TempDir>,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout/stderr collected.
    pub fn spawn(name: &str, cmd: Command) -> Proc {
        Self::spawn_with_input(name, cmd, None)
    }

    /// Starts `cmd` with `input` on its stdin (then closed), or stdin closed when `None`, and
    /// stdout/stderr collected.
    pub fn spawn_with_input(name: &str, mut cmd: Command, input: Option<&[u8]>) -> Proc {
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("HYBRIDGE_NO_SPINNER", "1")
        // The tests read stderr: a developer's own log settings must not change it.
        .env_remove("HYBRIDGE_LOG")
        .env_remove("HYBRIDGE_LOG_FORMAT");
        // Whatever a test does not point elsewhere (the laptop's phones file, a default
        // store) goes to a directory of its own, never to the user's data directory.
        let set = |cmd: &Command, var: &str| cmd.get_envs().any(|(k, _)| k == var);
        // Nor their other settings, or their desktop.
        crate::hermetic(&mut cmd);
        let data = (!set(&cmd, "XDG_DATA_HOME")).then(|| {
            let dir = crate::TempDir::new(&format!("data-{name}").replace([' ', '/'], "-"));
            cmd.env("XDG_DATA_HOME", &dir.0);
            dir
        });
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
            // Small inputs (a QR code's text) fit the pipe; dropping it closes stdin.
            stdin
                .write_all(input)
                .unwrap_or_else(|e| panic!("cannot write to {name}'s stdin: {e}"));
        }
        let out = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let out = out.clone();
            readers.push(std::thread::spawn(move || {
                let mut r = BufReader::new(stdout);
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let (lock, cv) = &*out;
                    lock.lock()
                        .unwrap()
                        .stdout
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                    cv.notify_all();
                }
            }));
        }
        if let Some(stderr) = child.stderr.take() {
            let out = out.clone();
            readers.push(std::thread::spawn(move || {
                // Byte lines, kept lossily: a line that is not UTF-8 must not stop the
                // draining, or the child blocks on a full pipe.
                let mut r = BufReader::new(stderr);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = line.strip_suffix(b"\n").unwrap_or(&line);
                    let text = text.strip_suffix(b"\r").unwrap_or(text);
                    let (lock, cv) = &*out;
                    lock.lock()
                        .unwrap()
                        .stderr
                        .push(String::from_utf8_lossy(text).into_owned());
                    cv.notify_all();
                }
            }));
        }
        Proc {
            name: name.to_owned(),
            child,
            out,
            readers,
            status: None,
            _data: data,
        }
    }

    /// Waits until a stderr line satisfies `pred`; returns it, or `None` after `limit`.
    pub fn wait_stderr(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.wait_for(limit, |out| out.stderr.iter().find(|l| pred(l)).cloned())
    }

    /// Waits until stdout holds a complete first line; returns it.
    pub fn wait_stdout_line(&self, limit: Duration) -> Option<String> {
        self.wait_for(limit, |out| {
            out.stdout.split_once('\n').map(|(line, _)| line.to_owned())
        })
    }

    /// Waits, up to `limit`, until `found` finds something in the output collected so far.
    fn wait_for(
        &self,
        limit: Duration,
        found: impl Fn(&Output) -> Option<String>,
    ) -> Option<String> {
        let deadline = Instant::now() + limit;
        let (lock, cv) = &*self.out;
        let mut out = lock.lock().unwrap();
        loop {
            if let Some(hit) = found(&out) {
                return Some(hit);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            out = cv
                .wait_timeout(out, left.min(Duration::from_millis(200)))
                .unwrap()
                .0;
        }
    }

    /// Waits for the exit; kills the process after `limit` and panics with its output.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.status = Some(s);
                    // Let the readers drain the pipes.
                    for r in self.readers.drain(..) {
                        let _ = r.join();
                    }
                    return s;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "{} did not exit within {limit:?}\n{}",
                        self.name,
                        self.dump()
                    );
                }
            }
        }
    }

    /// Waits for the exit and returns the exit code (panics if killed by a signal).
    pub fn code(&mut self, limit: Duration) -> i32 {
        let s = self.wait(limit);
        s.code()
            .unwrap_or_else(|| panic!("{} was killed by a signal\n{}", self.name, self.dump()))
    }

    /// Sends `signal` (a name `kill` knows: TERM, INT, KILL, …) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot send SIG{signal} to {}", self.name);
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.out.0.lock().unwrap().stdout.clone()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.out.0.lock().unwrap().stderr.join("\n")
    }

    /// The output, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}\n",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `hybridge-relay` process.
pub struct RelayProc {
    /// The process.
    pub proc: Proc,
    /// Where it listens for tunnels.
    pub listen: SocketAddr,
    /// Where it serves /metrics.
    pub metrics: Option<SocketAddr>,
}

impl RelayProc {
    /// Starts the relay binary with `cmd` (its arguments already set) and reads its startup
    /// line.
    pub fn start(cmd: Command) -> RelayProc {
        let proc = Proc::spawn("hybridge-relay", cmd);
        let line = proc
            .wait_stdout_line(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("the relay did not start\n{}", proc.dump()));
        let v: serde_json::Value = serde_json::from_str(&line).expect("relay startup JSON");
        let listen = v["listen"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("listen address");
        let metrics = v["metrics"].as_str().and_then(|s| s.parse().ok());
        RelayProc {
            proc,
            listen,
            metrics,
        }
    }

    /// A relay on 127.0.0.1 with ephemeral ports for tunnels and metrics.
    pub fn local() -> RelayProc {
        let mut cmd = Command::new(crate::relay_bin());
        cmd.args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]);
        Self::start(cmd)
    }

    /// `ws://ADDR`.
    pub fn url(&self) -> String {
        format!("ws://{}", self.listen)
    }

    /// The value of a metric line `name value` (no labels), from /metrics.
    pub fn metric(&self, name: &str) -> f64 {
        let addr = self.metrics.expect("relay started with --metrics-listen");
        let text = http_get(addr, "/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }
}

/// A minimal HTTP/1.1 GET; returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect for GET");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_drained_past_a_line_that_is_not_utf8() {
        // A bad line, then more than a pipe holds: the child exits only if it is all read.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            r"printf 'bad \377\r\n' >&2; yes x | head -n 100000 >&2; echo after >&2",
        ]);
        let mut p = Proc::spawn("sh", cmd);
        assert_eq!(p.code(Duration::from_secs(20)), 0, "{}", p.dump());
        let err = p.out.0.lock().unwrap();
        assert_eq!(err.stderr.first().map(String::as_str), Some("bad \u{fffd}"));
        assert_eq!(err.stderr.len(), 100_002);
        assert_eq!(err.stderr.last().map(String::as_str), Some("after"));
    }
}
