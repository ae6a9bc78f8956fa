//! The event ring, read as it fills: the producer side of the pipeline. It hands each
//! record's bytes on and knows nothing of what they mean (`events` decodes them, the
//! reactions judge them).
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

/// Read records from `ring` as they come, calling `on_record` with each one's bytes, and
/// `alive` at least every `tick` (also while idle). Returns when `alive` says to stop
/// (`false`), or with the error that ended reading.
pub async fn read(
    ring: RingBuf<MapData>,
    tick: Duration,
    mut alive: impl FnMut() -> bool,
    mut on_record: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    // SAFETY: the RingBuf owns its map fd, and the AsyncFd owns the RingBuf, so the fd
    // is neither closed nor replaced while registered.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?;
    loop {
        if !alive() {
            return Ok(());
        }
        let mut guard = match tokio::time::timeout(tick, fd.readable_mut()).await {
            // Nothing to read: idle, and alive.
            Err(_) => continue,
            Ok(ready) => ready?,
        };
        // Edge-triggered: drain everything before clearing readiness.
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            on_record(&item);
        }
        guard.clear_ready();
    }
}
