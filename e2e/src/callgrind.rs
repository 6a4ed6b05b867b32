//! Envoy's instructions per request, counted by valgrind's callgrind on Envoy's worker thread (the
//! `instructions` part of `make bench`): a count that the machine's load does not move, where
//! requests per second move by several percent between rounds.
//!
//! Envoy runs under callgrind counting nothing (`--instr-atstart=no`) until `count` switches it on
//! around the requests of one variant, then writes what each thread ran to its own file.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether valgrind (with callgrind and `callgrind_control`) is installed.
pub fn available() -> bool {
    let works = |program: &str| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    works("valgrind") && works("callgrind_control")
}

/// `envoy` under callgrind, its counts going to `dir`, one file per thread and dump.
pub fn command(envoy: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--tool=callgrind",
        "--instr-atstart=no",
        "--separate-threads=yes",
        "--error-limit=no",
    ])
    .arg(format!("--callgrind-out-file={}/cg.%p", dir.display()))
    .arg(envoy);
    cmd
}

fn control(pid: u32, args: &[&str]) {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .expect("callgrind_control (valgrind)");
    assert!(
        out.status.success(),
        "callgrind_control {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The instructions that the busiest thread of the Envoy `pid` (its one worker, with
/// `--concurrency 1`) ran while `work` ran.
pub fn count(pid: u32, dir: &Path, work: impl FnOnce()) -> u64 {
    control(pid, &["--instr=on"]);
    work();
    control(pid, &["--instr=off"]);
    control(pid, &["--dump"]);
    let dump = dump_files(dir, pid);
    let busiest = dump.iter().map(|f| instructions_in(f)).max().unwrap_or(0);
    for file in dump {
        let _ = std::fs::remove_file(file);
    }
    busiest
}

/// The files of `pid`'s last dump (`cg.<pid>.<dump>-<thread>`), one per thread.
fn dump_files(dir: &Path, pid: u32) -> Vec<PathBuf> {
    let prefix = format!("cg.{pid}.");
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let dump = name
                .strip_prefix(&prefix)?
                .split('-')
                .next()?
                .parse()
                .ok()?;
            Some((dump, path))
        })
        .collect();
    let last = files.iter().map(|(dump, _)| *dump).max().unwrap_or(0);
    files.retain(|(dump, _)| *dump == last);
    files.into_iter().map(|(_, path)| path).collect()
}

/// The instructions a callgrind file counts (its `totals:` line; a thread's file has no summary,
/// and the symbol names before need not be UTF-8).
fn instructions_in(file: &Path) -> u64 {
    String::from_utf8_lossy(&std::fs::read(file).unwrap_or_default())
        .lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
