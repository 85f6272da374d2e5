//! A clock that is wrong on purpose, for tests of real processes (debug builds only; release
//! builds never read the variable): `MEDLEDGER_FAULT_CLOCK_FILE=PATH` names a file holding a
//! signed offset in milliseconds that this peer adds to its wall clock wherever it takes
//! consensus time, timer deadlines and the clock it reports (`driver::now_ms`), read again at
//! most once a second while the peer runs. The fault harness (`medledger-faults`) skews and
//! jumps one peer's clock with it (issue 18). Certificate checks keep the true clock.

/// The variable naming the offset file.
pub const FAULT_CLOCK_FILE: &str = "MEDLEDGER_FAULT_CLOCK_FILE";

/// The offset (ms) to add to the wall clock: 0 in release builds and without the variable.
#[cfg(not(debug_assertions))]
pub fn offset_ms() -> i64 {
    0
}

/// The offset (ms) to add to the wall clock: 0 in release builds and without the variable.
#[cfg(debug_assertions)]
pub fn offset_ms() -> i64 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
    use std::time::Instant;
    static FILE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    static START: OnceLock<Instant> = OnceLock::new();
    static OFFSET: AtomicI64 = AtomicI64::new(0);
    /// When it was last read (ms since START, plus one; 0: never).
    static READ_AT: AtomicU64 = AtomicU64::new(0);
    let Some(path) = FILE
        .get_or_init(|| std::env::var_os(FAULT_CLOCK_FILE).map(Into::into))
        .as_ref()
    else {
        return 0;
    };
    let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
    let last = READ_AT.load(Ordering::Relaxed);
    if (last == 0 || now.saturating_sub(last) >= 1_000)
        && READ_AT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let offset = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok())
            .unwrap_or(0);
        OFFSET.store(offset, Ordering::Relaxed);
    }
    OFFSET.load(Ordering::Relaxed)
}
