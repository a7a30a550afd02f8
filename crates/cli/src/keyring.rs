//! The desktop keyring (the freedesktop Secret Service: GNOME Keyring, KWallet, KeePassXC) as
//! the home of the laptop's linked phones key, so that the key is not a file next to the data
//! it protects.
//!
//! Only what that needs: open a session (the `plain` algorithm: the secret crosses the user's
//! own session bus, which only this user can reach), find an item by its attributes, read it,
//! and create one in the default collection. A locked collection is unlocked through the
//! service's own prompt (the desktop's password dialog), waited for at most
//! [`PROMPT_LIMIT`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dbus::arg::{PropMap, RefArg, Variant};
use dbus::blocking::{Connection, Proxy};
use dbus::message::MatchRule;
use dbus::strings::Path as ObjectPath;
use zeroize::Zeroizing;

const SERVICE: &str = "org.freedesktop.secrets";
const SERVICE_PATH: &str = "/org/freedesktop/secrets";
const SERVICE_IFACE: &str = "org.freedesktop.Secret.Service";
const COLLECTION_IFACE: &str = "org.freedesktop.Secret.Collection";
const PROMPT_IFACE: &str = "org.freedesktop.Secret.Prompt";
/// One call to the service (it may have to be started by D-Bus activation first).
const CALL_LIMIT: Duration = Duration::from_secs(10);
/// How long the person may take to unlock the keyring in the desktop's dialog.
pub const PROMPT_LIMIT: Duration = Duration::from_secs(120);

/// A secret as the Secret Service carries it: session, parameters, value, content type.
type Secret = (ObjectPath<'static>, Vec<u8>, Vec<u8>, String);

/// Why the keyring could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// No session bus, or no Secret Service on it.
    #[error("no desktop keyring is reachable ({0})")]
    Unavailable(String),
    /// The collection stayed locked: the unlock dialog was dismissed or not answered.
    #[error("the desktop keyring is locked and was not unlocked")]
    Locked,
    /// The service answered, but not as the specification says.
    #[error("the desktop keyring failed: {0}")]
    Failed(String),
}

fn failed(e: dbus::Error) -> KeyringError {
    let name = e.name().unwrap_or_default().to_owned();
    let message = e.message().unwrap_or_default().to_owned();
    if name == "org.freedesktop.DBus.Error.ServiceUnknown"
        || name == "org.freedesktop.DBus.Error.NameHasNoOwner"
    {
        KeyringError::Unavailable(format!("no Secret Service on the session bus: {message}"))
    } else if name == "org.freedesktop.Secret.Error.IsLocked" {
        KeyringError::Locked
    } else {
        KeyringError::Failed(format!("{name}: {message}"))
    }
}

/// A session with the Secret Service.
pub struct Keyring {
    conn: Connection,
    session: ObjectPath<'static>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").finish_non_exhaustive()
    }
}

impl Keyring {
    /// The keyring of this desktop session (`DBUS_SESSION_BUS_ADDRESS`).
    pub fn session() -> Result<Self, KeyringError> {
        match std::env::var("DBUS_SESSION_BUS_ADDRESS") {
            Ok(address) if !address.is_empty() => Self::at(&address),
            _ => Err(KeyringError::Unavailable(
                "not in a desktop session: DBUS_SESSION_BUS_ADDRESS is not set".into(),
            )),
        }
    }

    /// The keyring on the bus at `address`.
    pub fn at(address: &str) -> Result<Self, KeyringError> {
        let unavailable = |e: dbus::Error| {
            KeyringError::Unavailable(format!(
                "cannot reach the session bus: {}",
                e.message().unwrap_or_default()
            ))
        };
        let mut channel = dbus::channel::Channel::open_private(address).map_err(unavailable)?;
        channel.register().map_err(unavailable)?;
        let conn = Connection::from(channel);
        let (_output, session): (Variant<Box<dyn RefArg>>, ObjectPath<'static>) = conn
            .with_proxy(SERVICE, SERVICE_PATH, CALL_LIMIT)
            .method_call(
                SERVICE_IFACE,
                "OpenSession",
                ("plain", Variant(Box::new(String::new()) as Box<dyn RefArg>)),
            )
            .map_err(failed)?;
        Ok(Self { conn, session })
    }

    fn proxy<'a>(&'a self, path: &'a ObjectPath<'static>) -> Proxy<'a, &'a Connection> {
        self.conn.with_proxy(SERVICE, path.clone(), CALL_LIMIT)
    }

    fn service(&self) -> Proxy<'_, &Connection> {
        self.conn.with_proxy(SERVICE, SERVICE_PATH, CALL_LIMIT)
    }

    /// The secret of the first item with these attributes, unlocking it if it must; `None`
    /// if there is no such item.
    pub fn find(
        &self,
        attributes: &[(&str, &str)],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, KeyringError> {
        let attributes: HashMap<&str, &str> = attributes.iter().copied().collect();
        let (unlocked, locked): (Vec<ObjectPath<'static>>, Vec<ObjectPath<'static>>) = self
            .service()
            .method_call(SERVICE_IFACE, "SearchItems", (attributes,))
            .map_err(failed)?;
        let item = match (unlocked.into_iter().next(), locked.into_iter().next()) {
            (Some(item), _) => item,
            (None, Some(item)) => {
                self.unlock(&item)?;
                item
            }
            (None, None) => return Ok(None),
        };
        let (secrets,): (HashMap<ObjectPath<'static>, Secret>,) = self
            .service()
            .method_call(SERVICE_IFACE, "GetSecrets", (vec![item], &self.session))
            .map_err(failed)?;
        let value = secrets
            .into_values()
            .next()
            .map(|(_, _, value, _)| Zeroizing::new(value))
            .ok_or_else(|| KeyringError::Failed("it returned no secret for the item".into()))?;
        Ok(Some(value))
    }

    /// Stores `secret` under `label` with these attributes in the default collection,
    /// replacing an item with the same attributes.
    pub fn store(
        &self,
        label: &str,
        attributes: &[(&str, &str)],
        secret: &[u8],
    ) -> Result<(), KeyringError> {
        let collection = self.default_collection()?;
        if &*collection == "/" {
            return Err(KeyringError::Failed(
                "it has no default collection to keep the key in".into(),
            ));
        }
        let attributes: HashMap<String, String> = attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut properties: PropMap = HashMap::new();
        properties.insert(
            "org.freedesktop.Secret.Item.Label".into(),
            Variant(Box::new(label.to_owned())),
        );
        properties.insert(
            "org.freedesktop.Secret.Item.Attributes".into(),
            Variant(Box::new(attributes)),
        );
        let value: Secret = (
            self.session.clone(),
            Vec::new(),
            secret.to_vec(),
            "application/octet-stream".into(),
        );
        let create = |proxy: &Proxy<'_, &Connection>| -> Result<_, KeyringError> {
            let (item, prompt): (ObjectPath<'static>, ObjectPath<'static>) = proxy
                .method_call(
                    COLLECTION_IFACE,
                    "CreateItem",
                    (properties.clone_props(), value.clone(), true),
                )
                .map_err(failed)?;
            Ok((item, prompt))
        };
        let proxy = self.proxy(&collection);
        let (item, prompt) = create(&proxy)?;
        if &*item != "/" {
            return Ok(());
        }
        // The collection is locked: the service asks the person, then we try again.
        self.prompt(&prompt)?;
        let (item, _) = create(&proxy)?;
        if &*item == "/" {
            return Err(KeyringError::Locked);
        }
        Ok(())
    }

    /// The default collection's object path (`/` when there is none).
    fn default_collection(&self) -> Result<ObjectPath<'static>, KeyringError> {
        let (collection,): (ObjectPath<'static>,) = self
            .service()
            .method_call(SERVICE_IFACE, "ReadAlias", ("default",))
            .map_err(failed)?;
        Ok(collection)
    }

    /// Unlocks `object` (an item or collection), through the desktop's dialog if it takes one.
    fn unlock(&self, object: &ObjectPath<'static>) -> Result<(), KeyringError> {
        let (_, prompt): (Vec<ObjectPath<'static>>, ObjectPath<'static>) = self
            .service()
            .method_call(SERVICE_IFACE, "Unlock", (vec![object.clone()],))
            .map_err(failed)?;
        if &*prompt == "/" {
            return Ok(());
        }
        self.prompt(&prompt)
    }

    /// Runs the service's prompt at `path` and waits for its completion.
    fn prompt(&self, path: &ObjectPath<'static>) -> Result<(), KeyringError> {
        if &**path == "/" {
            return Err(KeyringError::Locked);
        }
        let outcome = std::sync::Arc::new(std::sync::Mutex::new(None::<bool>));
        let seen = outcome.clone();
        let rule = MatchRule::new_signal(PROMPT_IFACE, "Completed").with_path(path.clone());
        let token = self
            .conn
            .add_match(rule, move |(dismissed,): (bool,), _, _| {
                if let Ok(mut o) = seen.lock() {
                    *o = Some(dismissed);
                }
                false
            })
            .map_err(failed)?;
        eprintln!(
            "hybridge: the desktop keyring is locked: unlock it in its dialog (waiting up to {} \
             minutes)",
            PROMPT_LIMIT.as_secs() / 60
        );
        let shown: Result<(), _> = self.proxy(path).method_call(PROMPT_IFACE, "Prompt", ("",));
        let deadline = Instant::now() + PROMPT_LIMIT;
        let result = shown.map_err(failed).and_then(|()| {
            loop {
                let got = outcome.lock().ok().and_then(|o| *o);
                if let Some(dismissed) = got {
                    break if dismissed {
                        Err(KeyringError::Locked)
                    } else {
                        Ok(())
                    };
                }
                if Instant::now() >= deadline {
                    break Err(KeyringError::Locked);
                }
                self.conn
                    .process(Duration::from_millis(200))
                    .map_err(failed)?;
            }
        });
        let _ = self.conn.remove_match(token);
        result
    }
}

trait CloneProps {
    fn clone_props(&self) -> PropMap;
}

impl CloneProps for PropMap {
    fn clone_props(&self) -> PropMap {
        self.iter()
            .map(|(k, v)| (k.clone(), Variant(v.0.box_clone())))
            .collect()
    }
}

/// A private session bus with GNOME Keyring on it, its login keyring unlocked: for tests,
/// here and in the phones file's.
#[cfg(test)]
pub mod test_keyring {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use crate::test_bus::{self, TestBus};

    /// The keyring daemon on its bus, stopped on drop.
    pub struct TestKeyring {
        pub address: String,
        keyring: Child,
        _bus: TestBus,
    }

    impl Drop for TestKeyring {
        fn drop(&mut self) {
            let _ = self.keyring.kill();
            let _ = self.keyring.wait();
        }
    }

    /// Starts them; `None` (after saying what is missing, or failing under CI) without
    /// dbus-daemon or gnome-keyring-daemon.
    pub fn start() -> Option<TestKeyring> {
        if !test_bus::require("gnome-keyring-daemon", "gnome-keyring") {
            return None;
        }
        let bus = test_bus::start("keyring")?;
        let runtime = bus.dir.join("run");
        std::fs::create_dir_all(&runtime).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let log = bus.dir.join("keyring.log");
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets", "--foreground"])
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .env("HOME", &bus.dir)
            .env("XDG_DATA_HOME", bus.dir.join("data"))
            .env("XDG_RUNTIME_DIR", &runtime)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start gnome-keyring-daemon");
        // The login keyring's password on stdin, then end of input: it is made and unlocked.
        {
            use std::io::Write;
            let mut stdin = keyring.stdin.take().unwrap();
            stdin.write_all(b"test password").unwrap();
        }
        let ring = TestKeyring {
            address: bus.address.clone(),
            keyring,
            _bus: bus,
        };
        // Ready once the service answers with its login keyring as the default.
        for _ in 0..200 {
            let ready = super::Keyring::at(&ring.address)
                .and_then(|k| k.default_collection())
                .is_ok_and(|c| &*c != "/");
            if ready {
                return Some(ring);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "gnome-keyring-daemon did not come up on {}: {}",
            ring.address,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    impl TestKeyring {
        /// `secret-tool lookup` (libsecret: a client we did not write) for these attributes:
        /// the secret's bytes, or `None` when it finds nothing or is not installed.
        pub fn secret_tool_lookup(&self, attributes: &[(&str, &str)]) -> Option<Vec<u8>> {
            if !std::path::Path::new("/usr/bin/secret-tool").exists() {
                hybridge_testkit::missing(
                    &hybridge_testkit::this_test(),
                    "secret-tool",
                    "apt-get install libsecret-tools",
                );
                return None;
            }
            let mut cmd = Command::new("secret-tool");
            cmd.arg("lookup");
            for (k, v) in attributes {
                cmd.args([k, v]);
            }
            let out = cmd
                .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
                .output()
                .expect("run secret-tool");
            out.status.success().then_some(out.stdout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_stored_is_found_again_by_us_and_by_libsecret() {
        let Some(ring) = test_keyring::start() else {
            return;
        };
        let keyring = Keyring::at(&ring.address).unwrap();
        let attrs = [("application", "hybridge-test"), ("check", "00ff")];
        assert!(keyring.find(&attrs).unwrap().is_none());
        keyring.store("hybridge test", &attrs, b"first").unwrap();
        keyring.store("hybridge test", &attrs, b"second").unwrap();
        // Replaced, not added: one item, the newer secret.
        assert_eq!(
            keyring.find(&attrs).unwrap().as_deref().map(Vec::as_slice),
            Some(&b"second"[..])
        );
        // A new session (another process, as the next command would be) finds it too.
        let again = Keyring::at(&ring.address).unwrap();
        assert_eq!(
            again.find(&attrs).unwrap().as_deref().map(Vec::as_slice),
            Some(&b"second"[..])
        );
        // Other attributes find nothing.
        assert!(
            keyring
                .find(&[("application", "hybridge-test"), ("check", "0000")])
                .unwrap()
                .is_none()
        );
        if let Some(found) = ring.secret_tool_lookup(&attrs) {
            assert_eq!(found, b"second");
        }
    }

    #[test]
    fn no_keyring_is_a_clear_error() {
        assert!(matches!(
            Keyring::at("unix:path=/nonexistent/bus"),
            Err(KeyringError::Unavailable(_))
        ));
    }
}
