//! A private D-Bus session bus for tests (`dbus-daemon`), with no service directories, so
//! nothing on it is started by activation: only what a test puts there answers.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The bus, stopped and its directory removed on drop.
pub struct TestBus {
    /// Its D-Bus address.
    pub address: String,
    /// A scratch directory of its own (the socket is in it).
    pub dir: PathBuf,
    daemon: Child,
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `program` is there; if not, says so (or fails under CI) for the running test.
pub fn require(program: &str, package: &str) -> bool {
    let there = hybridge_testkit::have_command(program, &["--version"]);
    if !there {
        hybridge_testkit::missing(
            &hybridge_testkit::this_test(),
            program,
            &format!("apt-get install {package}"),
        );
    }
    there
}

/// Starts a bus; `None` without dbus-daemon (see [`require`]).
pub fn start(name: &str) -> Option<TestBus> {
    if !require("dbus-daemon", "dbus-daemon") {
        return None;
    }
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hybridge-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("bus");
    let address = format!("unix:path={}", socket.display());
    let config = dir.join("bus.conf");
    std::fs::write(
        &config,
        format!(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
             \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
             <busconfig><type>session</type><listen>{address}</listen>\
             <policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>\
             <allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n"
        ),
    )
    .unwrap();
    let daemon = Command::new("dbus-daemon")
        .args(["--nofork", "--nopidfile"])
        .arg(format!("--config-file={}", config.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dbus-daemon");
    let bus = TestBus {
        address,
        dir,
        daemon,
    };
    for _ in 0..500 {
        if socket.exists() {
            return Some(bus);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("dbus-daemon did not listen on {}", bus.address);
}
