//! The intake: one thread that waits on the taps of every continuous SQL query (durable
//! log and span batches, appended samples, other queries' changes) and hands each
//! batch to the worker that feeds that query, waking it. The workers themselves never
//! block on a tap, so one set of workers serves every query.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Select, Sender};

use super::runner::{Input, Tap};
use super::sql::Source;
use crate::service::Waker;

/// The taps of one query and where their batches go.
pub(crate) struct Watch {
    pub taps: Vec<(Source, Tap)>,
    pub to: Sender<(Source, Input)>,
    pub waker: Waker,
    /// The worker that feeds the query.
    pub worker: usize,
    /// The newest event time handed over (for the query's lag behind its inputs).
    pub newest: Arc<AtomicI64>,
}

/// The newest event time in a batch (the source's time column; a change batch's time).
fn newest(source: &Source, input: &Input) -> Option<i64> {
    match input {
        Input::Changes(changes) => Some(changes.time),
        Input::Samples(appended) => appended.samples.iter().map(|s| s.timestamp_ms).max(),
        Input::Records(batch) => {
            super::runner::newest_of(batch.column_by_name(source.time_column()?)?)
                .ok()
                .flatten()
        }
    }
}

enum Control {
    Add(u64, Watch),
    Remove(u64),
}

/// The intake thread's handle (cheap to clone).
#[derive(Clone)]
pub(crate) struct Intake {
    control: Sender<Control>,
    next_id: Arc<AtomicU64>,
}

/// Stops watching a query's taps when dropped.
pub(crate) struct Watching {
    id: u64,
    control: Sender<Control>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Remove(self.id));
    }
}

impl Intake {
    pub(crate) fn start() -> std::io::Result<Intake> {
        let (control, commands) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("cq-intake".into())
            .spawn(move || run(commands))?;
        Ok(Intake {
            control,
            next_id: Arc::new(AtomicU64::new(0)),
        })
    }

    pub(crate) fn watch(&self, watch: Watch) -> Watching {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.control.send(Control::Add(id, watch));
        Watching {
            id,
            control: self.control.clone(),
        }
    }
}

fn run(commands: Receiver<Control>) {
    let mut watches: Vec<(u64, Watch)> = Vec::new();
    loop {
        let mut select = Select::new();
        select.recv(&commands);
        let mut index = Vec::new();
        for (w, (_, watch)) in watches.iter().enumerate() {
            for (t, (_, tap)) in watch.taps.iter().enumerate() {
                match tap {
                    Tap::Records(tap) => select.recv(tap),
                    Tap::Changes(tap) => select.recv(tap),
                    Tap::Samples(tap) => select.recv(tap),
                };
                index.push((w, t));
            }
        }
        let operation = select.select();
        if operation.index() == 0 {
            match operation.recv(&commands) {
                Ok(Control::Add(id, watch)) => watches.push((id, watch)),
                Ok(Control::Remove(id)) => watches.retain(|(watching, _)| *watching != id),
                Err(_) => return,
            }
            continue;
        }
        let Some(&(w, t)) = index.get(operation.index() - 1) else {
            continue;
        };
        let watch = &watches[w].1;
        let (source, tap) = &watch.taps[t];
        let received = match tap {
            Tap::Records(tap) => operation.recv(tap).map(Input::Records),
            Tap::Changes(tap) => operation.recv(tap).map(Input::Changes),
            Tap::Samples(tap) => operation.recv(tap).map(Input::Samples),
        };
        // A closed tap (storage shutting down, an upstream query dropped) ends the
        // query's input: dropping `to` tells its worker.
        let delivered = match received {
            Ok(input) => {
                if let Some(time) = newest(source, &input) {
                    watch.newest.fetch_max(time, Ordering::Relaxed);
                }
                watch.to.send((source.clone(), input)).is_ok()
            }
            Err(_) => false,
        };
        if delivered {
            watch.waker.wake_one(watch.worker);
        } else {
            let (_, gone) = watches.swap_remove(w);
            gone.waker.wake_one(gone.worker);
        }
    }
}
