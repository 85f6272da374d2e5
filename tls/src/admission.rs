//! Per-identity admission (THREAT-MODEL: no one can flood): each authenticated identity
//! (an enrollment certificate's SHA-256) has a token bucket — `rate_per_s` requests a second,
//! bursts of `burst` — and at most `max_in_flight` requests under way. The table of
//! identities is bounded: idle ones are forgotten when it is full, and while every one of
//! `max_identities` is busy a new identity is refused (identities come from the CA, so a
//! flood of them is itself an attack on the CA's rules).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The limits for one kind of request.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    pub rate_per_s: f64,
    pub burst: f64,
    pub max_in_flight: u32,
    pub max_identities: usize,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionRefused {
    #[error("this identity sends faster than {0} requests a second; slow down and retry")]
    Rate(u32),
    #[error("this identity has {0} requests under way already; wait for one to finish")]
    InFlight(u32),
    #[error("too many identities are active at once; retry shortly")]
    Identities,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    in_flight: u32,
}

#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

/// A request under way; dropping it ends it (it may outlive the call, e.g. in a stream).
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    identity: [u8; 32],
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut buckets = self.admission.lock();
        if let Some(bucket) = buckets.get_mut(&self.identity) {
            bucket.in_flight = bucket.in_flight.saturating_sub(1);
        }
    }
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Bucket>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits one request from `identity` at `now`, or says why not.
    pub fn admit_at(
        self: &Arc<Self>,
        identity: [u8; 32],
        now: Instant,
    ) -> Result<Admitted, AdmissionRefused> {
        let limits = self.limits;
        let mut buckets = self.lock();
        if !buckets.contains_key(&identity) && buckets.len() >= limits.max_identities {
            // Forget identities that are idle and whose bucket would be full again.
            buckets.retain(|_, b| {
                let idle_s = now.saturating_duration_since(b.refilled).as_secs_f64();
                b.in_flight > 0 || b.tokens + idle_s * limits.rate_per_s < limits.burst
            });
            if buckets.len() >= limits.max_identities {
                return Err(AdmissionRefused::Identities);
            }
        }
        let bucket = buckets.entry(identity).or_insert(Bucket {
            tokens: limits.burst,
            refilled: now,
            in_flight: 0,
        });
        let elapsed_s = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed_s * limits.rate_per_s).min(limits.burst);
        bucket.refilled = now;
        if bucket.in_flight >= limits.max_in_flight {
            return Err(AdmissionRefused::InFlight(limits.max_in_flight));
        }
        if bucket.tokens < 1.0 {
            return Err(AdmissionRefused::Rate(limits.rate_per_s as u32));
        }
        bucket.tokens -= 1.0;
        bucket.in_flight += 1;
        drop(buckets);
        Ok(Admitted {
            admission: Arc::clone(self),
            identity,
        })
    }

    /// Admits one request from `identity` now.
    pub fn admit(self: &Arc<Self>, identity: [u8; 32]) -> Result<Admitted, AdmissionRefused> {
        self.admit_at(identity, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LIMITS: AdmissionLimits = AdmissionLimits {
        rate_per_s: 10.0,
        burst: 5.0,
        max_in_flight: 3,
        max_identities: 2,
    };

    #[test]
    fn a_burst_then_the_rate() {
        let admission = Admission::new(LIMITS);
        let t0 = Instant::now();
        for _ in 0..5 {
            drop(admission.admit_at([1; 32], t0).unwrap());
        }
        assert_eq!(
            admission.admit_at([1; 32], t0).unwrap_err(),
            AdmissionRefused::Rate(10)
        );
        // Another identity is not held back by the first.
        drop(admission.admit_at([2; 32], t0).unwrap());
        // A tenth of a second refills one request.
        drop(
            admission
                .admit_at([1; 32], t0 + Duration::from_millis(100))
                .unwrap(),
        );
    }

    #[test]
    fn requests_under_way_are_capped_until_they_end() {
        let admission = Admission::new(LIMITS);
        let t0 = Instant::now();
        let held: Vec<_> = (0..3)
            .map(|_| admission.admit_at([1; 32], t0).unwrap())
            .collect();
        assert_eq!(
            admission.admit_at([1; 32], t0).unwrap_err(),
            AdmissionRefused::InFlight(3)
        );
        drop(held);
        drop(admission.admit_at([1; 32], t0).unwrap());
    }

    #[test]
    fn the_table_of_identities_is_bounded() {
        let admission = Admission::new(LIMITS);
        let t0 = Instant::now();
        let _a = admission.admit_at([1; 32], t0).unwrap();
        let _b = admission.admit_at([2; 32], t0).unwrap();
        assert_eq!(
            admission.admit_at([3; 32], t0).unwrap_err(),
            AdmissionRefused::Identities
        );
        drop(_b);
        // Identity 2 is idle again once its bucket has refilled: it is forgotten for 3.
        admission
            .admit_at([3; 32], t0 + Duration::from_secs(1))
            .unwrap();
    }
}
