//! `medledger-ceiling`: what this machine's CPUs can do for Ed25519, the work every
//! transaction needs from every peer, and the throughput bound that follows.
//!
//! It measures signing, strict verification (what the peers use: canonical encodings, no
//! small-order keys), plain verification, and batch verification (ed25519-dalek `verify_batch`,
//! one multiscalar multiplication per batch) on one thread and on all cores at once, over
//! messages the size of a signed transaction with distinct keys. The verification-bound limit
//! for n peers on this machine is the all-cores rate divided by n: each peer must check each
//! transaction's signature at least once.
//!
//! ```sh
//! medledger-ceiling --seconds 3 --peers 4,7,10 --json-out results.jsonl
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::RngCore;
use serde_json::json;

#[derive(Parser)]
#[command(name = "medledger-ceiling", about = "Ed25519 rates on this machine")]
struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Bytes per message (a signed grant transaction with its certificate is about 700).
    #[arg(long, default_value_t = 700)]
    message_bytes: usize,
    /// Peer counts to derive the verification-bound limit for.
    #[arg(long, value_delimiter = ',', default_value = "4,7,10")]
    peers: Vec<usize>,
    /// Signatures per batch for batch verification.
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    batch: Vec<usize>,
    /// Append the results as one JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

struct Corpus {
    messages: Vec<Vec<u8>>,
    signatures: Vec<Signature>,
    keys: Vec<VerifyingKey>,
    signing: Vec<SigningKey>,
}

fn corpus(count: usize, bytes: usize) -> Corpus {
    let mut rng = rand::rngs::OsRng;
    let mut c = Corpus {
        messages: Vec::new(),
        signatures: Vec::new(),
        keys: Vec::new(),
        signing: Vec::new(),
    };
    for _ in 0..count {
        let key = SigningKey::generate(&mut rng);
        let mut m = vec![0u8; bytes];
        rng.fill_bytes(&mut m);
        c.signatures.push(key.sign(&m));
        c.keys.push(key.verifying_key());
        c.messages.push(m);
        c.signing.push(key);
    }
    c
}

/// Operations per second of `work(i)` (which does `per_call` operations), on `threads` threads.
fn rate(threads: usize, seconds: f64, per_call: usize, work: &(dyn Fn(usize) + Sync)) -> f64 {
    let deadline = Duration::from_secs_f64(seconds);
    let counts: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let start = Instant::now();
                    let mut calls = 0usize;
                    while start.elapsed() < deadline {
                        for _ in 0..8 {
                            work(t * 7919 + calls);
                            calls += 1;
                        }
                    }
                    (calls * per_call) as f64 / start.elapsed().as_secs_f64()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker") as usize)
            .collect()
    });
    counts.iter().sum::<usize>() as f64
}

fn main() {
    let args = Args::parse();
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    let c = corpus(1024, args.message_bytes);
    let n = c.messages.len();
    let mut results = serde_json::Map::new();
    // Runs `work` (doing `per_call` operations) on 1 thread and on all cores, prints both
    // rates, keeps them for the JSON line, and returns the all-cores rate.
    let mut measure = |name: &str, per_call: usize, work: &(dyn Fn(usize) + Sync)| {
        let one = rate(1, args.seconds, per_call, work);
        let all = rate(cores, args.seconds, per_call, work);
        println!("{name:<28} {one:>10.0}/s on 1 thread {all:>10.0}/s on {cores} threads");
        results.insert(name.into(), json!({"one_thread": one, "all_cores": all}));
        all
    };
    measure("sign", 1, &|i| {
        std::hint::black_box(c.signing[i % n].sign(&c.messages[i % n]));
    });
    let strict_all = measure("verify_strict (as the peers)", 1, &|i| {
        let i = i % n;
        c.keys[i]
            .verify_strict(&c.messages[i], &c.signatures[i])
            .expect("valid");
    });
    measure("verify", 1, &|i| {
        use ed25519_dalek::Verifier;
        let i = i % n;
        c.keys[i]
            .verify(&c.messages[i], &c.signatures[i])
            .expect("valid");
    });
    let mut best_batch = 0f64;
    for &b in &args.batch {
        let b = b.min(n);
        let all = measure(&format!("verify_batch of {b}"), b, &|i| {
            let start = (i * b) % (n - b + 1);
            let messages: Vec<&[u8]> = c.messages[start..start + b]
                .iter()
                .map(Vec::as_slice)
                .collect();
            ed25519_dalek::verify_batch(
                &messages,
                &c.signatures[start..start + b],
                &c.keys[start..start + b],
            )
            .expect("valid batch");
        });
        best_batch = best_batch.max(all);
    }
    println!();
    println!("verification-bound limit (each peer checks each transaction once, {cores} cores):");
    let mut limits = serde_json::Map::new();
    for &p in &args.peers {
        println!(
            "  {p:>2} peers: {:>8.0} tx/s one at a time, {:>8.0} tx/s batched",
            strict_all / p as f64,
            best_batch / p as f64
        );
        limits.insert(
            p.to_string(),
            json!({"single": strict_all / p as f64, "batched": best_batch / p as f64}),
        );
    }
    if let Some(path) = &args.json_out {
        let out = json!({
            "label": "ceiling",
            "cores": cores,
            "message_bytes": args.message_bytes,
            "rates": results,
            "limits": limits,
        });
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("opening --json-out");
        writeln!(f, "{out}").expect("writing --json-out");
    }
}
