//! The IMAP command path: framing, parsing, the state machine and each command's
//! dispatch, against a real SQLite store, through an in-memory pipe
//! (`cpmstore_server::imap::harness`).
//!
//! Input: the first byte picks how the session starts (`Opening::from_byte`: not
//! authenticated, authenticated, INBOX selected or examined; CONDSTORE / QRESYNC
//! enabled), so the fuzzer need not find LOGIN first; the rest is what the client sends
//! (`%UV` stands for INBOX's UIDVALIDITY). The client then closes its side and reads
//! everything the server says.
//!
//! Fails when: the session has not ended `HANG` after the client closed; the server
//! wrote more than `max_output`; the transcript breaks `check_transcript` (lines end in
//! CRLF, every response decodes with imap-codec, tagged statuses answer tags the
//! client sent, nothing after BYE); the server panics; or one allocation asks for more
//! than `MALLOC_LIMIT`.
//!
//! Built as docs/fuzzing.md says (sancov only in the crates `Cargo.toml` lists) and run
//! on one CPU (`taskset`): the runtime's thread does not sleep while SQLite works
//! (`busy`), so the two take turns on that CPU.
//!
//! One runtime and one store serve every input: the store lives in a directory of its
//! own under /dev/shm (or the temporary directory). Every `RESTORE_EVERY` inputs the
//! subscriber is put back as it was if anything changed it, so the store does not grow
//! over millions of runs; in between, inputs see what the previous ones left (a
//! selected session is then told the mailbox changed, as if by another session), which
//! keeps runs cheap. To reproduce a finding from the fixture alone, run it with
//! `CPMSTORE_FUZZ_RESTORE_EVERY=1`.
#![no_main]

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use cpmstore_server::config::LimitsConfig;
use cpmstore_server::imap::harness::{Harness, Opening, check_transcript_except};
use libfuzzer_sys::fuzz_target;

/// Longest an input's session may take to end once the client has closed (wall
/// clock); the environment variable `CPMSTORE_FUZZ_HANG_SECS` overrides it. On a
/// machine whose other work starves the fuzzer's CPU, 3 s can pass while a correct
/// session waits for the CPU: such a "hang" replays in milliseconds alone.
const HANG: Duration = Duration::from_secs(3);

/// Inputs between restores of the subscriber (when something changed it); the
/// environment variable `CPMSTORE_FUZZ_RESTORE_EVERY` overrides it.
const RESTORE_EVERY: u64 = 100;

/// Restores between comparisons of the store with the fixture (changes nobody
/// published, such as subscriptions).
const THOROUGH_EVERY: u64 = 10;

/// Known findings, reported and awaiting a fix in code this target does not own: the
/// responses they produce are not decoded, so that a run goes on past them. Remove an
/// entry once its fix is in.
///
/// None now: finding 1 of docs/fuzzing.md (`a FETCH 1 ()` answered `* 1 FETCH ()`) is
/// fixed — fetch.rs answers BAD.
fn known_finding(_response: &[u8]) -> bool {
    false
}

/// Largest single allocation an input may make (as `-malloc_limit_mb=512` asks, which
/// libFuzzer enforces only when a sanitizer gives it malloc hooks; with `-s none` only
/// `-rss_limit_mb` would remain).
const MALLOC_LIMIT: usize = 512 << 20;

/// The system allocator, except that a larger request than [`MALLOC_LIMIT`] aborts the
/// input (libFuzzer reports the abort as a crash and saves the input).
struct Limited;

// SAFETY: every call is passed on unchanged to the system allocator, which upholds
// `GlobalAlloc`'s contract; the only addition is a size check before it.
unsafe impl std::alloc::GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        check_size(layout.size());
        // SAFETY: the caller's guarantees for `alloc` are passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        check_size(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        check_size(new);
        // SAFETY: as for `dealloc`; `new` is the caller's.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

fn check_size(size: usize) {
    if size > MALLOC_LIMIT {
        // No formatting, no allocation: the allocator must not call itself.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"==imap_session: a single allocation larger than MALLOC_LIMIT (512 MiB)\n",
        );
        std::process::abort();
    }
}

#[global_allocator]
static ALLOCATOR: Limited = Limited;

struct World {
    runtime: tokio::runtime::Runtime,
    harness: Harness,
    runs: u64,
    restore_every: u64,
    park: bool,
    hang: Duration,
}

/// A directory for this process's store; those of processes that are gone are removed.
fn store_dir() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    const PREFIX: &str = "cpmstore-fuzz-imap-";
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(PREFIX)
                && !PathBuf::from(format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(format!("{PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory for the store");
    dir
}

fn world() -> &'static Mutex<World> {
    static WORLD: OnceLock<Mutex<World>> = OnceLock::new();
    WORLD.get_or_init(|| {
        // No I/O driver: the pipe and SQLite need none, and parking on a condition
        // variable instead of epoll makes each wake-up from SQLite's worker cheaper.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let url = format!("sqlite://{}", store_dir().join("store.db").display());
        let harness = runtime.block_on(async {
            let store = cpmstore_storage::open(&url, &Default::default())
                .await
                .expect("a store");
            Harness::new(store, &LimitsConfig::default())
                .await
                .expect("a harness")
        });
        let restore_every = std::env::var("CPMSTORE_FUZZ_RESTORE_EVERY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(RESTORE_EVERY)
            .max(1);
        let park = std::env::var_os("CPMSTORE_FUZZ_PARK").is_some_and(|v| v == "1");
        let hang = std::env::var("CPMSTORE_FUZZ_HANG_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(HANG, Duration::from_secs);
        Mutex::new(World {
            runtime,
            harness,
            runs: 0,
            restore_every,
            park,
            hang,
        })
    })
}

/// Polls `fut` to its end without letting the runtime's thread sleep: while it is
/// pending, the thread gives up the CPU (`sched_yield`) and the future asks to be
/// polled again at once. A session waits mostly on SQLite's worker threads (sqlx runs
/// each connection on a thread of its own), a few microseconds per statement; parking
/// the runtime's thread on a futex for each of those waits, and being woken by the
/// worker, cost more than the work itself. Nothing else changes: a spurious poll is
/// allowed of every future, and the runtime still runs its spawned tasks and fires
/// its timers (`HANG` too) between polls, since a woken runtime checks its timers
/// without sleeping. `CPMSTORE_FUZZ_PARK=1` parks as before, to compare.
async fn busy<F: Future>(fut: F, park: bool) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        let poll = fut.as_mut().poll(cx);
        if poll.is_pending() && !park {
            std::thread::yield_now();
            cx.waker().wake_by_ref();
        }
        poll
    })
    .await
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let mut world = world().lock().expect("the world");
    let World {
        runtime,
        harness,
        runs,
        restore_every,
        park,
        hang,
    } = &mut *world;
    *runs += 1;
    let restore = *runs % *restore_every == 0;
    let thorough = *runs % (*restore_every * THOROUGH_EVERY) == 0;
    runtime.block_on(busy(
        async {
            let input = harness.with_uidvalidity(input);
            // Each input byte may at most ask for the whole mailbox (bounded by the quota)
            // once more; a server that writes without end fails here or at HANG.
            let max_output = (1 << 20) + 16 * 1024 * input.len();
            let out = harness
                .converse(Opening::from_byte(first), &input, max_output, *hang)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if let Err(e) = check_transcript_except(&input, &out, &known_finding) {
                panic!(
                    "{e}\n--- the server wrote:\n{}",
                    String::from_utf8_lossy(&out[..out.len().min(64 * 1024)])
                );
            }
            if restore {
                harness.restore(thorough).await.expect("the store put back");
            }
        },
        *park,
    ));
});
