//! The network the peers run on: each peer in its own Linux network namespace with one
//! interface (`eth0`, 10.231.R.(i+1)/24), all joined by veth pairs to a bridge in the host's
//! namespace, which holds 10.231.R.254 (the CA, the clients and the checker run there). Faults
//! are nftables rules in a peer's namespace (table `inet medledger_faults`): drop what comes
//! from or goes to some addresses, or a share of everything from the other peers. The
//! kernel needs namespaces and nftables; no netem. Needs root (CAP_NET_ADMIN).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// The nftables table each peer's namespace holds its fault rules in.
const TABLE: &str = "medledger_faults";

/// A bridge, `n` namespaces and their veth pairs, removed on drop.
pub struct Fabric {
    /// This run's number (0–199): the third byte of the subnet and part of every name.
    pub run: u8,
    pub n: usize,
}

/// Runs `program args…`; fails with its standard error when it fails.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program} (install iproute2 and nftables)"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

impl Fabric {
    /// Builds the bridge and `n` peer namespaces for a free run number near `hint`.
    ///
    /// # Errors
    /// Not root, no `ip` or `nft`, or the kernel refused a step; what was built is removed.
    pub fn create(hint: u32, n: usize) -> anyhow::Result<Fabric> {
        if !rustix::process::geteuid().is_root() {
            bail!("the fault harness needs root: it makes network namespaces and nftables rules");
        }
        let run = (0..200u32)
            .map(|k| ((hint + k) % 200) as u8)
            .find(|r| !Path::new(&format!("/sys/class/net/mlf{r}br")).exists())
            .context("no free run number: remove stale bridges (ip link del mlfNbr)")?;
        let fabric = Fabric { run, n };
        fabric.build().inspect_err(|_| fabric.destroy())?;
        Ok(fabric)
    }

    fn bridge(&self) -> String {
        format!("mlf{}br", self.run)
    }

    /// The namespace of peer `i`.
    pub fn namespace(&self, i: usize) -> String {
        format!("mlf{}-peer{i}", self.run)
    }

    /// Peer `i`'s address (IPv4, no port).
    pub fn address(&self, i: usize) -> String {
        format!("10.231.{}.{}", self.run, i + 1)
    }

    /// The host namespace's address on the bridge: where clients' connections come from.
    pub fn host_address(&self) -> String {
        format!("10.231.{}.254", self.run)
    }

    fn build(&self) -> anyhow::Result<()> {
        let bridge = self.bridge();
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", self.host_address()),
                "dev",
                &bridge,
            ],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for i in 0..self.n {
            let ns = self.namespace(i);
            let veth = format!("mlf{}v{i}", self.run);
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
            let address = format!("{}/24", self.address(i));
            run("ip", &["-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            self.nft(i, &["add", "table", "inet", TABLE])?;
            for (chain, hook) in [("input", "input"), ("output", "output")] {
                let spec = format!("{{ type filter hook {hook} priority 0; policy accept; }}");
                self.nft(i, &["add", "chain", "inet", TABLE, chain, &spec])?;
            }
        }
        Ok(())
    }

    fn nft(&self, i: usize, args: &[&str]) -> anyhow::Result<()> {
        let ns = self.namespace(i);
        let mut full = vec!["netns", "exec", ns.as_str(), "nft"];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `program` to be run inside peer `i`'s namespace (`ip netns exec`, which execs it:
    /// the child's pid is the program's).
    pub fn command_in(&self, i: usize, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(i)])
            .arg(program);
        command
    }

    /// Peer `i` drops every packet from `from` and to `to` (addresses).
    ///
    /// # Errors
    /// nft failed.
    pub fn block(&self, i: usize, from: &[String], to: &[String]) -> anyhow::Result<()> {
        if !from.is_empty() {
            let set = format!("{{ {} }}", from.join(", "));
            self.nft(
                i,
                &[
                    "add", "rule", "inet", TABLE, "input", "ip", "saddr", &set, "drop",
                ],
            )?;
        }
        if !to.is_empty() {
            let set = format!("{{ {} }}", to.join(", "));
            self.nft(
                i,
                &[
                    "add", "rule", "inet", TABLE, "output", "ip", "daddr", &set, "drop",
                ],
            )?;
        }
        Ok(())
    }

    /// Peer `i` drops `percent`% of the packets it receives from the other peers, at random.
    ///
    /// # Errors
    /// nft failed.
    pub fn drop_share(&self, i: usize, percent: u32) -> anyhow::Result<()> {
        let peers: Vec<String> = (0..self.n)
            .filter(|&j| j != i)
            .map(|j| self.address(j))
            .collect();
        let set = format!("{{ {} }}", peers.join(", "));
        let share = format!("{percent}");
        self.nft(
            i,
            &[
                "add", "rule", "inet", TABLE, "input", "ip", "saddr", &set, "numgen", "random",
                "mod", "100", "<", &share, "drop",
            ],
        )
    }

    /// Removes every fault rule from every namespace.
    ///
    /// # Errors
    /// nft failed.
    pub fn heal(&self) -> anyhow::Result<()> {
        for i in 0..self.n {
            for chain in ["input", "output"] {
                self.nft(i, &["flush", "chain", "inet", TABLE, chain])?;
            }
        }
        Ok(())
    }

    /// Removes the namespaces (and with them their veth ends and rules) and the bridge.
    pub fn destroy(&self) {
        for i in 0..self.n {
            let _ = run("ip", &["netns", "del", &self.namespace(i)]);
        }
        let _ = run("ip", &["link", "del", &self.bridge()]);
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        self.destroy();
    }
}
