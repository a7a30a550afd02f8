//! Per-client-IP limits (IPv6 per /64) that charge an address for what abuse looks like,
//! not for use.
//!
//! Phones behind a carrier-grade NAT share one IPv4 address, so an address that opens
//! many tunnels at once may be many honest people. What they never do in numbers is fail:
//! leave a request unfinished, send garbage, get refused, or wait as a phone no laptop ever
//! comes for. So:
//!
//! - **Failure budget**: each address has a token bucket (`rate_burst` tokens, refilled at
//!   `rate_per_ip` per second). A connection is admitted while its address's bucket holds a
//!   token, and takes none. A token is taken when a connection ends badly ([`Ticket::charge`]);
//!   a tunnel that pairs costs nothing. The bucket may go into debt, so connections admitted
//!   together and failing together are paid back in full before the address gets in again:
//!   in the long run an address fails at most `rate_per_ip` times a second.
//! - **Unpaired connections**: an address may hold at most `max_unpaired` connections that are
//!   not part of a paired tunnel (requests being read, phones waiting). This bounds what a
//!   burst of admitted connections can hold before the failures are counted; pairing gives
//!   the place back, so paired tunnels are limited only by `--max-tunnels`.
//!
//! Addresses live in a sharded map that is swept of entries that carry no information (a
//! full bucket and no connection), so it stays bounded by the addresses in use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

const SHARDS: usize = 16;
/// A shard this large is swept on insert, whatever the sweep timer says.
const SHARD_SOFT_MAX: usize = 1 << 16;

struct Entry {
    /// May be negative: a debt of failures still to be paid back.
    tokens: f64,
    last: Instant,
    /// Connections of this address that hold a [`Ticket`] place.
    unpaired: u32,
}

/// Why an address is not admitted (both answered with 429).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its failure budget is spent.
    Budget,
    /// It holds `max_unpaired` connections that are not paired.
    Unpaired,
}

pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    max_unpaired: u32,
    shards: Vec<Mutex<HashMap<u128, Entry>>>,
}

/// The address's key in per-IP maps: an IPv4 address, or an IPv6 /64.
pub(crate) fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u32::from(v4) as u128,
            None => (u128::from(v6) >> 64 << 64) | 1, // the /64; low bit keeps it off v4 keys
        },
    }
}

impl RateLimiter {
    /// `rate` 0 turns the failure budget off, `max_unpaired` 0 the unpaired bound.
    pub(crate) fn new(rate: f64, burst: u32, max_unpaired: usize) -> Arc<Self> {
        Arc::new(Self {
            rate: rate.max(0.0),
            burst: burst.max(1) as f64,
            max_unpaired: max_unpaired.min(u32::MAX as usize) as u32,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        })
    }

    fn budget(&self) -> bool {
        self.rate > 0.0
    }

    fn shard(&self, k: u128) -> Option<MutexGuard<'_, HashMap<u128, Entry>>> {
        self.shards[(k as usize ^ (k >> 64) as usize) % SHARDS]
            .lock()
            .ok()
    }

    /// Refills `e` up to `now`.
    fn refill(&self, e: &mut Entry, now: Instant) {
        let elapsed = now.saturating_duration_since(e.last).as_secs_f64();
        e.tokens = (e.tokens + elapsed * self.rate).min(self.burst);
        e.last = now;
    }

    /// Admits a connection from `ip` (it takes no token) and gives it a place among the
    /// address's unpaired connections, held by the ticket.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Ticket, Refusal> {
        if !self.budget() && self.max_unpaired == 0 {
            return Ok(Ticket::none());
        }
        let k = key(ip);
        let Some(mut map) = self.shard(k) else {
            return Ok(Ticket::none());
        };
        if map.len() >= SHARD_SOFT_MAX {
            self.sweep_map(&mut map, now);
        }
        let e = map.entry(k).or_insert(Entry {
            tokens: self.burst,
            last: now,
            unpaired: 0,
        });
        self.refill(e, now);
        if self.budget() && e.tokens < 1.0 {
            return Err(Refusal::Budget);
        }
        if self.max_unpaired > 0 && e.unpaired >= self.max_unpaired {
            return Err(Refusal::Unpaired);
        }
        e.unpaired += 1;
        Ok(Ticket {
            limiter: Some(self.clone()),
            key: k,
            holds: true,
        })
    }

    fn release(&self, k: u128) {
        if let Some(mut map) = self.shard(k)
            && let Some(e) = map.get_mut(&k)
        {
            e.unpaired = e.unpaired.saturating_sub(1);
        }
    }

    fn charge(&self, k: u128, now: Instant) {
        if !self.budget() {
            return;
        }
        let Some(mut map) = self.shard(k) else {
            return;
        };
        let e = map.entry(k).or_insert(Entry {
            tokens: self.burst,
            last: now,
            unpaired: 0,
        });
        self.refill(e, now);
        e.tokens -= 1.0;
    }

    /// Drops entries that carry no information: a full bucket and no connection.
    pub(crate) fn sweep(&self, now: Instant) {
        for shard in &self.shards {
            if let Ok(mut map) = shard.lock() {
                self.sweep_map(&mut map, now);
            }
        }
    }

    fn sweep_map(&self, map: &mut HashMap<u128, Entry>, now: Instant) {
        map.retain(|_, e| {
            let refilled =
                e.tokens + now.saturating_duration_since(e.last).as_secs_f64() * self.rate;
            e.unpaired > 0 || refilled < self.burst
        });
    }
}

/// A connection's place among its address's unpaired connections, given back when the
/// ticket is dropped or the tunnel pairs; and the means to charge the address if the
/// connection ends badly.
pub(crate) struct Ticket {
    limiter: Option<Arc<RateLimiter>>,
    key: u128,
    holds: bool,
}

impl Ticket {
    /// A ticket for a connection no limit applies to (limits off, address unknown).
    pub(crate) fn none() -> Ticket {
        Ticket {
            limiter: None,
            key: 0,
            holds: false,
        }
    }

    /// The connection is now part of a paired tunnel: its place goes back. Charging it
    /// later is still possible.
    pub(crate) fn paired(&mut self) {
        if std::mem::take(&mut self.holds)
            && let Some(l) = &self.limiter
        {
            l.release(self.key);
        }
    }

    /// The connection ended badly: its address loses a token.
    pub(crate) fn charge(self) {
        self.charge_at(Instant::now());
    }

    fn charge_at(mut self, now: Instant) {
        self.paired();
        if let Some(l) = &self.limiter {
            l.charge(self.key, now);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.paired();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn admission_is_free_and_failures_are_charged() {
        let rl = RateLimiter::new(10.0, 3, 0);
        let a = ip("192.0.2.1");
        let t = Instant::now();
        // However many connections pair, none costs a token.
        for _ in 0..1000 {
            let mut ticket = rl.admit(a, t).expect("admitted");
            ticket.paired();
        }
        // Three failures spend the budget; the address is refused until a token is back.
        for _ in 0..3 {
            rl.admit(a, t).expect("admitted").charge_at(t);
        }
        assert_eq!(rl.admit(a, t).err(), Some(Refusal::Budget));
        assert!(
            rl.admit(ip("192.0.2.2"), t).is_ok(),
            "other addresses unaffected"
        );
        assert!(rl.admit(a, t + Duration::from_millis(110)).is_ok());
    }

    #[test]
    fn failures_of_concurrent_connections_are_a_debt() {
        let rl = RateLimiter::new(10.0, 5, 0);
        let a = ip("2001:db8::1");
        let t = Instant::now();
        let tickets: Vec<_> = (0..25).map(|_| rl.admit(a, t).expect("admitted")).collect();
        for ticket in tickets {
            ticket.charge_at(t);
        }
        // 25 failures against a budget of 5: 20 tokens owed, 2.1 s at 10/s to get one back.
        assert_eq!(
            rl.admit(a, t + Duration::from_secs(2)).err(),
            Some(Refusal::Budget)
        );
        // The same /64 is the same client.
        assert!(
            rl.admit(ip("2001:db8::2"), t + Duration::from_secs(2))
                .is_err()
        );
        assert!(rl.admit(a, t + Duration::from_millis(2110)).is_ok());
    }

    #[test]
    fn unpaired_connections_are_bounded_until_they_pair() {
        let rl = RateLimiter::new(0.0, 1, 3);
        let a = ip("198.51.100.7");
        let t = Instant::now();
        let mut held: Vec<_> = (0..3).map(|_| rl.admit(a, t).expect("admitted")).collect();
        assert_eq!(rl.admit(a, t).err(), Some(Refusal::Unpaired));
        held[0].paired(); // a tunnel paired: the place is free, the ticket lives on
        let fourth = rl.admit(a, t).expect("a place was given back");
        assert_eq!(rl.admit(a, t).err(), Some(Refusal::Unpaired));
        drop(held.pop()); // a connection closed
        assert!(rl.admit(a, t).is_ok());
        drop(fourth);
        // With the budget off, failures cost nothing.
        rl.admit(ip("198.51.100.8"), t).unwrap().charge_at(t);
    }

    #[test]
    fn sweep_keeps_only_entries_that_matter() {
        let rl = RateLimiter::new(10.0, 3, 10);
        let t = Instant::now();
        let waiting = rl.admit(ip("192.0.2.1"), t).unwrap();
        rl.admit(ip("192.0.2.2"), t).unwrap().charge_at(t);
        drop(rl.admit(ip("192.0.2.3"), t).unwrap());
        rl.sweep(t + Duration::from_millis(50));
        let len = || {
            rl.shards
                .iter()
                .map(|s| s.lock().unwrap().len())
                .sum::<usize>()
        };
        assert_eq!(len(), 2, "the waiting connection and the unpaid failure");
        rl.sweep(t + Duration::from_secs(1));
        assert_eq!(len(), 1, "the failure is paid back");
        drop(waiting);
        rl.sweep(t + Duration::from_secs(1));
        assert_eq!(len(), 0);
        // Disabled: nothing is stored.
        let off = RateLimiter::new(0.0, 3, 0);
        off.admit(ip("192.0.2.1"), t).unwrap().charge_at(t);
        assert!(off.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }
}
