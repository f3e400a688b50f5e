//! Spawning a task so that its panic ends only that task, and the wall clock.
//!
//! Why a module of its own: every layer above spawns tasks on its shard's runtime
//! (connections, backend readers and writers, link tasks) and each must be isolated:
//! monoio would otherwise unwind a panic through the whole shard, taking every other
//! connection of the thread with it. Bad input must never reach a panic (the decoders
//! are fuzzed); this is the backstop.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Spawns a task on this shard whose panic ends only that task: the panic is caught,
/// logged with `what`, and the shard's other connections carry on. (monoio would
/// otherwise unwind through the whole shard runtime.)
pub fn spawn_isolated<F>(what: &'static str, fut: F)
where
    F: std::future::Future<Output = ()> + 'static,
{
    monoio::spawn(Isolated { what, fut });
}

struct Isolated<F> {
    what: &'static str,
    fut: F,
}

impl<F: std::future::Future<Output = ()>> std::future::Future for Isolated<F> {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        // SAFETY: a pin projection: `fut` is never moved out of the pinned `Isolated`
        // (no method hands it out by value, and `Isolated` has no Drop impl).
        let this = unsafe { self.get_unchecked_mut() };
        let fut = unsafe { std::pin::Pin::new_unchecked(&mut this.fut) };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(p) => p,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(task = this.what, panic = %msg, "task panicked; it alone was stopped");
                std::task::Poll::Ready(())
            }
        }
    }
}

/// The bytes monoio allocates for a task spawned with `spawn_isolated` running an `F`:
/// its task cell (monoio 0.2's `task::core::Cell`: a 24-byte header, the stage — the
/// `Isolated` future and an 8-byte tag — and a 16-byte trailer), as `-Zprint-type-sizes`
/// shows it. What a test pins a long-lived task's size by (`edge::conn`).
#[cfg(test)]
pub(crate) fn task_bytes<F: std::future::Future<Output = ()>>() -> usize {
    24 + 8 + std::mem::size_of::<Isolated<F>>() + 16
}

/// Wall-clock time since the Unix epoch (JWT expiry, event timestamps).
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Lets the shard's other ready tasks run before this one continues (an `.await` on a
/// future that is already ready does not: a task that always has work would otherwise
/// keep the thread to itself).
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_panicking_task_stops_alone_and_the_shard_runs_on() {
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let done = rt.block_on(async {
            let done = std::rc::Rc::new(Cell::new(false));
            spawn_isolated("test", async { panic!("boom") });
            let d = done.clone();
            spawn_isolated("test", async move {
                monoio::time::sleep(Duration::from_millis(10)).await;
                d.set(true);
            });
            // (Printing the panic, with a backtrace, can take a while.)
            for _ in 0..500 {
                if done.get() {
                    break;
                }
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
            done.get()
        });
        assert!(done);
    }
}
