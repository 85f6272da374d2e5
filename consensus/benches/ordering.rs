//! Ordered requests per second for 4 replicas in the simulator, without signatures or I/O:
//! the cost of the protocol's own bookkeeping. Not a test; run with
//! `cargo bench -p medledger-pbft --bench ordering`.
// A host, not the deterministic crate: it may read the clock and the environment.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

#[path = "../tests/sim/mod.rs"]
mod sim;

use std::time::Instant;

use medledger_pbft::Config;

fn run(batch: usize, requests: u64) -> (f64, f64) {
    let mut config = Config::new(4);
    config.max_batch_requests = batch;
    config.checkpoint_interval = 64;
    config.watermark_window = 256;
    config.batch_timeout_ms = 1;
    config.retain_committed = 256;
    config.max_pending_requests = 1_000_000;
    let mut sim = sim::Sim::without_crypto(1, config);
    sim.faults.min_delay_ms = 1;
    sim.faults.max_delay_ms = 1;
    let started = Instant::now();
    let mut submitted = 0u64;
    let window = 16 * batch as u64;
    loop {
        // A closed loop: keep at most `window` requests outstanding (not yet executed everywhere).
        let done = sim
            .nodes
            .iter()
            .map(|n| n.executed.len() as u64)
            .min()
            .unwrap_or(0);
        if done >= requests {
            break;
        }
        while submitted < requests && submitted - done < window {
            sim.submit(Some(0));
            submitted += 1;
        }
        if sim.now.is_multiple_of(300) {
            sim.retransmit();
        }
        sim.step();
        assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(
        sim.stats.max_view, 0,
        "no view change under fault-free load"
    );
    (
        requests as f64 / seconds,
        sim.stats.messages as f64 / requests as f64,
    )
}

fn main() {
    println!("n = 4, no signatures, no I/O; each figure orders 200,000 requests on all 4 replicas");
    println!(
        "{:>10} {:>22} {:>20}",
        "batch", "ordered requests/s", "messages/request"
    );
    for batch in [16, 64, 256] {
        let (rate, messages) = run(batch, 200_000);
        println!("{batch:>10} {rate:>22.0} {messages:>20.2}");
    }
}
