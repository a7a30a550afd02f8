//! Per-client-IP connection rate limit: a token bucket per address (IPv6 per /64), in a
//! sharded map that is swept of idle entries so it stays bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

const SHARDS: usize = 16;
/// A shard this large is swept on insert, whatever the sweep timer says.
const SHARD_SOFT_MAX: usize = 1 << 16;

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    shards: Vec<Mutex<HashMap<u128, Bucket>>>,
}

fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u32::from(v4) as u128,
            None => (u128::from(v6) >> 64 << 64) | 1, // the /64; low bit keeps it off v4 keys
        },
    }
}

impl RateLimiter {
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: burst.max(1) as f64,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    /// Takes one token for `ip`; false when the client is over its rate.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if !self.enabled() {
            return true;
        }
        let k = key(ip);
        let shard = &self.shards[(k as usize ^ (k >> 64) as usize) % SHARDS];
        let Ok(mut map) = shard.lock() else {
            return true;
        };
        if map.len() >= SHARD_SOFT_MAX {
            Self::sweep_map(&mut map, now, self.rate, self.burst);
        }
        let b = map.entry(k).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops buckets that have refilled completely: they carry no information.
    pub fn sweep(&self, now: Instant) {
        for shard in &self.shards {
            if let Ok(mut map) = shard.lock() {
                Self::sweep_map(&mut map, now, self.rate, self.burst);
            }
        }
    }

    fn sweep_map(map: &mut HashMap<u128, Bucket>, now: Instant, rate: f64, burst: f64) {
        map.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills() {
        let rl = RateLimiter::new(10.0, 3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = Instant::now();
        assert!((0..3).all(|_| rl.allow(ip, t)));
        assert!(!rl.allow(ip, t));
        assert!(rl.allow("192.0.2.2".parse().unwrap(), t));
        assert!(rl.allow(ip, t + Duration::from_millis(150)));
        rl.sweep(t + Duration::from_secs(10));
        assert!(rl.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }
}
