//! Pieces shared by the subcommands: durations, the passkey store and its PIN, the QR code on
//! the terminal, and progress lines.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::scripted::ScriptedAgent;
use crate::terminal::Terminal;
use hybridge_authenticator::store::{FileStore, KdfParams};
use hybridge_client::render;
use zeroize::Zeroizing;

use crate::error::CliError;

/// How the phone and the laptop reach each other: the radio for the advert, and which
/// certificates a wss:// relay may present. Shared by `phone`, `register` and `sign-in`.
#[derive(Debug, clap::Args)]
pub struct TransportArgs {
    /// The radio for the BLE advert: bluez[:hciN], or udp:ADDR:PORT with options
    /// (the laptop listens on ADDR:PORT, the phone sends to it).
    #[arg(
        long,
        env = "HYBRIDGE_BLE",
        default_value = "bluez",
        value_name = "SPEC"
    )]
    pub ble: hybridge_ble::RadioSpec,
    /// Also trust the CA certificate(s) in this PEM file for wss:// relays (a self-hosted
    /// relay with a private CA).
    #[arg(long, env = "HYBRIDGE_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl TransportArgs {
    /// The TLS configuration for the tunnel: `None` (public roots) unless `--ca-cert`.
    pub fn tls(&self) -> Result<Option<hybridge_websocket::ClientTls>, CliError> {
        match &self.ca_cert {
            Some(path) => Ok(Some(
                hybridge_websocket::tls_trusting(path)
                    .map_err(|e| CliError::Invalid(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }
}

/// Parses `500ms`, `30s`, `5m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, scale_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1u64)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1000)
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 500ms, 30s, 5m)"))?;
    let ms = value
        .checked_mul(scale_ms)
        .filter(|&ms| ms > 0 && ms <= 24 * 3600 * 1000)
        .ok_or_else(|| format!("{s:?} must be between 1ms and 24h"))?;
    Ok(Duration::from_millis(ms))
}

/// Reads a file named on the command line (`-` is stdin) of at most `limit` bytes; a larger
/// one is refused whole rather than cut short.
pub fn read_input(what: &'static str, path: &Path, limit: u64) -> Result<Vec<u8>, CliError> {
    use std::io::Read;
    let io = |source| CliError::Io {
        what,
        path: path.display().to_string(),
        source,
    };
    let mut bytes = Vec::new();
    // One byte past the limit tells a file of exactly `limit` bytes from a larger one.
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
            .map_err(io)?;
    }
    if bytes.len() as u64 > limit {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            if limit >= 1 << 20 {
                format!("larger than {} MiB", limit >> 20)
            } else {
                format!("larger than {} KiB", limit >> 10)
            },
        )));
    }
    Ok(bytes)
}

/// The passkey store `--store` names, or the default one:
/// `$XDG_DATA_HOME/hybridge/passkeys.hbk`, where XDG_DATA_HOME defaults to
/// `~/.local/share` (the XDG Base Directory specification).
pub fn store_path(given: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    data_dir().map(|d| d.join("passkeys.hbk")).ok_or_else(|| {
        CliError::Invalid(
            "no --store given and no home directory to keep the default one in \
                 (set HOME or XDG_DATA_HOME, or give --store PATH)"
                .into(),
        )
    })
}

/// hybridge's directory under the XDG data directory. Relative values are ignored, as the
/// specification says.
pub fn data_dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    std::env::var_os("XDG_DATA_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".local/share"))
        })
        .map(|d| d.join("hybridge"))
}

/// Where the store PIN comes from.
#[derive(Clone, Debug)]
pub struct PinSource {
    /// `--pin-file`: automation.
    pub file: Option<PathBuf>,
}

impl PinSource {
    fn read_file(&self) -> Result<Option<Zeroizing<String>>, CliError> {
        match &self.file {
            None => Ok(None),
            Some(path) => ScriptedAgent::read_pin_file(path)
                .map(Some)
                .map_err(|source| CliError::Io {
                    what: "cannot read the PIN file",
                    path: path.display().to_string(),
                    source,
                }),
        }
    }

    /// The PIN of an existing store: from the file, else asked on the terminal.
    pub fn existing(&self, store: &Path) -> Result<Zeroizing<String>, CliError> {
        if let Some(pin) = self.read_file()? {
            return Ok(pin);
        }
        let mut term = Terminal::stdio();
        let prompt = format!("PIN for the passkey store {}: ", store.display());
        match term.read_pin(&prompt) {
            Ok(Some(pin)) if !pin.is_empty() => Ok(pin),
            Ok(_) => Err(CliError::Invalid(
                "no PIN given: type it at the prompt, or use --pin-file FILE".into(),
            )),
            Err(e) => Err(CliError::Invalid(format!("cannot read the PIN: {e}"))),
        }
    }

    /// A PIN for a new store: from the file, else asked twice on the terminal.
    pub fn new_pin(&self, store: &Path) -> Result<Zeroizing<String>, CliError> {
        if let Some(pin) = self.read_file()? {
            return Ok(pin);
        }
        let mut term = Terminal::stdio();
        term.say(&format!(
            "Creating a new passkey store at {}. Choose a PIN (at least 4 characters).",
            store.display()
        ));
        for _ in 0..3 {
            let first = match term.read_pin("New PIN: ") {
                Ok(Some(p)) if !p.is_empty() => p,
                Ok(_) => break,
                Err(e) => return Err(CliError::Invalid(format!("cannot read the PIN: {e}"))),
            };
            let second = match term.read_pin("Repeat the PIN: ") {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => return Err(CliError::Invalid(format!("cannot read the PIN: {e}"))),
            };
            if *first == *second {
                return Ok(first);
            }
            term.say("The PINs differ; try again.");
        }
        Err(CliError::Invalid(
            "no new PIN given: type it at the prompt, or use --pin-file FILE".into(),
        ))
    }
}

/// Opens the store at `path` (creating it when `create` and it does not exist). Returns the
/// store and the PIN that opened it (for `--yes` user verification).
pub fn open_store(
    path: &Path,
    pin: &PinSource,
    create: bool,
) -> Result<(FileStore, Zeroizing<String>, bool), CliError> {
    if std::fs::symlink_metadata(path).is_err() {
        if !create {
            return Err(CliError::Invalid(format!(
                "no passkey store at {} (`hybridge phone --store {}` creates one)",
                path.display(),
                path.display()
            )));
        }
        let pin = pin.new_pin(path)?;
        create_parent(path)?;
        let store = FileStore::create(path, &pin, KdfParams::default())?;
        return Ok((store, pin, true));
    }
    let pin = pin.existing(path)?;
    let store = FileStore::open(path, &pin)?;
    Ok((store, pin, false))
}

/// Creates the directory a new store goes in (the default one's does not exist on a fresh
/// machine), readable by its owner only.
fn create_parent(path: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt;
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(|source| CliError::Io {
            what: "cannot create the passkey store's directory",
            path: parent.display().to_string(),
            source,
        })
}

/// What a person does with the QR code of a real ceremony.
pub const SCAN_HINT: &str = "Scan this QR code with your phone's camera.";
/// The demo's phone is in the same process and takes the text itself.
pub const DEMO_QR_HINT: &str =
    "The demo's phone takes this code's text directly; a real phone scans it with its camera.";

/// Draws the QR code and its text on stderr, and writes `--qr-out` if given.
pub fn show_qr(url: &str, qr_out: Option<&Path>, hint: &str) {
    // The file first: whoever reads the text below may look for the file next.
    let written = qr_out.map(|path| (path, render::write_file(url, path)));
    let mut err = std::io::stderr().lock();
    match render::terminal(url) {
        Ok(blocks) => {
            let _ = writeln!(err, "{blocks}");
        }
        Err(e) => {
            let _ = writeln!(err, "hybridge: cannot draw the QR code: {e}");
        }
    }
    let _ = writeln!(err, "{url}");
    let _ = writeln!(err, "{hint}");
    if let Some((path, Err(e))) = written {
        let _ = writeln!(err, "hybridge: cannot write {}: {e}", path.display());
    }
}

/// Checks `--qr-out`'s extension before anything starts.
pub fn check_qr_out(path: Option<&Path>) -> Result<(), CliError> {
    if let Some(p) = path {
        render::QrFormat::from_path(p).map_err(|e| CliError::Invalid(e.to_string()))?;
    }
    Ok(())
}

/// Progress on stderr: a spinner line on a terminal, plain lines otherwise.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Mutex<ProgressState>>,
    tty: bool,
    prefix: &'static str,
}

struct ProgressState {
    current: Option<String>,
    frame: usize,
    paused: bool,
}

const FRAMES: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

impl Progress {
    /// Progress lines starting with `prefix` (e.g. "laptop: "). The spinner runs only when
    /// stderr is a terminal and `HYBRIDGE_NO_SPINNER` is unset.
    pub fn new(prefix: &'static str) -> Self {
        let tty =
            std::io::stderr().is_terminal() && std::env::var_os("HYBRIDGE_NO_SPINNER").is_none();
        Self::with_spinner(prefix, tty)
    }

    /// Plain lines only, for output that other actors write to as well (the demo).
    pub fn plain(prefix: &'static str) -> Self {
        Self::with_spinner(prefix, false)
    }

    fn with_spinner(prefix: &'static str, tty: bool) -> Self {
        let p = Self {
            inner: Arc::new(Mutex::new(ProgressState {
                current: None,
                frame: 0,
                paused: false,
            })),
            tty,
            prefix,
        };
        if tty {
            let weak = Arc::downgrade(&p.inner);
            let prefix = p.prefix;
            std::thread::spawn(move || {
                while let Some(inner) = weak.upgrade() {
                    if let Ok(mut s) = inner.lock() {
                        if !s.paused {
                            if let Some(cur) = s.current.clone() {
                                s.frame = (s.frame + 1) % FRAMES.len();
                                let mut err = std::io::stderr().lock();
                                let _ = write!(err, "\r\x1b[2K{} {prefix}{cur}", FRAMES[s.frame]);
                                let _ = err.flush();
                            }
                        }
                    }
                    drop(inner);
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        p
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new step: the previous one is marked done.
    pub fn step(&self, msg: impl Into<String>) {
        let msg = msg.into();
        let mut s = self.lock();
        let mut err = std::io::stderr().lock();
        if self.tty {
            if let Some(prev) = s.current.take() {
                let _ = writeln!(err, "\r\x1b[2K✓ {}{prev}", self.prefix);
            }
            let _ = write!(err, "\r\x1b[2K{} {}{msg}", FRAMES[s.frame], self.prefix);
            let _ = err.flush();
            s.current = Some(msg);
        } else {
            let _ = writeln!(err, "{}{msg}", self.prefix);
        }
    }

    /// Runs `f` with the spinner line cleared (to print something else on stderr).
    pub fn aside(&self, f: impl FnOnce()) {
        let mut s = self.lock();
        s.paused = true;
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
        f();
        s.paused = false;
    }

    /// Ends the progress display: the last step is marked done (`ok`) or failed.
    pub fn finish(&self, ok: bool) {
        let mut s = self.lock();
        if self.tty {
            if let Some(prev) = s.current.take() {
                let mark = if ok { "✓" } else { "✗" };
                let _ = writeln!(std::io::stderr(), "\r\x1b[2K{mark} {}{prev}", self.prefix);
            }
        }
        s.current = None;
    }
}

/// Set once a command printed its result and only lingers (a laptop waiting for a late link).
static RESPONSE_GIVEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The command's result is on stdout: a signal from now on ends it with success.
pub fn mark_response_given() {
    RESPONSE_GIVEN.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether [`mark_response_given`] was called.
pub fn response_given() -> bool {
    RESPONSE_GIVEN.load(std::sync::atomic::Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("99999999999999999m").is_err());
    }

    #[test]
    fn inputs_up_to_the_limit_are_read_whole_and_larger_ones_refused() {
        let dir = std::env::temp_dir().join(format!("hybridge-read-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exact = dir.join("exact");
        std::fs::write(&exact, vec![b'x'; 2 << 20]).unwrap();
        assert_eq!(
            read_input("options", &exact, 2 << 20).unwrap().len(),
            2 << 20
        );
        let err = read_input("cannot read the options file", &exact, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
        assert!(read_input("options", &dir.join("missing"), 1 << 20).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
