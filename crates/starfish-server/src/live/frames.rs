//! A subscriber's buffer of frames. The bus pushes a change's frame into every
//! listener's buffer under its lock, without waking anyone; once the lock is let
//! go, it wakes the listeners whose buffer was empty, a batch at a time, yielding
//! between batches ([`wake`]). A change to 10,000 subscribers so never puts 10,000
//! tasks in the runtime's queues at once, ahead of every request that arrives
//! meanwhile: such a request waits behind a batch of stream writes, not the whole
//! fan-out. (`starfish serve` writes its streams on a runtime of their own, and
//! names it to the bus: every batch is then woken from a task on that runtime, so
//! the wakes are local to it and paced by its own turns, and the publishing
//! request's runtime wakes nothing.)

use bytes::Bytes;
use futures::task::AtomicWaker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

/// Listeners woken at once; then the waking task yields to whatever is waiting.
const WAKE_BATCH: usize = 64;
/// A subscriber's emptied buffer that holds room for more frames than this gives
/// the room back.
const SHRINK_PAST: usize = 32;

/// A buffer of at most `capacity` frames, its sending and its receiving end.
pub(crate) fn channel(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        frames: Mutex::new(Frames::default()),
        waker: AtomicWaker::new(),
        senders: AtomicUsize::new(1),
        capacity,
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

#[derive(Debug)]
struct Shared {
    frames: Mutex<Frames>,
    waker: AtomicWaker,
    /// Sending ends alive: none left, and the buffer empty, is the end.
    senders: AtomicUsize,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Frames {
    queue: VecDeque<Arc<Bytes>>,
    receiver_gone: bool,
}

impl Shared {
    fn frames(&self) -> std::sync::MutexGuard<'_, Frames> {
        self.frames.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The bus's end of a subscriber's buffer (one per place the subscriber listens
/// to).
#[derive(Debug)]
pub(crate) struct Sender {
    shared: Arc<Shared>,
}

/// A subscriber to wake, as [`Sender::push`] says: woken when this is dropped (so
/// that a wake is never lost, whatever happens to the task holding it).
#[derive(Debug)]
pub(crate) struct ToWake(Arc<Shared>);

impl Drop for ToWake {
    fn drop(&mut self) {
        self.0.waker.wake();
    }
}

impl Sender {
    /// Queues `frame` without waking the subscriber: the subscriber to wake when
    /// its buffer was empty (else a wake is on its way or it is reading); an error
    /// when its buffer is full or it is gone.
    pub(crate) fn push(&self, frame: Arc<Bytes>) -> Result<Option<ToWake>, Full> {
        let mut frames = self.shared.frames();
        if frames.receiver_gone || frames.queue.len() >= self.shared.capacity {
            return Err(Full);
        }
        let was_empty = frames.queue.is_empty();
        frames.queue.push_back(frame);
        drop(frames);
        Ok(was_empty.then(|| ToWake(self.shared.clone())))
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last one: the subscriber reads what is left, then the end.
            self.shared.waker.wake();
        }
    }
}

/// A subscriber's buffer was full, or the subscriber is gone.
#[derive(Debug)]
pub(crate) struct Full;

/// Wakes `subscribers`, from the one at `start` on (and round): a batch now, the
/// rest from a task of their own that yields between batches (outside a runtime,
/// all now). With `on`, the runtime the subscribers are written on, every batch
/// of a fan-out larger than one batch is woken from a task there. A caller varies
/// `start` so that the same subscribers are not always the last. Each is woken as
/// it is dropped: were the task dropped before its end (its runtime gone), the
/// rest are woken then.
pub(crate) fn wake(
    mut subscribers: Vec<ToWake>,
    start: usize,
    on: Option<&tokio::runtime::Handle>,
) {
    if subscribers.len() <= WAKE_BATCH {
        return;
    }
    let here = tokio::runtime::Handle::try_current().ok();
    let Some(runtime) = on.or(here.as_ref()) else {
        return;
    };
    let len = subscribers.len();
    subscribers.rotate_left(start % len);
    let later = if on.is_some() {
        subscribers
    } else {
        let later = subscribers.split_off(WAKE_BATCH);
        drop(subscribers);
        later
    };
    drop(runtime.spawn(async move {
        let mut later = later.into_iter();
        while !later.as_slice().is_empty() {
            later.by_ref().take(WAKE_BATCH).for_each(drop);
            tokio::task::yield_now().await;
        }
    }));
}

/// The subscriber's end of its buffer.
#[derive(Debug)]
pub(crate) struct Receiver {
    shared: Arc<Shared>,
}

/// Why [`Receiver::try_recv`] has no frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Empty {
    /// None yet.
    Now,
    /// None will come: every sending end is gone.
    Ended,
}

impl Receiver {
    /// The next frame; `None` once every sending end is gone and the buffer is
    /// empty.
    pub(crate) async fn recv(&mut self) -> Option<Arc<Bytes>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<Bytes>>> {
        match self.try_recv() {
            Ok(frame) => return Poll::Ready(Some(frame)),
            Err(Empty::Ended) => return Poll::Ready(None),
            Err(Empty::Now) => {}
        }
        // Registered before looking again: a push or an end after the look wakes it.
        self.shared.waker.register(cx.waker());
        match self.try_recv() {
            Ok(frame) => Poll::Ready(Some(frame)),
            Err(Empty::Ended) => Poll::Ready(None),
            Err(Empty::Now) => Poll::Pending,
        }
    }

    /// The next frame if there is one now.
    pub(crate) fn try_recv(&mut self) -> Result<Arc<Bytes>, Empty> {
        // Read before the buffer: a sender's last frame is queued before it goes.
        let ended = self.shared.senders.load(Ordering::Acquire) == 0;
        let mut frames = self.shared.frames();
        match frames.queue.pop_front() {
            Some(frame) => Ok(frame),
            None => {
                // What a burst grew is given back once it is read.
                if frames.queue.capacity() > SHRINK_PAST {
                    frames.queue.shrink_to(SHRINK_PAST / 4);
                }
                Err(if ended { Empty::Ended } else { Empty::Now })
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut frames = self.shared.frames();
        frames.receiver_gone = true;
        frames.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Arc<Bytes> {
        Arc::new(Bytes::from(vec![n]))
    }

    /// Frames come in order; the buffer refuses past its capacity; only a push
    /// into an empty buffer asks for a wake; the end comes after the last frame.
    #[tokio::test]
    async fn frames_in_order_then_the_end() {
        let (tx, mut rx) = channel(3);
        let second = tx.clone();
        assert!(tx.push(frame(1)).unwrap().is_some(), "was empty: wake");
        assert!(
            second.push(frame(2)).unwrap().is_none(),
            "not empty: no wake"
        );
        assert!(tx.push(frame(3)).unwrap().is_none());
        assert!(tx.push(frame(4)).is_err(), "full");
        drop(tx);
        assert_eq!(rx.recv().await.unwrap()[0], 1);
        assert_eq!(rx.recv().await.unwrap()[0], 2);
        assert_eq!(rx.try_recv().unwrap()[0], 3);
        assert_eq!(rx.try_recv().unwrap_err(), Empty::Now, "one sender left");
        drop(second);
        assert_eq!(rx.try_recv().unwrap_err(), Empty::Ended);
        assert!(rx.recv().await.is_none());
    }

    /// A waiting subscriber is woken by the wake of a push, and by the last
    /// sender going; a push to a subscriber gone is refused.
    #[tokio::test]
    async fn a_waiting_subscriber_is_woken() {
        let (tx, mut rx) = channel(8);
        let reader = tokio::spawn(async move {
            let first = rx.recv().await;
            let end = rx.recv().await;
            (first, end)
        });
        tokio::task::yield_now().await;
        let to_wake = tx.push(frame(7)).unwrap();
        wake(to_wake.into_iter().collect(), 0, None);
        drop(tx);
        let (first, end) = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(first.unwrap()[0], 7);
        assert!(end.is_none());
        let (tx, rx) = channel(8);
        drop(rx);
        assert!(tx.push(frame(1)).is_err());
    }

    /// Counts its wakes, and names the threads they came from.
    #[derive(Default)]
    struct Count(AtomicUsize, Mutex<Vec<String>>);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
            let thread = std::thread::current().name().unwrap_or_default().to_owned();
            self.1.lock().unwrap().push(thread);
        }
    }

    /// `n` subscribers waiting (each polled once with a counting waker) and a frame
    /// pushed to each: the wakes to hand to [`wake`], and the counts.
    fn waiting(n: usize) -> (Vec<ToWake>, Vec<Arc<Count>>, Vec<Receiver>) {
        let (mut to_wake, mut counts, mut receivers) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let (tx, mut rx) = channel(4);
            let count = Arc::new(Count::default());
            let waker = std::task::Waker::from(count.clone());
            assert!(rx.poll_recv(&mut Context::from_waker(&waker)).is_pending());
            to_wake.extend(tx.push(frame(1)).unwrap());
            // The bus keeps its senders; here they may go (a last sender's wake is
            // counted too, so they are kept).
            std::mem::forget(tx);
            counts.push(count);
            receivers.push(rx);
        }
        (to_wake, counts, receivers)
    }

    fn woken(counts: &[Arc<Count>]) -> usize {
        counts
            .iter()
            .filter(|c| c.0.load(Ordering::SeqCst) > 0)
            .count()
    }

    /// A batch is woken at once, the rest only as the waking task gets its turns,
    /// and in the end every one.
    #[tokio::test]
    async fn subscribers_are_woken_a_batch_at_a_time() {
        let (to_wake, counts, _receivers) = waiting(WAKE_BATCH * 3 + 5);
        let start = WAKE_BATCH + 6;
        wake(to_wake, start, None);
        assert_eq!(woken(&counts), WAKE_BATCH, "the first batch, at once");
        assert!(
            counts[start..start + WAKE_BATCH]
                .iter()
                .all(|c| c.0.load(Ordering::SeqCst) > 0),
            "from `start` on"
        );
        let mut turns = 0;
        while woken(&counts) < counts.len() {
            tokio::task::yield_now().await;
            turns += 1;
            assert!(turns < 100, "woken: {}", woken(&counts));
        }
        assert!(turns >= 3, "a batch a turn: {turns}");
    }

    /// Were the waking task's runtime to go before it ran, the subscribers left in
    /// it are woken all the same.
    #[test]
    fn a_waking_task_dropped_wakes_whom_it_held() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (to_wake, counts, _receivers) = waiting(WAKE_BATCH * 2);
        runtime.block_on(async { wake(to_wake, 0, None) });
        assert_eq!(woken(&counts), WAKE_BATCH);
        drop(runtime);
        assert_eq!(woken(&counts), counts.len());
    }

    /// Named the runtime its subscribers are written on, a fan-out larger than a
    /// batch is woken from there, every batch of it; one batch or less is woken at
    /// once, where it is published.
    #[test]
    fn a_fan_out_is_woken_from_the_runtime_it_is_written_on() {
        let streams = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("the-streams")
            .build()
            .unwrap();
        let here = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (to_wake, counts, _receivers) = waiting(WAKE_BATCH * 3 + 1);
        here.block_on(async { wake(to_wake, 5, Some(streams.handle())) });
        let started = std::time::Instant::now();
        while woken(&counts) < counts.len() {
            assert!(
                started.elapsed().as_secs() < 10,
                "woken: {}",
                woken(&counts)
            );
            std::thread::yield_now();
        }
        for count in &counts {
            assert_eq!(*count.1.lock().unwrap(), ["the-streams"]);
        }
        let (few, counts, _receivers) = waiting(WAKE_BATCH);
        std::thread::Builder::new()
            .name("the-publisher".into())
            .spawn(move || wake(few, 0, Some(streams.handle())))
            .unwrap()
            .join()
            .unwrap();
        assert!(
            counts
                .iter()
                .all(|c| *c.1.lock().unwrap() == ["the-publisher"])
        );
    }

    /// Many subscribers woken in batches all hear their frame.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_subscriber_of_a_large_batch_is_woken() {
        let mut readers = Vec::new();
        let mut senders = Vec::new();
        for _ in 0..(WAKE_BATCH * 5 + 3) {
            let (tx, mut rx) = channel(4);
            readers.push(tokio::spawn(async move { rx.recv().await.map(|f| f[0]) }));
            senders.push(tx);
        }
        tokio::task::yield_now().await;
        let to_wake = senders
            .iter()
            .filter_map(|tx| tx.push(frame(9)).unwrap())
            .collect();
        wake(to_wake, 7, None);
        for reader in readers {
            let heard = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
                .await
                .expect("woken")
                .unwrap();
            assert_eq!(heard, Some(9));
        }
    }
}
