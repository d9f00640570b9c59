//! Named failpoints for crash tests, compiled only with the `failpoints` feature (the tests
//! enable it; a release build has none): `SLUICE_FAILPOINT=NAME` aborts the process the first
//! time the commit path reaches `NAME`, `NAME:N` the N-th time. Unset, a check is one atomic
//! load.
//!
//! Points: `mid-encode`, `after-upload`, `manifest-put`, `after-manifest-put`,
//! `before-group-commit`, `before-markers`, `after-delta-commit`, `after-iceberg-commit`.

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);

    fn armed() -> Option<&'static (String, u64)> {
        ARMED
            .get_or_init(|| {
                let v = std::env::var("SLUICE_FAILPOINT").ok()?;
                match v.split_once(':') {
                    Some((name, n)) => Some((name.to_string(), n.parse().unwrap_or(1))),
                    None => Some((v, 1)),
                }
            })
            .as_ref()
    }

    /// Aborts the process (as a crash would: no destructors, no flush) when `name` is armed.
    pub fn hit(name: &str) {
        if let Some((armed, nth)) = armed() {
            if armed == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
                eprintln!("sluice: failpoint `{name}` reached: aborting");
                std::process::abort();
            }
        }
    }
}

#[cfg(feature = "failpoints")]
pub use armed::hit;

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
