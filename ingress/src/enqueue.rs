//! The micro-batcher: concurrent requests' messages go to the queue in batches of up to 10 (the SQS
//! `SendMessageBatch` limit). It never waits to fill a batch: it sends whatever is waiting as soon as a batch slot
//! is free, so a lone request pays no extra latency and a burst shares round trips.

use std::sync::Arc;

use eventfleet_storage::{MessageId, OutgoingMessage, Queue, StorageError};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Most messages in one batch.
pub const MAX_BATCH: usize = 10;

type Reply = oneshot::Sender<Result<MessageId, StorageError>>;

/// Handle to the batching task. Cloning shares it; the task ends when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct Enqueuer {
    requests: mpsc::Sender<(OutgoingMessage, Reply)>,
}

impl Enqueuer {
    /// Starts the batching task on the current runtime, with at most `max_in_flight` batches sent at once.
    pub fn spawn(queue: Arc<dyn Queue>, max_in_flight: usize) -> Self {
        let (requests, mut rx) = mpsc::channel::<(OutgoingMessage, Reply)>(4096);
        let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                // While we waited for a slot, more requests queued up: take them too.
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let queue = queue.clone();
                tokio::spawn(async move {
                    let (messages, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                    match queue.send_batch(messages).await {
                        Ok(results) => {
                            let mut results = results.into_iter();
                            for reply in replies {
                                let result = results.next().unwrap_or_else(|| {
                                    Err(StorageError::Unavailable("queue answered fewer results than messages".into()))
                                });
                                let _ = reply.send(result);
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                    drop(slot);
                });
            }
        });
        Self { requests }
    }

    /// Enqueues one message with the next batch.
    pub async fn enqueue(&self, message: OutgoingMessage) -> Result<MessageId, StorageError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((message, reply))
            .await
            .map_err(|_| StorageError::Unavailable("enqueue batcher stopped".into()))?;
        answer.await.map_err(|_| StorageError::Unavailable("enqueue batcher stopped".into()))?
    }
}
