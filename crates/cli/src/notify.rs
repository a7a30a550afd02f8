//! The QR code in a desktop notification, for `hybridge key`: an application asks for the key
//! while its terminal is out of sight (or the key runs as a user service with none), so the
//! code goes where the person is looking, through the freedesktop notification service on the
//! session bus (`org.freedesktop.Notifications`, as GNOME, KDE, dunst and mako provide it).
//!
//! The notification carries the code as an image (the `image-data` hint, raw RGB), is marked
//! critical so that it stays until the ceremony ends, and is withdrawn then. All D-Bus traffic
//! runs on a thread of its own: a slow or absent notification service never delays the key's
//! CTAPHID keepalives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use dbus::arg::{RefArg, Variant};
use dbus::blocking::Connection;

const SERVICE: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";
/// How long one call to the notification service may take.
const CALL_LIMIT: Duration = Duration::from_secs(2);
/// Pixels a QR module in the notification's image (a typical code is 37 modules and a quiet
/// zone: about 270 pixels a side).
const SCALE: usize = 6;

enum Command {
    Show {
        token: u64,
        summary: String,
        body: String,
        url: String,
    },
    Close {
        token: u64,
    },
}

/// A connection to the desktop's notification service.
pub struct Notifier {
    tx: mpsc::Sender<Command>,
    next: AtomicU64,
}

/// The notifications on screen, with the bus each is on: [`withdraw_all`] takes them down when
/// the process ends by a signal, which runs no destructors.
static ON_SCREEN: std::sync::Mutex<Vec<(String, u32)>> = std::sync::Mutex::new(Vec::new());

fn on_screen() -> std::sync::MutexGuard<'static, Vec<(String, u32)>> {
    ON_SCREEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Withdraws every notification still on screen, each call bounded by a second: for an exit
/// that runs no destructors (Ctrl-C, SIGTERM).
pub fn withdraw_all() {
    let shown = std::mem::take(&mut *on_screen());
    for (address, id) in shown {
        let Ok(mut channel) = dbus::channel::Channel::open_private(&address) else {
            continue;
        };
        if channel.register().is_err() {
            continue;
        }
        let conn = Connection::from(channel);
        let proxy = conn.with_proxy(SERVICE, PATH, Duration::from_secs(1));
        let _: Result<(), _> = proxy.method_call(SERVICE, "CloseNotification", (id,));
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

/// A notification on screen; withdrawn when dropped.
pub struct Notice<'a> {
    notifier: &'a Notifier,
    token: u64,
}

impl Drop for Notice<'_> {
    fn drop(&mut self) {
        let _ = self.notifier.tx.send(Command::Close { token: self.token });
    }
}

impl Notifier {
    /// The desktop session's notification service, if this process runs in a desktop session
    /// (`DBUS_SESSION_BUS_ADDRESS` is set); `Ok(None)` outside one.
    pub fn session() -> Result<Option<Self>, String> {
        match std::env::var("DBUS_SESSION_BUS_ADDRESS") {
            Ok(address) if !address.is_empty() => Self::at(&address).map(Some),
            _ => Ok(None),
        }
    }

    /// The notification service on the bus at `address` (a D-Bus address such as
    /// `unix:path=/run/user/1000/bus`).
    pub fn at(address: &str) -> Result<Self, String> {
        let mut channel =
            dbus::channel::Channel::open_private(address).map_err(|e| describe(&e))?;
        channel.register().map_err(|e| describe(&e))?;
        let address = address.to_owned();
        let conn = Connection::from(channel);
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("notifications".into())
            .spawn(move || serve(&conn, &rx, &address))
            .map_err(|e| format!("cannot start the notification thread: {e}"))?;
        Ok(Self {
            tx,
            next: AtomicU64::new(1),
        })
    }

    /// Shows the QR code of `url` with `summary` and `body`, until the returned notice is
    /// dropped. Failures are reported once on stderr by the notification thread; the terminal
    /// still shows the code.
    pub fn show_qr(&self, summary: &str, body: &str, url: &str) -> Notice<'_> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Command::Show {
            token,
            summary: summary.to_owned(),
            body: body.to_owned(),
            url: url.to_owned(),
        });
        Notice {
            notifier: self,
            token,
        }
    }
}

fn describe(e: &dbus::Error) -> String {
    e.message()
        .map(str::to_owned)
        .unwrap_or_else(|| e.to_string())
}

/// The notification thread: one call at a time, until the [`Notifier`] is dropped.
fn serve(conn: &Connection, rx: &mpsc::Receiver<Command>, address: &str) {
    let proxy = conn.with_proxy(SERVICE, PATH, CALL_LIMIT);
    let mut shown: HashMap<u64, u32> = HashMap::new();
    let mut warned = false;
    let mut warn = |what: &str, e: &dbus::Error| {
        if !std::mem::replace(&mut warned, true) {
            eprintln!(
                "hybridge: the desktop notification could not be {what} ({}); the QR code \
                 shows on the terminal only",
                describe(e)
            );
        }
    };
    while let Ok(command) = rx.recv() {
        match command {
            Command::Show {
                token,
                summary,
                body,
                url,
            } => {
                let Some(image) = qr_image(&url) else {
                    continue;
                };
                let mut hints: HashMap<&str, Variant<Box<dyn RefArg>>> = HashMap::new();
                hints.insert("image-data", Variant(Box::new(image)));
                // Critical: it stays until the ceremony ends and withdraws it.
                hints.insert("urgency", Variant(Box::new(2u8)));
                hints.insert("category", Variant(Box::new("device".to_owned())));
                let call: Result<(u32,), _> = proxy.method_call(
                    SERVICE,
                    "Notify",
                    (
                        "hybridge",
                        0u32,
                        "phone",
                        summary.as_str(),
                        body.as_str(),
                        Vec::<String>::new(),
                        hints,
                        0i32,
                    ),
                );
                match call {
                    Ok((id,)) => {
                        shown.insert(token, id);
                        on_screen().push((address.to_owned(), id));
                    }
                    Err(e) => warn("shown", &e),
                }
            }
            Command::Close { token } => {
                if let Some(id) = shown.remove(&token) {
                    on_screen().retain(|(a, i)| !(a == address && *i == id));
                    let call: Result<(), _> =
                        proxy.method_call(SERVICE, "CloseNotification", (id,));
                    if let Err(e) = call {
                        warn("withdrawn", &e);
                    }
                }
            }
        }
    }
    // The key is going away: nothing it showed may stay behind.
    for id in shown.into_values() {
        on_screen().retain(|(a, i)| !(a == address && *i == id));
        let _: Result<(), _> = proxy.method_call(SERVICE, "CloseNotification", (id,));
    }
}

/// The `image-data` hint for the QR code of `url`: `(width, height, rowstride, has_alpha,
/// bits_per_sample, channels, data)`, RGB.
type ImageData = (i32, i32, i32, bool, i32, i32, Vec<u8>);

fn qr_image(url: &str) -> Option<ImageData> {
    let (side, grey) = hybridge_client::render::greyscale(url, SCALE).ok()?;
    let rgb: Vec<u8> = grey.iter().flat_map(|&g| [g, g, g]).collect();
    let side = i32::try_from(side).ok()?;
    Some((side, side, side * 3, false, 8, 3, rgb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbus::Message;
    use dbus::channel::MatchingReceiver;
    use dbus::message::MatchRule;
    use std::sync::{Arc, Mutex};

    fn bus() -> Option<crate::test_bus::TestBus> {
        crate::test_bus::start("notify")
    }

    /// A notification service written from the freedesktop specification: it records every
    /// call and answers Notify with IDs from 7 on.
    fn notification_service(address: &str) -> Arc<Mutex<Vec<Message>>> {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut channel = dbus::channel::Channel::open_private(address).unwrap();
        channel.register().unwrap();
        let conn = Connection::from(channel);
        conn.request_name(SERVICE, false, true, false).unwrap();
        let seen = calls.clone();
        std::thread::spawn(move || {
            let next = std::cell::Cell::new(7u32);
            conn.start_receive(
                MatchRule::new_method_call(),
                Box::new(move |msg: Message, conn: &Connection| {
                    let reply = match msg.member().as_deref() {
                        Some("Notify") => {
                            let id = next.replace(next.get() + 1);
                            msg.method_return().append1(id)
                        }
                        _ => msg.method_return(),
                    };
                    let _ = dbus::channel::Sender::send(conn, reply);
                    seen.lock().unwrap().push(msg);
                    true
                }),
            );
            loop {
                if conn.process(Duration::from_millis(100)).is_err() {
                    return;
                }
            }
        });
        calls
    }

    fn wait_for(calls: &Mutex<Vec<Message>>, n: usize) -> Vec<Message> {
        for _ in 0..300 {
            let got = calls.lock().unwrap();
            if got.len() >= n {
                return got.iter().map(|m| m.duplicate().unwrap()).collect();
            }
            drop(got);
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{} calls, expected {n}", calls.lock().unwrap().len());
    }

    #[test]
    fn the_qr_code_is_shown_as_an_image_a_phone_can_read_and_withdrawn_after() {
        let Some(bus) = bus() else { return };
        let calls = notification_service(&bus.address);
        let notifier = Notifier::at(&bus.address).expect("connect to the bus");
        let url = "FIDO:/0123456789012345678901234567890123456789012345678901234567890123";
        let notice = notifier.show_qr("Sign in with your phone", "example.com", url);
        let got = wait_for(&calls, 1);
        assert_eq!(got[0].member().as_deref(), Some("Notify"));
        let mut args = got[0].iter_init();
        let app: String = args.read().unwrap();
        let replaces: u32 = args.read().unwrap();
        let _icon: String = args.read().unwrap();
        let summary: String = args.read().unwrap();
        let body: String = args.read().unwrap();
        let actions: Vec<String> = args.read().unwrap();
        let hints: dbus::arg::PropMap = args.read().unwrap();
        let timeout: i32 = args.read().unwrap();
        assert_eq!(
            (app.as_str(), replaces, summary.as_str(), body.as_str()),
            ("hybridge", 0, "Sign in with your phone", "example.com")
        );
        assert!(actions.is_empty());
        assert_eq!(timeout, 0, "it stays until withdrawn");
        assert_eq!(hints["urgency"].0.as_u64(), Some(2));
        // The image, read back as the specification lays it out, decodes (with rqrr, through
        // the phone's QR reader) to the very URL.
        let mut image = hints["image-data"].0.as_iter().unwrap();
        let mut int = || image.next().unwrap().as_i64().unwrap();
        let (w, h, stride) = (int(), int(), int());
        let has_alpha = int();
        let (bits, channels) = (int(), int());
        assert_eq!((has_alpha, bits, channels), (0, 8, 3));
        assert_eq!(stride, w * 3);
        let data: Vec<u8> = image
            .next()
            .unwrap()
            .as_iter()
            .unwrap()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(data.len() as i64, stride * h);
        let grey: Vec<u8> = data.chunks(3).map(|p| p[0]).collect();
        let read =
            hybridge_authenticator::qr_image::decode_qr_greyscale(w as usize, h as usize, &grey)
                .expect("the notification's image is a readable QR code");
        assert_eq!(read, url);

        // The ceremony ends: the very notification is withdrawn.
        drop(notice);
        let got = wait_for(&calls, 2);
        assert_eq!(got[1].member().as_deref(), Some("CloseNotification"));
        assert_eq!(got[1].read1::<u32>().unwrap(), 7);

        // A signal ends the process mid-ceremony (no destructors run): withdraw_all takes
        // the code down all the same.
        let _stale = notifier.show_qr("Sign in with your phone", "", url);
        let got = wait_for(&calls, 3);
        assert_eq!(got[2].member().as_deref(), Some("Notify"));
        for _ in 0..300 {
            if on_screen().iter().any(|(_, id)| *id == 8) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        withdraw_all();
        let got = wait_for(&calls, 4);
        assert_eq!(got[3].member().as_deref(), Some("CloseNotification"));
        assert_eq!(got[3].read1::<u32>().unwrap(), 8);
        assert!(!on_screen().iter().any(|(a, _)| *a == bus.address));
    }

    #[test]
    fn no_notification_service_is_one_warning_and_no_failure() {
        let Some(bus) = bus() else { return };
        // A bus without a notification service: the calls fail, the caller never waits.
        let notifier = Notifier::at(&bus.address).expect("connect to the bus");
        let started = std::time::Instant::now();
        let notice = notifier.show_qr("Sign in with your phone", "", "FIDO:/1234");
        drop(notice);
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(Notifier::at("unix:path=/nonexistent/bus").is_err());
    }
}
