//! Judging confirms when returns can land on the wrong one.
//!
//! `basic.return` carries no delivery tag. lapin keeps each returned message until the next
//! confirm it resolves and attaches it there — and when one frame acks several publishes at
//! once (a multiple ack), or acks arrive out of publish order, that confirm may be another
//! publish's. So a publish cannot be judged from its own confirm alone: the return of an
//! unroutable chunk may sit on a confirm that was resolved just before its own, in a task
//! that has not looked at it yet. Judged alone, such a chunk was reported published (and
//! marked so) although the broker dropped it — found by the test
//! `among_many_concurrent_publishes_no_unroutable_one_is_ever_reported_published`.
//!
//! One task per channel, the [`Judge`], therefore owns every confirm. It sweeps them all
//! whenever one resolves, and records each return it finds on a confirm that is not its
//! owner's in a [`ReturnBook`]. A confirm seen resolved is judged only after a LATER sweep
//! has looked at every confirm that could have been resolved before it: every publish
//! registered before it was seen (registration happens in publish order, before the message
//! is sent, see [`Judge::reserve`]). A return is always resolved no later than its owner's
//! own confirm, so by then it is in the book.

use crate::error::PublishError;
use lapin::{Confirmation, PublisherConfirm};
use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::Poll,
    time::Duration,
};
use tokio::sync::{mpsc, oneshot};

/// Returned-message ids a channel remembers at most; past that the oldest knowledge is
/// dropped at once — only ever reached if routing stays broken.
const RETURN_BOOK_CAP: usize = 10_000;

/// How long the judge of a channel that is gone waits for its last confirms (lapin fails
/// them when the channel dies; this is for a connection that neither acks nor dies).
const PATIENCE_AFTER_CLOSE: Duration = Duration::from_secs(60);

/// What a publish reports to the judge, in publish order.
enum Registration {
    /// The message was handed to lapin: judge its confirm.
    Sent {
        message_id: String,
        confirm: PublisherConfirm,
        verdict: oneshot::Sender<Result<(), PublishError>>,
    },
    /// The publish failed before the message went out: nothing to judge.
    NotSent,
}

/// The publishing side of a channel's judge. Dropping it lets the judge finish its last
/// confirms and stop.
pub(super) struct Judge {
    /// Publishes registered so far (the next one's number).
    reserved: Arc<AtomicU64>,
    registrations: mpsc::UnboundedSender<Registration>,
}

/// A publish's place in the judge's order, taken before its message is sent.
pub(super) struct Slot<'a> {
    judge: &'a Judge,
    filled: bool,
}

impl Judge {
    /// Starts the judge of one channel on the current tokio runtime.
    pub(super) fn start() -> Self {
        let reserved = Arc::new(AtomicU64::new(0));
        let (registrations, incoming) = mpsc::unbounded_channel();
        tokio::spawn(judge(Arc::clone(&reserved), incoming));
        Self {
            reserved,
            registrations,
        }
    }

    /// Takes the next place. Call it while holding the channel's send order, BEFORE handing
    /// the message to lapin, and fill the slot before letting the next publish go: the judge
    /// relies on registrations arriving in the order of their places.
    pub(super) fn reserve(&self) -> Slot<'_> {
        self.reserved.fetch_add(1, Ordering::SeqCst);
        Slot {
            judge: self,
            filled: false,
        }
    }
}

impl Slot<'_> {
    /// The message went out with this confirm: returns where its verdict will come.
    pub(super) fn sent(
        mut self,
        message_id: &str,
        confirm: PublisherConfirm,
    ) -> oneshot::Receiver<Result<(), PublishError>> {
        let (verdict, receiver) = oneshot::channel();
        self.filled = true;
        // A judge that is gone drops the verdict sender: the receiver then reports an error.
        let _ = self.judge.registrations.send(Registration::Sent {
            message_id: message_id.to_owned(),
            confirm,
            verdict,
        });
        receiver
    }
}

impl Drop for Slot<'_> {
    /// An unfilled slot (the publish failed, or was cancelled, before its message went out)
    /// is still reported, or the judge would wait for it forever.
    fn drop(&mut self) {
        if !self.filled {
            let _ = self.judge.registrations.send(Registration::NotSent);
        }
    }
}

/// A confirm seen resolved, waiting for the sweep that may judge it.
struct Observed {
    message_id: String,
    outcome: Result<(bool, Option<Option<String>>), PublishError>,
    verdict: oneshot::Sender<Result<(), PublishError>>,
    /// Publishes registered when it was seen: it is judged once all of them are in.
    horizon: u64,
}

/// A confirm not resolved yet.
struct Pending {
    message_id: String,
    confirm: PublisherConfirm,
    verdict: oneshot::Sender<Result<(), PublishError>>,
}

/// The judge's loop (see the module docs).
async fn judge(reserved: Arc<AtomicU64>, incoming: mpsc::UnboundedReceiver<Registration>) {
    let mut state = JudgeState {
        reserved,
        incoming,
        open: true,
        received: 0,
        pending: Vec::new(),
        observed: Vec::new(),
        book: ReturnBook::default(),
    };
    loop {
        let open = state.open;
        if !open && state.pending.is_empty() && state.observed.is_empty() {
            return;
        }
        let step = std::future::poll_fn(|cx| state.step(cx));
        if open {
            step.await;
        } else if tokio::time::timeout(PATIENCE_AFTER_CLOSE, step)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// What the judge of one channel knows.
struct JudgeState {
    /// Publishes registered so far, shared with [`Judge::reserve`].
    reserved: Arc<AtomicU64>,
    incoming: mpsc::UnboundedReceiver<Registration>,
    /// Whether publishes may still register.
    open: bool,
    /// Registrations received.
    received: u64,
    pending: Vec<Pending>,
    observed: Vec<Observed>,
    book: ReturnBook,
}

impl JudgeState {
    /// One sweep: take new registrations, look at every unresolved confirm (noting the returns
    /// found on them), and judge what earlier sweeps saw resolved and this one has covered.
    /// Ready when something moved, so that the next sweep follows at once.
    fn step(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        // Registrations first: the sweep below must cover every one counted here.
        while self.open {
            match self.incoming.poll_recv(cx) {
                Poll::Ready(Some(registration)) => {
                    self.received += 1;
                    if let Registration::Sent {
                        message_id,
                        confirm,
                        verdict,
                    } = registration
                    {
                        self.pending.push(Pending {
                            message_id,
                            confirm,
                            verdict,
                        });
                    }
                }
                Poll::Ready(None) => self.open = false,
                Poll::Pending => break,
            }
        }
        // Seen in an earlier sweep, with every publish that could have been resolved before
        // it now registered: this sweep completes what its verdict needs.
        let received = self.received;
        let (ready, waiting): (Vec<Observed>, Vec<Observed>) = std::mem::take(&mut self.observed)
            .into_iter()
            .partition(|o| o.horizon <= received);
        self.observed = waiting;
        let mut progress = !ready.is_empty();
        let mut index = 0;
        while index < self.pending.len() {
            let Poll::Ready(result) = Pin::new(&mut self.pending[index].confirm).poll(cx) else {
                index += 1;
                continue;
            };
            let done = self.pending.swap_remove(index);
            let outcome = read_confirmation(result);
            if let Ok((_, returned)) = &outcome {
                note_return(returned.as_ref(), &done.message_id, &mut self.book);
            }
            self.observed.push(Observed {
                message_id: done.message_id,
                outcome,
                verdict: done.verdict,
                // Read after the confirm was seen resolved: covers every publish that could
                // have been resolved before it.
                horizon: self.reserved.load(Ordering::SeqCst),
            });
            progress = true;
        }
        for o in ready {
            let book = &mut self.book;
            let result = o
                .outcome
                .and_then(|(acked, returned)| verdict(acked, returned, &o.message_id, book));
            // The publisher may have stopped waiting (its deadline passed): then it is moot.
            let _ = o.verdict.send(result);
        }
        if progress {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Whether the broker acked, and the message id of the return lapin attached, if any
/// (`Some(None)`: a return without id).
fn read_confirmation(
    result: Result<Confirmation, lapin::Error>,
) -> Result<(bool, Option<Option<String>>), PublishError> {
    let (acked, returned) = match result.map_err(|e| PublishError::Broker(e.to_string()))? {
        Confirmation::Ack(returned) => (true, returned),
        Confirmation::Nack(returned) => (false, returned),
        Confirmation::NotRequested => {
            return Err(PublishError::Broker(
                "publisher confirms are not enabled on the channel".to_owned(),
            ));
        }
    };
    let returned_id = returned.map(|message| {
        message
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
    });
    Ok((acked, returned_id))
}

/// Returned-message ids seen on one channel whose owner has not claimed them yet.
#[derive(Debug, Default)]
struct ReturnBook {
    ids: HashMap<String, u32>,
}

impl ReturnBook {
    fn record(&mut self, id: String) {
        if self.ids.len() >= RETURN_BOOK_CAP {
            self.ids.clear();
        }
        *self.ids.entry(id).or_default() += 1;
    }

    fn claim(&mut self, id: &str) -> bool {
        match self.ids.get_mut(id) {
            Some(count) if *count > 1 => {
                *count -= 1;
                true
            }
            Some(_) => {
                self.ids.remove(id);
                true
            }
            None => false,
        }
    }
}

/// When a confirm is seen: a return attached to it that is another publish's is recorded for
/// its owner (`returned` as in [`verdict`]).
fn note_return(returned: Option<&Option<String>>, own_id: &str, book: &mut ReturnBook) {
    if let Some(Some(id)) = returned
        && id != own_id
    {
        book.record(id.clone());
    }
}

/// Whether a confirmed publish of `own_id` counts as published, once every return that could
/// be its own has been noted ([`note_return`]). `returned` is the message id of the returned
/// message lapin attached to this confirm, if it attached one (`Some(None)`: a returned
/// message without id). Holding another publish's return also counts as returned: routing was
/// changing while it was in flight, and erring that way only costs a duplicate, never a chunk.
fn verdict(
    acked: bool,
    returned: Option<Option<String>>,
    own_id: &str,
    book: &mut ReturnBook,
) -> Result<(), PublishError> {
    let returned = match returned {
        None => book.claim(own_id),
        Some(Some(id)) if id == own_id => true,
        Some(_) => {
            book.claim(own_id);
            true
        }
    };
    if !acked {
        Err(PublishError::Nacked)
    } else if returned {
        Err(PublishError::Returned)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Notes then judges, as the judge does (with nothing else in between).
    fn note_and_judge(
        acked: bool,
        returned: Option<Option<String>>,
        own_id: &str,
        book: &mut ReturnBook,
    ) -> Result<(), PublishError> {
        note_return(returned.as_ref(), own_id, book);
        verdict(acked, returned, own_id, book)
    }

    #[test]
    fn verdicts_follow_ack_and_returns() {
        // (acked, returned id attached to this confirm, ids already in the book, verdict)
        type Case = (
            bool,
            Option<Option<&'static str>>,
            &'static [&'static str],
            Result<(), PublishError>,
        );
        let cases: [Case; 9] = [
            (true, None, &[], Ok(())),
            (false, None, &[], Err(PublishError::Nacked)),
            (true, Some(Some("7")), &[], Err(PublishError::Returned)),
            (false, Some(Some("7")), &[], Err(PublishError::Nacked)),
            // Our return was attached to another publish's confirm, which recorded it.
            (true, None, &["7"], Err(PublishError::Returned)),
            (true, None, &["8"], Ok(())),
            // We hold another chunk's return: routing was in flux, err on the safe side.
            (true, Some(Some("8")), &[], Err(PublishError::Returned)),
            (true, Some(None), &[], Err(PublishError::Returned)),
            (false, None, &["7"], Err(PublishError::Nacked)),
        ];
        for (acked, returned, book_ids, want) in cases {
            let mut book = ReturnBook::default();
            for id in book_ids {
                book.record((*id).to_owned());
            }
            let got = note_and_judge(
                acked,
                returned.map(|r| r.map(str::to_owned)),
                "7",
                &mut book,
            );
            assert_eq!(got, want, "{acked} {returned:?} {book_ids:?}");
            assert!(!book.ids.contains_key("7"), "own id must be claimed");
        }
    }

    #[test]
    fn foreign_returns_are_kept_for_their_owner() {
        let mut book = ReturnBook::default();
        let _ = note_and_judge(true, Some(Some("8".to_owned())), "7", &mut book);
        assert_eq!(
            note_and_judge(true, None, "8", &mut book),
            Err(PublishError::Returned)
        );
        assert_eq!(note_and_judge(true, None, "8", &mut book), Ok(()));
    }

    #[test]
    fn a_return_noted_before_its_owner_is_judged_is_found_whatever_the_order_of_judging() {
        // Chunk 8's return sits on chunk 7's confirm. Both are seen in one sweep; 8 is judged
        // first. Noting at sight (not at judging) is what makes 8 come out returned.
        let mut book = ReturnBook::default();
        let seven = Some(Some("8".to_owned()));
        note_return(seven.as_ref(), "7", &mut book);
        note_return(None, "8", &mut book);
        assert_eq!(
            verdict(true, None, "8", &mut book),
            Err(PublishError::Returned)
        );
        assert_eq!(
            verdict(true, seven, "7", &mut book),
            Err(PublishError::Returned)
        );
        assert!(book.ids.is_empty());
    }

    #[test]
    fn the_return_book_is_bounded() {
        let mut book = ReturnBook::default();
        for i in 0..(RETURN_BOOK_CAP * 2 + 5) {
            book.record(i.to_string());
        }
        assert!(book.ids.len() <= RETURN_BOOK_CAP);
    }
}
