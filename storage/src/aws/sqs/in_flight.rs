//! The receipts this process holds, with what moving their messages to the DLQ needs (SQS cannot fetch a body
//! by receipt) and the records the protocol read for them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eventfleet_schema::IdempotencyRecord;

/// How long [`InFlight`] keeps a receipt past its visibility: a handler finishing just after its visibility ran
/// out may still delete or move its message if nobody received it meanwhile.
pub(in crate::aws) const IN_FLIGHT_GRACE: Duration = Duration::from_secs(60);
/// How often [`InFlight`] sweeps out expired receipts.
pub(in crate::aws) const IN_FLIGHT_SWEEP: Duration = Duration::from_secs(10);

/// What this process needs to move a received message to the DLQ, by receipt. Bounded by the receipts' lives:
/// a receipt is dropped when its message is deleted, moved or given back, and swept out once its visibility
/// (plus a grace) has passed, as happens after a retry is scheduled or when a handler task is lost.
#[derive(Default)]
pub(in crate::aws) struct InFlight(Mutex<InFlightMap>);

#[derive(Default)]
pub(in crate::aws) struct InFlightMap {
    pub(in crate::aws) held: HashMap<String, Held>,
    pub(in crate::aws) swept: Option<Instant>,
}

#[derive(Clone)]
pub(in crate::aws) struct Held {
    pub(in crate::aws) message_id: String,
    pub(in crate::aws) body: String,
    pub(in crate::aws) group: String,
    pub(in crate::aws) attributes: BTreeMap<String, String>,
    pub(in crate::aws) receive_count: u32,
    /// When the receipt's visibility ends (moved by visibility changes).
    pub(in crate::aws) until: Instant,
    /// The idempotency record its start read (`Some(None)`: it had none), so that its success can be written
    /// as one batched put instead of a read-modify-write.
    pub(in crate::aws) started: Option<Option<IdempotencyRecord>>,
    /// A waiting message's records, read with the rest of its receive, for its start later.
    pub(in crate::aws) prefetched: Option<crate::aws::protocol::Found>,
    /// Receipts of the messages before it in its group's chain, `DONE` and left for it to delete when its own
    /// delivery ends ([`InFlight::leave_delete`]), each with when its visibility ends.
    pub(in crate::aws) deletes: Vec<(String, Instant)>,
}

impl InFlight {
    pub(in crate::aws) fn lock(&self) -> std::sync::MutexGuard<'_, InFlightMap> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(in crate::aws) fn hold(&self, receipt: &str, held: Held) {
        let mut map = self.lock();
        let now = Instant::now();
        if map.swept.is_none_or(|at| now.duration_since(at) >= IN_FLIGHT_SWEEP) {
            map.held.retain(|_, h| h.until + IN_FLIGHT_GRACE > now);
            map.swept = Some(now);
        }
        map.held.insert(receipt.to_owned(), held);
    }

    pub(in crate::aws) fn get(&self, receipt: &str) -> Option<Held> {
        self.lock().held.get(receipt).cloned()
    }

    /// The receipt's visibility now ends `visibility` from now; zero gives the message back, so it is dropped.
    pub(in crate::aws) fn extend(&self, receipt: &str, visibility: Duration) {
        let mut map = self.lock();
        if visibility.is_zero() {
            map.held.remove(receipt);
        } else if let Some(h) = map.held.get_mut(receipt) {
            h.until = Instant::now() + visibility;
        }
    }

    pub(in crate::aws) fn forget(&self, receipt: &str) {
        self.lock().held.remove(receipt);
    }

    /// Remembers what the start of this receipt's delivery read.
    pub(in crate::aws) fn set_started(&self, receipt: &str, record: Option<IdempotencyRecord>) {
        if let Some(h) = self.lock().held.get_mut(receipt) {
            h.started = Some(record);
        }
    }

    /// How much of the receipt's visibility is left, if this process holds it.
    pub(in crate::aws) fn remaining(&self, receipt: &str) -> Option<Duration> {
        self.lock().held.get(receipt).map(|h| h.until.saturating_duration_since(Instant::now()))
    }

    /// Keeps a waiting message's records for its start.
    pub(in crate::aws) fn prefetch(&self, receipt: &str, found: crate::aws::protocol::Found) {
        if let Some(h) = self.lock().held.get_mut(receipt) {
            h.prefetched = Some(found);
        }
    }

    /// The records read for a waiting message with its receive, once.
    pub(in crate::aws) fn take_prefetched(&self, receipt: &str) -> Option<crate::aws::protocol::Found> {
        self.lock().held.get_mut(receipt).and_then(|h| h.prefetched.take())
    }

    /// What the start of this receipt's delivery read, if this process started it.
    pub(in crate::aws) fn started(&self, receipt: &str) -> Option<Option<IdempotencyRecord>> {
        self.lock().held.get(receipt).and_then(|h| h.started.clone())
    }

    /// Leaves the delete of `done` (and those it was left) to `next`, the message after it in its group's chain,
    /// for each whose visibility has at least `keep` left (a receipt whose visibility ran out can no longer delete
    /// its message on a FIFO queue); `done` is forgotten. Returns the ones to delete now: those with less left, or
    /// every one when this process does not hold `next`.
    pub(in crate::aws) fn leave_delete(&self, done: &str, next: &str, keep: Duration) -> Vec<String> {
        let mut map = self.lock();
        let now = Instant::now();
        let (mut carried, until) = match map.held.remove(done) {
            Some(h) => (h.deletes, h.until),
            None => (Vec::new(), now),
        };
        carried.push((done.to_owned(), until));
        let Some(h) = map.held.get_mut(next) else { return carried.into_iter().map(|(r, _)| r).collect() };
        let (left, now_due): (Vec<_>, Vec<_>) = carried.into_iter().partition(|(_, until)| *until >= now + keep);
        h.deletes.extend(left);
        now_due.into_iter().map(|(r, _)| r).collect()
    }

    /// The deletes left to this receipt's delivery, once.
    pub(in crate::aws) fn take_deletes(&self, receipt: &str) -> Vec<String> {
        let mut map = self.lock();
        let left = map.held.get_mut(receipt).map(|h| std::mem::take(&mut h.deletes)).unwrap_or_default();
        left.into_iter().map(|(r, _)| r).collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(visibility: Duration) -> Held {
        Held {
            message_id: "m".into(),
            body: String::new(),
            group: "g".into(),
            attributes: BTreeMap::new(),
            receive_count: 1,
            until: Instant::now() + visibility,
            started: None,
            prefetched: None,
            deletes: Vec::new(),
        }
    }

    #[test]
    fn a_delete_left_to_the_next_of_a_chain_moves_with_the_ones_left_to_it() {
        let in_flight = InFlight::default();
        let keep = Duration::from_secs(15);
        for r in ["a", "b", "c"] {
            in_flight.hold(r, held(Duration::from_secs(30)));
        }
        assert!(in_flight.leave_delete("a", "b", keep).is_empty());
        assert!(in_flight.leave_delete("b", "c", keep).is_empty());
        assert!(in_flight.get("a").is_none() && in_flight.get("b").is_none(), "the done ones are forgotten");
        assert_eq!(in_flight.take_deletes("c"), ["a", "b"]);
        assert!(in_flight.take_deletes("c").is_empty(), "once");
        assert_eq!(in_flight.leave_delete("c", "gone", keep), ["c"], "not held: deleted now");
        // A receipt whose visibility is running out is deleted now, not carried: it could no longer delete.
        for r in ["d", "e", "f"] {
            in_flight.hold(r, held(Duration::from_secs(30)));
        }
        in_flight.hold("short", held(Duration::from_secs(5)));
        assert!(in_flight.leave_delete("d", "short", keep).is_empty());
        assert_eq!(in_flight.leave_delete("short", "e", keep), ["short"]);
        assert_eq!(in_flight.take_deletes("e"), ["d"]);
    }

    #[test]
    fn in_flight_receipts_leave_when_given_back_or_expired() {
        let in_flight = InFlight::default();
        in_flight.hold("given-back", held(Duration::from_secs(30)));
        in_flight.extend("given-back", Duration::ZERO);
        assert!(in_flight.get("given-back").is_none());
        // A receipt whose visibility (and grace) ran out goes at the next sweep.
        in_flight.hold("expired", held(Duration::ZERO));
        in_flight.lock().held.get_mut("expired").unwrap().until = Instant::now() - IN_FLIGHT_GRACE;
        in_flight.lock().swept = Some(Instant::now() - IN_FLIGHT_SWEEP);
        in_flight.hold("kept", held(Duration::from_secs(30)));
        assert!(in_flight.get("expired").is_none());
        assert!(in_flight.get("kept").is_some());
        in_flight.extend("kept", Duration::from_secs(60));
        in_flight.forget("kept");
        assert_eq!(in_flight.len(), 0);
    }
}
