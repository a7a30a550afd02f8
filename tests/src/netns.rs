//! Three "machines" — laptop, phone, relay — as network namespaces joined by veth links to a
//! bridge in a fourth namespace. Only addresses inside these namespaces (10.200.0.0/24) are
//! used; traffic never leaves them. Names carry the process id, and [`Lab`] deletes every
//! namespace it made when dropped (deleting a namespace removes its veth ends).

use std::process::Command;

/// The subnet's broadcast address, where the phone sends its UDP adverts.
pub const BROADCAST: &str = "10.200.0.255";
/// The laptop's address.
pub const LAPTOP_IP: &str = "10.200.0.1";
/// The phone's address.
pub const PHONE_IP: &str = "10.200.0.2";
/// The relay's address.
pub const RELAY_IP: &str = "10.200.0.3";

/// The namespaces of one test run.
pub struct Lab {
    /// Laptop namespace name.
    pub laptop: String,
    /// Phone namespace name.
    pub phone: String,
    /// Relay namespace name.
    pub relay: String,
    bridge: String,
    made: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lab {
    /// Builds the namespaces and links. Needs root and iproute2.
    pub fn new(tag: &str) -> Result<Lab, String> {
        let base = format!("hyb{}{tag}", std::process::id());
        let mut lab = Lab {
            laptop: format!("{base}-lap"),
            phone: format!("{base}-pho"),
            relay: format!("{base}-rel"),
            bridge: format!("{base}-br"),
            made: Vec::new(),
        };
        // On error, Drop removes whatever was made.
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<(), String> {
        for ns in [&self.bridge, &self.laptop, &self.phone, &self.relay] {
            ip(&["netns", "add", ns])?;
            self.made.push(ns.clone());
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let br = self.bridge.clone();
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", "br0", "up"])?;
        for (ns, port, addr) in [
            (self.laptop.clone(), "p-lap", LAPTOP_IP),
            (self.phone.clone(), "p-pho", PHONE_IP),
            (self.relay.clone(), "p-rel", RELAY_IP),
        ] {
            // The veth pair is made inside the machine's namespace with its peer in the
            // bridge's, so no interface name is ever used in the host's namespace.
            ip(&[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns",
                &br,
            ])?;
            ip(&["-n", &br, "link", "set", port, "master", "br0"])?;
            ip(&["-n", &br, "link", "set", port, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "brd",
                BROADCAST,
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// A command that runs `program` inside namespace `ns`.
    pub fn exec(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
