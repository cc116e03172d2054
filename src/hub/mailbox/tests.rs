//! Unit tests of the mailbox: conflation, overflow, direct writes.

use super::*;

fn d(team: TeamId, stream: Stream, seq: u64) -> Delivery {
    Delivery {
        team,
        stream,
        seq,
        ts: 0,
        frame: Frame::from(format!("{seq}")),
        replay: false,
    }
}

#[test]
fn metrics_conflate_per_team_and_events_overflow_to_lagged() {
    let m = Mailbox::new(2);
    m.accept_metrics(0, 1);
    m.accept_metrics(1, 1);
    assert_eq!(
        m.offer_metrics(&d(0, Stream::Metrics, 1), &OnceLock::new()),
        Offer::Queued(false)
    );
    assert_eq!(
        m.offer_metrics(&d(0, Stream::Metrics, 2), &OnceLock::new()),
        Offer::Queued(true)
    );
    assert_eq!(
        m.offer_metrics(&d(1, Stream::Metrics, 1), &OnceLock::new()),
        Offer::Queued(false)
    );
    assert_eq!(
        m.offer_metrics(&d(2, Stream::Metrics, 1), &OnceLock::new()),
        Offer::Ignored
    );
    assert_eq!(m.push_event(d(0, Stream::Logs, 1)), Push::Queued);
    assert_eq!(m.push_event(d(0, Stream::Logs, 2)), Push::Queued);
    assert_eq!(m.push_event(d(0, Stream::Logs, 3)), Push::Full);
    m.set_lagged(Lagged {
        team: 0,
        stream: Stream::Logs,
        last_seq: 2,
    });
    assert_eq!(m.push_event(d(0, Stream::Logs, 4)), Push::Closed);
    assert_eq!(
        m.offer_metrics(&d(0, Stream::Metrics, 3), &OnceLock::new()),
        Offer::Refused
    );
    let mut out = Vec::new();
    let lagged = m.drain(&mut out);
    let seqs: Vec<_> = out.iter().map(|d| (d.team, d.stream, d.seq)).collect();
    assert_eq!(
        seqs,
        vec![
            (0, Stream::Metrics, 2),
            (1, Stream::Metrics, 1),
            (0, Stream::Logs, 1),
            (0, Stream::Logs, 2)
        ]
    );
    assert_eq!(lagged.unwrap().last_seq, 2);
}

/// A wire that records what it was given and answers as told.
#[derive(Default)]
struct FakeWire {
    answers: Mutex<VecDeque<Sent>>,
    got: Mutex<Vec<Vec<u8>>>,
}

impl Wire for FakeWire {
    fn try_send(&self, frame: &Frame, _: &OnceLock<Bytes>) -> Sent {
        self.got.lock().unwrap().push(frame.as_bytes().to_vec());
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Sent::All)
    }
}

fn take(m: &Mailbox) -> (Poll<Take>, Outgoing) {
    let mut out = Outgoing::default();
    let mut cx = Context::from_waker(Waker::noop());
    (m.poll_take(&mut cx, &mut out), out)
}

#[test]
fn team_floors_spill_update_and_shrink() {
    let mut t = TeamFloors::default();
    for (team, from) in [(5, 1), (1, 2), (9, 3), (7, 4), (1, 6)] {
        t.set(team, from);
    }
    assert_eq!(
        [5, 1, 9, 7, 8].map(|x| t.floor(x)),
        [Some(1), Some(6), Some(3), Some(4), None]
    );
    assert_eq!(t.0.len(), 4);
    t.remove(1);
    assert_eq!([1, 7, 5].map(|x| t.floor(x)), [None, Some(4), Some(1)]);
    assert_eq!(t.0.len(), 3);
}

#[test]
fn metrics_go_straight_to_the_wire_only_when_nothing_is_ahead_of_them() {
    let m = Mailbox::new(8);
    let wire = Arc::new(FakeWire::default());
    m.attach_wire(wire.clone());
    m.accept_metrics(0, 1);
    // Nothing queued: written directly, nothing for the writer.
    assert_eq!(
        m.offer_metrics(&d(0, Stream::Metrics, 1), &OnceLock::new()),
        Offer::Written
    );
    assert!(take(&m).0.is_pending());
    // A reply queued: the frame waits behind it.
    m.push_control(Control::Text(Frame::from("reply")));
    assert_eq!(
        m.offer_metrics(&d(0, Stream::Metrics, 2), &OnceLock::new()),
        Offer::Queued(false)
    );
    let (p, out) = take(&m);
    assert_eq!(p, Poll::Ready(Take::Ready));
    assert_eq!(out.control.len(), 1);
    assert_eq!(out.data[0].seq, 2);
    // The writer is writing that batch: the fan-out keeps off.
    assert_eq!(
        m.offer_metrics(&d(0, Stream::Metrics, 3), &OnceLock::new()),
        Offer::Queued(false)
    );
    let (_, out) = take(&m);
    assert_eq!(out.data[0].seq, 3);
    assert!(take(&m).0.is_pending(), "writer done, parked");
    // A subscribe being prepared holds live frames back.
    m.hold();
    assert_eq!(
        m.offer_metrics(&d(0, Stream::Metrics, 4), &OnceLock::new()),
        Offer::Queued(false)
    );
    assert!(m.push_control_all([Control::Text(Frame::from("subscribed"))]));
    let (_, out) = take(&m);
    assert_eq!((out.control.len(), out.data[0].seq), (1, 4));
    assert!(take(&m).0.is_pending());
    // A partial write: the rest is owed, ahead of everything else.
    wire.answers
        .lock()
        .unwrap()
        .push_back(Sent::Part(Bytes::from_static(b"rest")));
    assert_eq!(
        m.offer_metrics(&d(0, Stream::Metrics, 5), &OnceLock::new()),
        Offer::Written
    );
    assert_eq!(
        m.offer_metrics(&d(0, Stream::Metrics, 6), &OnceLock::new()),
        Offer::Queued(false)
    );
    let (_, out) = take(&m);
    assert_eq!(out.owed.as_deref(), Some(&b"rest"[..]));
    assert_eq!(out.data[0].seq, 6);
    assert!(take(&m).0.is_pending());
    // A full socket: queued for the writer instead.
    wire.answers.lock().unwrap().push_back(Sent::Full);
    assert_eq!(
        m.offer_metrics(&d(0, Stream::Metrics, 7), &OnceLock::new()),
        Offer::Queued(false)
    );
    assert_eq!(take(&m).1.data[0].seq, 7);
    assert!(take(&m).0.is_pending());
    // Unsubscribed: an older snapshot's frame is not delivered.
    m.purge(0, &[Stream::Metrics]);
    assert_eq!(
        m.offer_metrics(&d(0, Stream::Metrics, 8), &OnceLock::new()),
        Offer::Ignored
    );
    let written: Vec<_> = wire.got.lock().unwrap().clone();
    assert_eq!(
        written,
        vec![b"1".to_vec(), b"5".to_vec(), b"7".to_vec()],
        "the wire saw exactly the frames offered while the way was clear"
    );
    // Subscribed again, replayed up to 9: a snapshot older than that
    // (still delivering 8) is refused; 10 is taken.
    m.accept_metrics(0, 10);
    assert_eq!(
        m.offer_metrics(&d(0, Stream::Metrics, 8), &OnceLock::new()),
        Offer::Ignored
    );
    assert_eq!(
        m.offer_metrics(&d(0, Stream::Metrics, 10), &OnceLock::new()),
        Offer::Written
    );
    // A failed socket: the subscriber is aborted and refuses the rest.
    wire.answers.lock().unwrap().push_back(Sent::Failed);
    assert_eq!(
        m.offer_metrics(&d(0, Stream::Metrics, 11), &OnceLock::new()),
        Offer::Refused
    );
    assert_eq!(take(&m).0, Poll::Ready(Take::Aborted));
}

#[test]
fn a_hold_keeps_events_back_until_the_reply_and_a_late_reply_does_not_end_it() {
    let m = Mailbox::new(8);
    m.hold();
    // The replay of a subscribe, and a live event after it.
    assert_eq!(m.push_replay(d(0, Stream::Logs, 1), false), Push::Queued);
    assert_eq!(m.push_event(d(0, Stream::Logs, 2)), Push::Queued);
    // Held: the writer has nothing to take yet.
    assert!(take(&m).0.is_pending());
    // A late reply (a silence's) goes out, and the events stay held.
    assert!(m.push_late(Control::Text(Frame::from("silenced"))));
    let (p, out) = take(&m);
    assert_eq!(p, Poll::Ready(Take::Ready));
    assert_eq!((out.control.len(), out.data.len()), (1, 0));
    assert!(take(&m).0.is_pending());
    // The `subscribed` reply ends the hold: it, then the events in order.
    assert!(m.push_control_all([Control::Text(Frame::from("subscribed"))]));
    let (_, out) = take(&m);
    assert_eq!(out.control.len(), 1);
    assert_eq!(out.data.iter().map(|d| d.seq).collect::<Vec<_>>(), [1, 2]);
    // A closed mailbox is never left held.
    m.hold();
    m.close();
    assert_eq!(take(&m).0, Poll::Ready(Take::Finished));
}
