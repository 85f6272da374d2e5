//! `medledger network up` in a temporary directory, driven through the `medledger` binary as
//! a user drives it (the network's directory, CA, first peer and gateway given to every
//! command).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::{binary, free_ports};

/// A network started by `medledger network up --detach` in a temporary directory, stopped
/// (`network down`) when dropped.
pub struct LocalNetwork {
    pub dir: tempfile::TempDir,
}

impl LocalNetwork {
    /// A network directory with nothing in it yet (`network up` comes next).
    pub fn empty() -> LocalNetwork {
        LocalNetwork {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `medledger network up --detach` on free loopback ports, with `env` set for it and
    /// the processes it starts.
    pub fn up_with(env: &[(&str, &str)]) -> LocalNetwork {
        let net = LocalNetwork::empty();
        let base = free_ports(6);
        let up_args = [
            "network".to_string(),
            "up".into(),
            "--detach".into(),
            "--ca-listen".into(),
            format!("127.0.0.1:{base}"),
            "--peer-port".into(),
            (base + 1).to_string(),
            "--gateway-listen".into(),
            format!("127.0.0.1:{}", base + 5),
        ];
        let up_args: Vec<&str> = up_args.iter().map(String::as_str).collect();
        let up = net.run_with(None, &up_args, env);
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        net
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn wallet(&self, name: &str) -> PathBuf {
        self.path().join("wallets").join(name)
    }

    /// `medledger [--wallet W] args` with this network's settings.
    pub fn run(&self, wallet: Option<&str>, args: &[&str]) -> Output {
        self.run_with(wallet, args, &[])
    }

    /// As [`LocalNetwork::run`], with `env` set for the command and what it starts.
    pub fn run_with(&self, wallet: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Output {
        let layout: Value = serde_json::from_slice(
            &std::fs::read(self.path().join("network.json")).unwrap_or_default(),
        )
        .unwrap_or(Value::Null);
        let mut command = Command::new(binary("medledger"));
        command
            .env("MEDLEDGER_NETWORK_DIR", self.path())
            .env("HOME", self.path())
            .env_remove("MEDLEDGER_WALLET");
        if let Some(ca) = layout["ca_listen"].as_str() {
            let port = ca.rsplit(':').next().unwrap_or_default();
            command.arg("--ca").arg(format!("https://localhost:{port}"));
        }
        if let Some(peer) = layout["peers"][0].as_str() {
            command.arg("--peer").arg(peer);
        }
        if let Some(gateway) = layout["gateway_listen"].as_str() {
            command.arg("--gateway").arg(gateway);
        }
        if let Some(w) = wallet {
            command.arg("--wallet").arg(self.wallet(w));
        }
        command.envs(env.iter().copied());
        command.args(args).output().expect("medledger runs")
    }

    /// Registers `name` with `role` as the network's admin and enrolls it, as a person
    /// does on their own machine (`medledger enroll` with the CA root and the genesis), into
    /// `wallets/<name>`.
    pub fn enroll_member(&self, name: &str, role: &str) {
        let registered = self.json(
            Some("admin"),
            &["admin", "register", "--name", name, "--role", role],
        );
        let wallet = self.wallet(name);
        self.ok(
            None,
            &[
                "enroll",
                "--name",
                name,
                "--secret",
                registered["secret"].as_str().unwrap(),
                "--ca-root",
                self.path().join("ca/ca-root.pem").to_str().unwrap(),
                "--genesis",
                self.path().join("genesis.pb").to_str().unwrap(),
                "--wallet",
                wallet.to_str().unwrap(),
            ],
        );
    }

    pub fn ok(&self, wallet: Option<&str>, args: &[&str]) -> String {
        let out = self.run(wallet, args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "medledger {args:?} failed:\n{text}");
        text
    }

    /// `medledger --json args`, which must succeed: what it printed on stdout (what it says
    /// on stderr, such as a renewal, is not part of the answer).
    pub fn json(&self, wallet: Option<&str>, args: &[&str]) -> Value {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let out = self.run(wallet, &with_json);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "medledger {args:?} failed:\n{stdout}{stderr}"
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"))
    }

    /// `ledger verify`, expected to fail: its report.
    pub fn verify_fails(&self, args: &[&str]) -> String {
        let mut all = vec!["ledger", "verify"];
        all.extend_from_slice(args);
        let out = self.run(None, &all);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !out.status.success(),
            "verify passed but must fail:\n{text}"
        );
        text
    }
}

impl Drop for LocalNetwork {
    fn drop(&mut self) {
        let _ = self.run(None, &["network", "down"]);
    }
}

impl LocalNetwork {
    /// `medledger-load` on this network in the background (8 clients, 3 s of warm-up) for
    /// `seconds`, its results in `load.jsonl` and its output in `load.log`.
    pub fn start_load(&self, label: &str, seconds: u64) -> std::process::Child {
        let log = std::fs::File::create(self.path().join("load.log")).unwrap();
        Command::new(binary("medledger-load"))
            .args(["--network-dir", self.path().to_str().unwrap()])
            .args(["--clients", "8", "--identities", "8", "--warmup", "3"])
            .args(["--duration", &seconds.to_string(), "--label", label])
            .args([
                "--json-out",
                self.path().join("load.jsonl").to_str().unwrap(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("medledger-load runs")
    }

    /// Waits for the load started by [`LocalNetwork::start_load`] and checks its verdict:
    /// it succeeded, committed something, left nothing unsealed, and every operation it
    /// finished succeeded (`during` names what the load ran across, for the failure).
    pub fn load_lost_nothing(&self, mut load: std::process::Child, during: &str) {
        let finished = load.wait().unwrap();
        let report = std::fs::read_to_string(self.path().join("load.log")).unwrap_or_default();
        assert!(finished.success(), "{report}");
        let line: Value = serde_json::from_str(
            std::fs::read_to_string(self.path().join("load.jsonl"))
                .unwrap()
                .lines()
                .last()
                .unwrap(),
        )
        .unwrap();
        assert!(line["committed"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(line["unsealed_after_drain"], 0, "{report}");
        let total = |field: &str| -> u64 {
            line[field]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum()
        };
        assert_eq!(
            total("statuses"),
            total("done_by_op"),
            "operations failed {during}: {report}"
        );
    }
}
