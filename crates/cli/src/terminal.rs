//! The CLI's user agent: questions on stderr, answers from the terminal.
//!
//! [`Terminal`] is the I/O (prompts, answers, a PIN read with echo off); [`TerminalAgent`]
//! is the [`UserAgent`] built on it, verifying PINs through a [`PinVerifier`] that shares the
//! store's attempt counter. Both are generic over the reader and writer so tests can script
//! them.
//!
//! The CLI opens the store with a PIN read from the same terminal, then hands the store to the
//! authenticator and a verifier to the agent:
//!
//! ```no_run
//! use hybridge_authenticator::store::FileStore;
//! use crate::terminal::{Terminal, TerminalAgent};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut term = Terminal::stdio();
//! let pin = term.read_pin("PIN for the passkey store: ")?.ok_or("no PIN given")?;
//! let store = FileStore::open("passkeys.hbk", &pin)?;
//! let agent = TerminalAgent::new(term, store.pin_verifier());
//! // authenticator = Authenticator::new(store, agent, ...)
//! # Ok(()) }
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};

use zeroize::Zeroizing;

use hybridge_authenticator::store::{PinVerifier, StoreError};
use hybridge_authenticator::user::{AccountChoice, Approval, ApprovalRequest, Ceremony, UserAgent};

/// Longest answer line kept; the rest of a longer line is discarded.
const MAX_LINE: usize = 1024;
/// Longest name shown from a request (names come from the network).
const MAX_SHOWN: usize = 80;
/// Invalid account numbers tolerated before the choice is cancelled.
const CHOICE_TRIES: usize = 3;

/// Prompts on a writer, answers from a reader, and, on a real terminal, PINs without echo.
pub struct Terminal<R, W> {
    input: R,
    output: W,
    /// The controlling terminal, whose echo is turned off while a PIN is typed.
    tty: Option<File>,
}

/// The input [`Terminal::stdio`] reads from.
pub type StdioInput = Box<dyn BufRead + Send>;

impl Terminal<StdioInput, io::Stderr> {
    /// Prompts on stderr; answers from the controlling terminal (`/dev/tty`) if there is one,
    /// so stdin stays free for data, else from stdin.
    pub fn stdio() -> Self {
        let tty = OpenOptions::new().read(true).write(true).open("/dev/tty");
        match tty.and_then(|t| Ok((t.try_clone()?, t))) {
            Ok((reader, tty)) => Self {
                input: Box::new(BufReader::new(reader)),
                output: io::stderr(),
                tty: Some(tty),
            },
            // Stdin is buffered once for the whole process; a reader of our own would read
            // ahead and lose, when dropped, the answers piped for the next prompt.
            Err(_) => Self {
                input: Box::new(BufReader::with_capacity(1, io::stdin())),
                output: io::stderr(),
                tty: None,
            },
        }
    }
}

impl<R: BufRead, W: Write> Terminal<R, W> {
    /// Prompts on `output` and reads answers from `input` (echo is never touched): scripted
    /// answers, for tests.
    #[cfg(test)]
    pub fn new(input: R, output: W) -> Self {
        Self {
            input,
            output,
            tty: None,
        }
    }

    /// Writes a line to the output. Output errors are ignored: a prompt that cannot be shown
    /// still gets an answer (or end of input, which declines).
    pub fn say(&mut self, line: &str) {
        let _ = writeln!(self.output, "{line}");
        let _ = self.output.flush();
    }

    /// Shows `prompt` and reads one line; `None` at end of input.
    pub fn ask(&mut self, prompt: &str) -> io::Result<Option<Zeroizing<String>>> {
        let _ = write!(self.output, "{prompt}");
        let _ = self.output.flush();
        read_line(&mut self.input)
    }

    /// Shows `prompt` and reads a PIN, with echo off on a real terminal; `None` at end of
    /// input. The PIN is never echoed or logged.
    pub fn read_pin(&mut self, prompt: &str) -> io::Result<Option<Zeroizing<String>>> {
        let tty = self.tty.take();
        let echo = tty.as_ref().and_then(EchoOff::new);
        let answer = self.ask(prompt);
        let echo_was_off = echo.is_some();
        drop(echo);
        if echo_was_off {
            // The Enter key was not echoed either.
            self.say("");
        }
        self.tty = tty;
        answer
    }
}

/// The terminal settings to put back while a PIN prompt has echo off, so that a process
/// leaving mid-prompt (the laptop went away, Ctrl-C) can restore them: the prompt's own
/// thread is blocked in `read` and never gets to drop its guard.
#[cfg(unix)]
static ECHO_SAVED: std::sync::Mutex<Option<(File, rustix::termios::Termios)>> =
    std::sync::Mutex::new(None);

/// Puts the terminal back as it was if a PIN prompt still has echo off. Call it before the
/// process exits; it does nothing when no prompt is active.
pub fn restore_terminal() {
    #[cfg(unix)]
    {
        let saved = match ECHO_SAVED.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some((tty, termios)) = saved {
            let _ =
                rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, &termios);
        }
    }
}

/// Turns terminal echo off until dropped.
struct EchoOff<'a> {
    #[cfg(unix)]
    tty: &'a File,
    #[cfg(unix)]
    saved: rustix::termios::Termios,
    #[cfg(not(unix))]
    _tty: std::marker::PhantomData<&'a File>,
}

impl<'a> EchoOff<'a> {
    #[cfg(unix)]
    fn new(tty: &'a File) -> Option<Self> {
        use rustix::termios::{LocalModes, OptionalActions, isatty, tcgetattr, tcsetattr};
        if !isatty(tty) {
            return None;
        }
        let saved = tcgetattr(tty).ok()?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        // Registered before echo goes off, so there is no moment when it is off and nobody
        // can turn it back on.
        let for_exit = tty.try_clone().ok()?;
        match ECHO_SAVED.lock() {
            Ok(mut g) => *g = Some((for_exit, saved.clone())),
            Err(p) => *p.into_inner() = Some((for_exit, saved.clone())),
        }
        if tcsetattr(tty, OptionalActions::Flush, &quiet).is_err() {
            restore_terminal();
            return None;
        }
        Some(Self { tty, saved })
    }

    #[cfg(not(unix))]
    fn new(_tty: &'a File) -> Option<Self> {
        None
    }
}

#[cfg(unix)]
impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        use rustix::termios::{OptionalActions, tcsetattr};
        let _ = tcsetattr(self.tty, OptionalActions::Now, &self.saved);
        match ECHO_SAVED.lock() {
            Ok(mut g) => *g = None,
            Err(p) => *p.into_inner() = None,
        }
    }
}

/// Reads one line without the line ending, keeping at most [`MAX_LINE`] bytes of it and
/// never leaving a copy of it in freed memory. `None` at end of input.
fn read_line<R: BufRead>(input: &mut R) -> io::Result<Option<Zeroizing<String>>> {
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_LINE));
    let mut read_any = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            if !read_any {
                return Ok(None);
            }
            break;
        }
        read_any = true;
        let newline = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..newline.unwrap_or(buf.len())];
        let room = MAX_LINE - line.len();
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = newline.map_or(buf.len(), |i| i + 1);
        input.consume(used);
        if newline.is_some() {
            break;
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    match std::str::from_utf8(&line) {
        Ok(s) => {
            let mut out = Zeroizing::new(String::with_capacity(s.len()));
            out.push_str(s);
            Ok(Some(out))
        }
        Err(_) => Ok(Some(Zeroizing::new(String::new()))),
    }
}

/// A name from a request, made safe to print: control and bidirectional-override
/// characters (terminal escapes, spoofing) replaced, and the length bounded.
pub fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(MAX_SHOWN)
        .map(|c| {
            let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || bidi { '\u{fffd}' } else { c }
        })
        .collect();
    if name.chars().nth(MAX_SHOWN).is_some() {
        out.push('…');
    }
    out
}

/// `YYYY-MM-DD` (UTC) for Unix seconds.
pub fn format_date(unix_seconds: u64) -> String {
    // Days since 1970-01-01 to a proleptic Gregorian date, via 400-year eras starting on
    // 0000-03-01 (so that the leap day is the last day of a year).
    let days = (unix_seconds / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn account_label(user_name: Option<&str>, display_name: Option<&str>) -> String {
    match (user_name, display_name) {
        (Some(n), Some(d)) if n != d => format!("{} ({})", sanitize(n), sanitize(d)),
        (Some(n), _) => sanitize(n),
        (None, Some(d)) => sanitize(d),
        (None, None) => "an unnamed account".to_owned(),
    }
}

fn question(request: &ApprovalRequest) -> String {
    let rp = match request.rp_name.as_deref() {
        Some(name) if name != request.rp_id => {
            format!("{} ({})", sanitize(name), sanitize(&request.rp_id))
        }
        _ => sanitize(&request.rp_id),
    };
    let account = account_label(
        request.user_name.as_deref(),
        request.user_display_name.as_deref(),
    );
    match request.ceremony {
        Ceremony::Register => format!("Create a passkey for {rp}, account {account}?"),
        Ceremony::SignIn => format!("Sign in to {rp} as {account}?"),
        Ceremony::Select => "Use this authenticator?".to_owned(),
    }
}

/// The [`UserAgent`] for a person at a terminal: asks to approve each ceremony and, when the
/// relying party wants user verification, for the store PIN.
pub struct TerminalAgent<R, W> {
    term: Terminal<R, W>,
    verifier: PinVerifier,
}

impl<R: BufRead, W: Write> TerminalAgent<R, W> {
    /// An agent that talks through `term` and checks PINs with `verifier`
    /// (from [`FileStore::pin_verifier`](hybridge_authenticator::store::FileStore::pin_verifier)).
    pub fn new(term: Terminal<R, W>, verifier: PinVerifier) -> Self {
        Self { term, verifier }
    }

    /// Asks for the PIN until it is right, the user gives up (empty line or end of input),
    /// or the store locks.
    fn verify_user(&mut self) -> Approval {
        loop {
            let remaining = self.verifier.remaining_attempts();
            let prompt = format!("PIN ({remaining} attempt(s) left, empty to cancel): ");
            let pin = match self.term.read_pin(&prompt) {
                Ok(Some(pin)) if !pin.is_empty() => pin,
                Ok(_) => {
                    self.term.say("Cancelled.");
                    return Approval::Declined;
                }
                Err(e) => {
                    self.term.say(&format!("Could not read the PIN: {e}"));
                    return Approval::Declined;
                }
            };
            match self.verifier.verify(&pin) {
                Ok(()) => return Approval::Approved { verified: true },
                Err(StoreError::WrongPin { remaining }) => {
                    self.term
                        .say(&format!("Wrong PIN. {remaining} attempt(s) left."));
                }
                Err(StoreError::PinPolicy { reason }) => {
                    self.term.say(&format!("{reason}; not counted."));
                }
                Err(StoreError::Locked) => {
                    self.term.say(
                        "Too many wrong PINs: the passkey store is now locked. \
                         Delete it and create a new one to use hybridge again.",
                    );
                    return Approval::Locked;
                }
                Err(e) => {
                    self.term.say(&format!("Could not verify the PIN: {e}"));
                    return Approval::Declined;
                }
            }
        }
    }
}

/// Asks whether to link this phone to the laptop whose QR code offers to remember it. Enter
/// means yes; end of input (nobody there) means no; three unclear answers mean no.
pub fn ask_link<R: BufRead, W: Write>(term: &mut Terminal<R, W>) -> bool {
    term.say(
        "The laptop offers to remember this phone: next time it can ask for it through the \
         relay, without a QR code (each request is still approved here, and \
         `hybridge phone links revoke` undoes it).",
    );
    for _ in 0..CHOICE_TRIES {
        let answer = match term.ask("Link this phone to the laptop? [Y/n] ") {
            Ok(Some(a)) => a,
            _ => break,
        };
        match answer.trim().to_ascii_lowercase().as_str() {
            "" | "y" | "yes" => return true,
            "n" | "no" => {
                term.say("Not linked.");
                return false;
            }
            _ => term.say("Please answer y or n."),
        }
    }
    term.say("Not linked.");
    false
}

impl<R: BufRead + Send, W: Write + Send> UserAgent for TerminalAgent<R, W> {
    fn approve(&mut self, request: &ApprovalRequest) -> Approval {
        if self.verifier.remaining_attempts() == 0 {
            self.term.say("The passkey store is locked.");
            return Approval::Locked;
        }
        self.term.say(&question(request));
        let yes = match self.term.ask("Approve? [y/N] ") {
            Ok(Some(answer)) => {
                let a = answer.trim();
                a.eq_ignore_ascii_case("y") || a.eq_ignore_ascii_case("yes")
            }
            _ => false,
        };
        if !yes {
            self.term.say("Declined.");
            return Approval::Declined;
        }
        if request.user_verification {
            self.verify_user()
        } else {
            Approval::Approved { verified: false }
        }
    }

    fn choose_account(&mut self, rp_id: &str, accounts: &[AccountChoice]) -> Option<usize> {
        if accounts.is_empty() {
            return None;
        }
        self.term.say(&format!("Accounts for {}:", sanitize(rp_id)));
        for (i, a) in accounts.iter().enumerate() {
            let label = account_label(a.user_name.as_deref(), a.user_display_name.as_deref());
            self.term.say(&format!(
                "  {}) {label}, created {}",
                i + 1,
                format_date(a.created)
            ));
        }
        let prompt = format!(
            "Choose an account [1-{}] (empty to cancel): ",
            accounts.len()
        );
        for _ in 0..CHOICE_TRIES {
            let answer = match self.term.ask(&prompt) {
                Ok(Some(a)) => a,
                _ => return None,
            };
            let answer = answer.trim();
            if answer.is_empty() {
                return None;
            }
            match answer.parse::<usize>() {
                Ok(n) if (1..=accounts.len()).contains(&n) => return Some(n - 1),
                _ => self.term.say(&format!(
                    "Please enter a number from 1 to {}.",
                    accounts.len()
                )),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_question_takes_enter_as_yes_and_silence_as_no() {
        let ask = |input: &str| {
            let mut out = Vec::new();
            let yes = ask_link(&mut Terminal::new(input.as_bytes(), &mut out));
            (yes, String::from_utf8(out).unwrap())
        };
        assert!(ask("\n").0);
        assert!(ask("Y\n").0);
        assert!(ask(" yes \n").0);
        let (no, said) = ask("n\n");
        assert!(!no);
        assert!(said.contains("Not linked."), "{said}");
        // Nobody at the terminal.
        assert!(!ask("").0);
        // Unclear answers are asked again, then taken as no.
        let (no, said) = ask("maybe\nperhaps\nsure?\ny\n");
        assert!(!no);
        assert_eq!(said.matches("Please answer y or n.").count(), 3, "{said}");
        assert!(ask("what\ny\n").0);
    }

    /// The CLI exits while a PIN prompt still waits with echo off (the laptop went away):
    /// the prompt's thread never drops its guard, so `restore_terminal` must put echo back.
    #[cfg(unix)]
    #[test]
    fn restore_terminal_undoes_an_abandoned_pin_prompt() {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        use rustix::termios::{LocalModes, tcgetattr};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let tty = OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().expect("utf-8 pty name"))
            .expect("open the pty");
        let echo = |f: &File| {
            tcgetattr(f)
                .expect("tcgetattr")
                .local_modes
                .contains(LocalModes::ECHO)
        };
        assert!(echo(&tty));

        // A prompt nobody answers: its input is a pipe that stays open and empty.
        let (reader, writer) = io::pipe().expect("pipe");
        let mut term = Terminal {
            input: BufReader::new(reader),
            output: io::sink(),
            tty: Some(tty.try_clone().expect("clone")),
        };
        let prompt = std::thread::spawn(move || term.read_pin("PIN: "));
        let t0 = std::time::Instant::now();
        while echo(&tty) {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(5),
                "echo never went off"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        restore_terminal();
        assert!(echo(&tty), "echo restored while the prompt still waits");
        restore_terminal(); // a second call is harmless

        drop(writer); // end of input: the prompt returns and drops its own guard
        assert!(
            prompt
                .join()
                .expect("prompt thread")
                .expect("read")
                .is_none()
        );
        assert!(echo(&tty));
    }
    use hybridge_authenticator::store::{CreateOptions, FileStore, KdfParams};
    use std::path::PathBuf;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "hybridge-terminal-unit-{name}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn store(dir: &TempDir, max: u32) -> FileStore {
        let options = CreateOptions {
            kdf: KdfParams::insecure_for_tests(),
            max_pin_attempts: max,
        };
        FileStore::create_with(dir.0.join("store"), "4321", options).unwrap()
    }

    fn request(uv: bool) -> ApprovalRequest {
        ApprovalRequest {
            ceremony: Ceremony::SignIn,
            rp_id: "example.com".into(),
            rp_name: Some("Example\x1b[31m".into()),
            user_name: Some("alice".into()),
            user_display_name: Some("Alice".into()),
            user_verification: uv,
        }
    }

    fn run(store: &FileStore, input: &str, uv: bool) -> (Approval, String) {
        let mut out = Vec::new();
        let approval = {
            let term = Terminal::new(input.as_bytes(), &mut out);
            let mut agent = TerminalAgent::new(term, store.pin_verifier());
            agent.approve(&request(uv))
        };
        (approval, String::from_utf8(out).unwrap())
    }

    #[test]
    fn approve_and_decline() {
        let dir = TempDir::new("approve");
        let s = store(&dir, 8);
        let (a, out) = run(&s, "y\n", false);
        assert_eq!(a, Approval::Approved { verified: false });
        assert!(out.contains("Sign in to Example\u{fffd}[31m (example.com) as alice (Alice)?"));
        assert!(out.contains("[y/N]"));
        assert_eq!(
            run(&s, "YES\r\n", false).0,
            Approval::Approved { verified: false }
        );
        assert_eq!(run(&s, "n\n", false).0, Approval::Declined);
        assert_eq!(run(&s, "\n", true).0, Approval::Declined);
        assert_eq!(run(&s, "", true).0, Approval::Declined);
        assert_eq!(run(&s, "yy\n", false).0, Approval::Declined);
    }

    #[test]
    fn pin_wrong_then_right() {
        let dir = TempDir::new("pin");
        let s = store(&dir, 8);
        let (a, out) = run(&s, "y\n0000\n12\n4321\n", true);
        assert_eq!(a, Approval::Approved { verified: true });
        assert!(out.contains("Wrong PIN. 7 attempt(s) left."));
        assert!(out.contains("at least 4 characters; not counted"));
        assert!(!out.contains("4321"), "the PIN is never echoed");
        assert_eq!(s.remaining_attempts(), 8);
        // Empty PIN or end of input cancels.
        assert_eq!(run(&s, "y\n\n", true).0, Approval::Declined);
        assert_eq!(run(&s, "y\n0000\n", true).0, Approval::Declined);
        assert_eq!(s.remaining_attempts(), 7);
    }

    #[test]
    fn lockout() {
        let dir = TempDir::new("lockout");
        let s = store(&dir, 2);
        let (a, out) = run(&s, "y\n0000\n1111\n4321\n", true);
        assert_eq!(a, Approval::Locked);
        assert!(out.contains("locked"));
        assert!(s.is_locked());
        // Later ceremonies are refused without asking.
        assert_eq!(run(&s, "y\n4321\n", true).0, Approval::Locked);
    }

    #[test]
    fn choose_account() {
        let dir = TempDir::new("choose");
        let s = store(&dir, 8);
        let accounts = [
            AccountChoice {
                user_name: Some("alice".into()),
                user_display_name: None,
                created: 0,
            },
            AccountChoice {
                user_name: None,
                user_display_name: Some("Bob".into()),
                created: 1_700_000_000,
            },
        ];
        let choose = |input: &str| {
            let mut out = Vec::new();
            let choice = {
                let term = Terminal::new(input.as_bytes(), &mut out);
                TerminalAgent::new(term, s.pin_verifier()).choose_account("example.com", &accounts)
            };
            (choice, String::from_utf8(out).unwrap())
        };
        let (c, out) = choose("2\n");
        assert_eq!(c, Some(1));
        assert!(out.contains("1) alice, created 1970-01-01"));
        assert!(out.contains("2) Bob, created 2023-11-14"));
        assert_eq!(choose("0\nx\n1\n").0, Some(0));
        assert_eq!(choose("3\n3\n3\n1\n").0, None);
        assert_eq!(choose("\n").0, None);
        assert_eq!(choose("").0, None);
    }

    #[test]
    fn helpers() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(951_782_400), "2000-02-29");
        assert_eq!(format_date(4_102_444_799), "2099-12-31");
        assert_eq!(sanitize("a\u{202e}b\nc"), "a\u{fffd}b\u{fffd}c");
        assert_eq!(sanitize(&"x".repeat(100)).chars().count(), MAX_SHOWN + 1);
        let long = format!("{}\nnext\n", "a".repeat(5000));
        let mut r = long.as_bytes();
        assert_eq!(read_line(&mut r).unwrap().unwrap().len(), MAX_LINE);
        assert_eq!(read_line(&mut r).unwrap().unwrap().as_str(), "next");
        assert!(read_line(&mut r).unwrap().is_none());
    }
}
