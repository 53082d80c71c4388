//! Standard output that a closed pipe does not crash: `deckhand jobs | head -1`.
//!
//! `println!` panics when stdout is gone (the Rust runtime ignores SIGPIPE, so a write to a
//! closed pipe fails with `BrokenPipe`). Here the first failed write closes our side too:
//! later lines are dropped and the command carries on to its normal end and exit code (a
//! `deckhand run` still follows its job to the end; `deckhand serve` keeps serving).
//! SIGPIPE stays ignored, so no socket or pipe write elsewhere can kill the process.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicU8, Ordering};

const OPEN: u8 = 0;
/// The reader went away (`BrokenPipe`): quiet, as a filter such as `head` expects.
const CLOSED: u8 = 1;
/// Any other write error (a full disk): reported once, and the command exits non-zero.
const FAILED: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(OPEN);

/// Print one line (the `format_args!` of `println!`) unless stdout is already closed.
pub fn line(args: std::fmt::Arguments<'_>) {
    if STATE.load(Ordering::Relaxed) != OPEN {
        return;
    }
    let mut out = std::io::stdout().lock();
    let r = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = r {
        if e.kind() == ErrorKind::BrokenPipe {
            STATE.store(CLOSED, Ordering::Relaxed);
        } else if STATE.swap(FAILED, Ordering::Relaxed) == OPEN {
            eprintln!("deckhand: cannot write to standard output: {e}");
        }
    }
}

/// Whether a write failed for a reason other than the reader leaving.
pub fn failed() -> bool {
    STATE.load(Ordering::Relaxed) == FAILED
}
