//! One daemon per data_dir. Two daemons on one data_dir would both tail the logs, append to
//! the same segment files, overwrite each other's checkpoints and race for the spool, so
//! the daemon holds an exclusive lock on `<data_dir>/state/daemon.lock` while it runs and a
//! second one refuses to start, naming the first one's pid (Vector and Filebeat lock their
//! data directories the same way). The lock is the kernel's (`flock`): it goes with the
//! process, kill -9 included, so a crash never leaves a stale lock behind. Commands that
//! only read (`stats`, `export`) do not take it.
//!
//! The lock file also names the daemon: its pid on the first line and, on the second, an
//! instance id made at start, which the daemon's `/healthz` reports too; on the third, the
//! address its endpoint is bound to. `stats` asks there (then at the config's
//! `metrics.listen`) and compares the instance ids to tell this data_dir's daemon from
//! another that answers on the same address.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{data_dir} is in use by another training-collector daemon{holder} (it holds {path}); \
         two daemons on one data_dir would write the same segments: stop it, or give this one \
         its own data_dir"
    )]
    InUse {
        data_dir: PathBuf,
        path: PathBuf,
        /// ", pid N" when the holder wrote its pid.
        holder: String,
    },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    instance: String,
}

/// The lock file of `data_dir`.
fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("state").join("daemon.lock")
}

/// Line `n` (from 0) of `data_dir`'s lock file, when it has one that is not blank.
fn recorded_line(data_dir: &Path, n: usize) -> Option<String> {
    let text = std::fs::read_to_string(lock_path(data_dir)).ok()?;
    let line = text.lines().nth(n)?.trim();
    (!line.is_empty()).then(|| line.to_string())
}

/// The instance id the last daemon of `data_dir` wrote into its lock file (the running one,
/// if one runs); `None` when no daemon wrote one.
pub fn recorded_instance(data_dir: &Path) -> Option<String> {
    recorded_line(data_dir, 1)
}

/// The address the last daemon of `data_dir` serves `/metrics` and `/healthz` on, as it
/// recorded it: where it really listens, which the config file no longer says after a
/// refused `metrics.listen` change (or with port 0).
pub fn recorded_endpoint(data_dir: &Path) -> Option<SocketAddr> {
    recorded_line(data_dir, 2)?.parse().ok()
}

/// 128 random bits as hex; the pid and the time if the system has no random source.
fn new_instance_id() -> String {
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (now ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (whose `state` directory is created if missing), without
    /// waiting, and writes this process's pid into the lock file.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let state = data_dir.join("state");
        let path = lock_path(data_dir);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&state).map_err(io)?;
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid = text.lines().next().unwrap_or("").trim();
                return Err(LockError::InUse {
                    data_dir: data_dir.to_path_buf(),
                    holder: if pid.is_empty() {
                        String::new()
                    } else {
                        format!(", pid {pid}")
                    },
                    path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        let instance = new_instance_id();
        write!(file, "{}\n{instance}\n", std::process::id()).map_err(io)?;
        Ok(DataDirLock { file, instance })
    }

    /// Records, after the pid and the instance id, the address this daemon's endpoint is
    /// bound to, for `stats` to ask.
    pub fn record_endpoint(&mut self, addr: SocketAddr) -> std::io::Result<()> {
        // Appended in one write after the two lines `acquire` wrote: a reader never sees
        // them cut.
        self.file.write_all(format!("{addr}\n").as_bytes())
    }

    /// This daemon's instance id, as written into the lock file.
    pub fn instance(&self) -> &str {
        &self.instance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).expect("first");
        let first_instance = first.instance().to_string();
        // flock conflicts between open file descriptions, within one process too.
        let err = DataDirLock::acquire(dir.path())
            .expect_err("second")
            .to_string();
        let pid = format!("pid {}", std::process::id());
        assert!(err.contains("in use") && err.contains(&pid), "{err}");
        drop(first);
        let again = DataDirLock::acquire(dir.path()).expect("after the first is gone");
        let text = std::fs::read_to_string(dir.path().join("state/daemon.lock")).unwrap();
        assert_eq!(
            text,
            format!("{}\n{}\n", std::process::id(), again.instance())
        );
        assert_eq!(
            recorded_instance(dir.path()).as_deref(),
            Some(again.instance())
        );
        assert_ne!(again.instance(), first_instance);
        assert_eq!(recorded_endpoint(dir.path()), None);
        let mut again = again;
        let addr: SocketAddr = "127.0.0.1:9100".parse().unwrap();
        again.record_endpoint(addr).unwrap();
        assert_eq!(recorded_endpoint(dir.path()), Some(addr));
        assert_eq!(
            recorded_instance(dir.path()).as_deref(),
            Some(again.instance())
        );
        drop(again);
    }
}
