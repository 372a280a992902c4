//! How many files the daemon may hold open. At start the soft `RLIMIT_NOFILE` is raised to
//! the hard one (the usual soft default of 1,024 dates from `select(2)`, which nothing here
//! uses; systemd's hard default is far higher), and the tailer's share of the limit is what
//! is left after a reserve for the daemon's own files: segments, the spool and state
//! directories, the file watcher, the metrics socket. Without that reserve, a glob matching
//! more files than the limit took every descriptor and the daemon could no longer write.

/// Raises the soft open-file limit to the hard limit; logs the change. Failure is logged and
/// harmless: the budget is then taken from the limit as it is.
pub fn raise() {
    let Some(mut lim) = get() else { return };
    // An unlimited hard limit still stops at the kernel's `nr_open` (2^20 by default).
    let target = lim.rlim_max.min(1 << 20);
    if lim.rlim_cur >= target {
        return;
    }
    let before = lim.rlim_cur;
    lim.rlim_cur = target;
    // SAFETY: `lim` is a valid rlimit struct; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        tracing::debug!(from = before, to = lim.rlim_cur, "open-file limit raised");
    } else {
        tracing::warn!(
            limit = before,
            error = %std::io::Error::last_os_error(),
            "cannot raise the open-file limit; input.max_open_files is sized from it (raise it with LimitNOFILE= in the unit file or `ulimit -n`)"
        );
    }
}

/// The tailer's share of the current soft limit (see [`budget_for`]).
pub fn input_budget() -> usize {
    get().map_or(1024, |lim| budget_for(lim.rlim_cur))
}

/// Input files allowed under a soft limit of `soft` descriptors: a quarter of the limit is
/// kept for the daemon's own files, at least 32 and at most 256.
pub fn budget_for(soft: u64) -> usize {
    let reserve = (soft / 4).clamp(32, 256);
    usize::try_from(soft.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX)
}

fn get() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        Some(lim)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::budget_for;

    #[test]
    fn the_reserve_is_a_quarter_between_32_and_256() {
        assert_eq!(budget_for(64), 32);
        assert_eq!(budget_for(256), 192);
        assert_eq!(budget_for(1024), 768);
        assert_eq!(budget_for(524_288), 524_032);
        assert_eq!(budget_for(10), 1);
    }
}
