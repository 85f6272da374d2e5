//! Each peer's disk: an ext4 file system of [`DISK_BYTES`] on a loop device over a sparse
//! file in `/dev/shm` (memory: no host disk is involved, and nothing is left on one),
//! mounted as the peer's data directory. It can be filled to the last block (the disk-full
//! fault) and slowed down by the kernel's block-I/O throttling on that loop device (the
//! slow-disk fault: cgroup v1 `blkio.throttle.*`, which limits the reads, writes and their
//! syncs the peer's own threads make, and, set on the root cgroup for that device alone,
//! the write-back the kernel's own threads do for it: cgroup v1 charges buffered writes to
//! the root, and a peer whose reads are all in the page cache did no I/O of its own).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The size of each peer's disk.
pub const DISK_BYTES: u64 = 1 << 30;

/// The cgroup v1 block-I/O hierarchy the slow-disk fault uses.
const BLKIO: &str = "/sys/fs/cgroup/blkio";

/// One peer's disk, mounted; unmounted and its memory freed on drop.
pub struct Disk {
    pub mount: PathBuf,
    image: PathBuf,
    /// The loop device's `MAJOR:MINOR`.
    device: String,
    /// The cgroup throttling the peer, while the disk is slowed.
    cgroup: Option<PathBuf>,
    /// The root cgroup's bytes of I/O on this device when the throttle began.
    root_before: u64,
}

/// The limit files of cgroup v1 block-I/O throttling.
const LIMITS: [&str; 4] = [
    "blkio.throttle.write_bps_device",
    "blkio.throttle.read_bps_device",
    "blkio.throttle.write_iops_device",
    "blkio.throttle.read_iops_device",
];

/// The bytes of I/O `cgroup` did on `device` (`MAJOR:MINOR`; `None`: on every device), as
/// its `blkio.throttle.io_service_bytes` counts them.
fn served_bytes(cgroup: &Path, device: Option<&str>) -> u64 {
    let prefix = device.map_or_else(|| "Total ".to_string(), |d| format!("{d} Total "));
    std::fs::read_to_string(cgroup.join("blkio.throttle.io_service_bytes"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).and_then(|t| t.trim().parse().ok()))
        .unwrap_or(0)
}

fn run(command: &mut std::process::Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Whether this kernel offers the block-I/O throttling the slow-disk fault needs, and lets
/// us use it (a cgroup can be made; in a container the hierarchy may be read-only).
pub fn can_slow() -> bool {
    let probe = Path::new(BLKIO).join(format!("mlf-probe-{}", std::process::id()));
    let made = std::fs::create_dir(&probe).is_ok() && probe.join("cgroup.procs").exists();
    let _ = std::fs::remove_dir(&probe);
    made
}

/// Removes what a run stopped by kill -9 left: disk images no loop device holds, empty
/// cgroups of the slow-disk fault, and its limits on loop devices in the root cgroup (a
/// later disk given the same device number would be slow from the start). Never run two
/// harnesses at once: this lifts the other's throttle too.
pub fn sweep_leftovers() {
    for file in LIMITS {
        let path = Path::new(BLKIO).join(file);
        for line in std::fs::read_to_string(&path).unwrap_or_default().lines() {
            if let Some(device) = line
                .split_whitespace()
                .next()
                .filter(|d| d.starts_with("7:"))
            {
                let _ = std::fs::write(&path, format!("{device} 0\n"));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/dev/shm") {
        for path in entries.flatten().map(|e| e.path()) {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if !name.is_some_and(|n| n.starts_with("mlf") && n.ends_with(".img")) {
                continue;
            }
            let held = std::process::Command::new("losetup")
                .arg("-j")
                .arg(&path)
                .output()
                .is_ok_and(|o| !o.stdout.is_empty());
            if !held {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(BLKIO) {
        for path in entries.flatten().map(|e| e.path()) {
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("mlf"))
            {
                // Fails while a process is still in it: then it is not left over.
                let _ = std::fs::remove_dir(&path);
            }
        }
    }
}

impl Disk {
    /// Makes the disk `name` (its image `/dev/shm/<name>.img`, replaced if a stopped run
    /// left one) and mounts it on `mount`.
    ///
    /// # Errors
    /// The image, file system, loop device or mount could not be made.
    pub fn create(mount: &Path, name: &str) -> anyhow::Result<Disk> {
        std::fs::create_dir_all(mount)?;
        let image = PathBuf::from(format!("/dev/shm/{name}.img"));
        let _ = std::fs::remove_file(&image);
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(DISK_BYTES))
            .with_context(|| format!("creating {}", image.display()))?;
        let mut disk = Disk {
            mount: mount.to_path_buf(),
            image,
            device: String::new(),
            cgroup: None,
            root_before: 0,
        };
        // No blocks reserved for root: the peer runs as root and would otherwise see more
        // space than the fill leaves.
        run(std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&disk.image))?;
        // discard: space freed in the file system (a disk-full's filler) is freed in memory.
        run(std::process::Command::new("mount")
            .args(["-o", "loop,discard"])
            .arg(&disk.image)
            .arg(mount))?;
        let loop_device = run(std::process::Command::new("losetup")
            .arg("-j")
            .arg(&disk.image))?;
        let loop_name = loop_device
            .split(':')
            .next()
            .and_then(|d| d.rsplit('/').next())
            .context("losetup names no loop device")?;
        disk.device = std::fs::read_to_string(format!("/sys/block/{loop_name}/dev"))
            .with_context(|| format!("the device number of {loop_name}"))?
            .trim()
            .to_string();
        Ok(disk)
    }

    /// Throttles the process `pid` on this disk to `bytes_per_s` and `iops` each way (its
    /// every thread, and the threads it starts).
    ///
    /// # Errors
    /// The cgroup could not be made or the process moved into it.
    pub fn slow(&mut self, pid: u32, bytes_per_s: u64, iops: u64) -> anyhow::Result<()> {
        let _ = self.unslow();
        let name = self
            .image
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cgroup = Path::new(BLKIO).join(name);
        std::fs::create_dir_all(&cgroup)
            .with_context(|| format!("making the cgroup {}", cgroup.display()))?;
        self.cgroup = Some(cgroup.clone());
        self.root_before = served_bytes(Path::new(BLKIO), Some(&self.device));
        for (file, limit) in LIMITS
            .into_iter()
            .zip([bytes_per_s, bytes_per_s, iops, iops])
        {
            for group in [cgroup.as_path(), Path::new(BLKIO)] {
                std::fs::write(group.join(file), format!("{} {limit}\n", self.device))
                    .with_context(|| format!("writing {}", group.join(file).display()))?;
            }
        }
        std::fs::write(cgroup.join("cgroup.procs"), format!("{pid}\n"))
            .context("moving the peer into its cgroup")?;
        Ok(())
    }

    /// Ends the throttling: every process of the cgroup back to the root, the cgroup gone.
    /// Returns the bytes of block I/O that went through the throttle, if it was on.
    pub fn unslow(&mut self) -> Option<u64> {
        let cgroup = self.cgroup.take()?;
        // Limits off first, so that I/O still queued is not held back after the heal.
        for file in LIMITS {
            for group in [cgroup.as_path(), Path::new(BLKIO)] {
                let _ = std::fs::write(group.join(file), format!("{} 0\n", self.device));
            }
        }
        // The counters count an I/O once it leaves the throttle: a peer slowed to a
        // standstill (its first writes after a restart larger than the throttle passes while
        // the fault lasts) counts nothing until the limits are off. Its held I/O leaves
        // then, so wait for it a little before calling the throttle idle.
        let count = || {
            served_bytes(&cgroup, None).saturating_add(
                served_bytes(Path::new(BLKIO), Some(&self.device)).saturating_sub(self.root_before),
            )
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut served = count();
        while served == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            served = count();
        }
        let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            let _ = std::fs::write(Path::new(BLKIO).join("cgroup.procs"), format!("{pid}\n"));
        }
        let _ = std::fs::remove_dir(&cgroup);
        Some(served)
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = self.unslow();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .status();
        // The loop device detaches itself once unmounted (mount -o loop); its memory is
        // freed when the image is gone too.
        let _ = std::fs::remove_file(&self.image);
    }
}
