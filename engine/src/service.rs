//! The dataflow service: one set of timely worker threads that every continuous program
//! runs on — the rules' PromQL program ([`crate::incremental::Engine`]) and each
//! continuous SQL query ([`crate::continuous`]) alike.
//!
//! A program is *installed* by giving a build function, which the service runs on every
//! worker, in the same order on all of them (timely's rule for dataflows that span
//! workers). The build returns the worker's share of the program as a [`Hosted`], which
//! each worker then polls in its loop: it takes the program's commands or input from
//! its own channels, feeds its inputs and steps the worker until its probe says an epoch
//! is complete. Between polls an idle worker parks; a client that sends a program
//! something wakes the workers with the service's [`Waker`].
//!
//! A program ends when its client drops the [`Lease`] that `install` returned, or when
//! its poll says so; dropping its `Hosted` closes its inputs, and its dataflow drains
//! and is removed by timely.
//! A panic while building or polling one program ends that program only (logged),
//! not the worker and the other programs on it.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::thread::Thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use timely::worker::Worker;

/// One worker's share of an installed program.
pub trait Hosted {
    /// Does what is waiting for this program on this worker without waiting for more;
    /// `false` once the program has finished (then it is dropped).
    fn poll(&mut self, worker: &mut Worker) -> bool;
}

/// Builds one worker's share of a program (run once on every worker).
pub type Build = Arc<dyn Fn(&mut Worker) -> Box<dyn Hosted> + Send + Sync>;

enum Job {
    Install(u64, Build),
    /// Removes a program; each worker acknowledges once its share is gone.
    Remove(u64, Sender<()>),
}

/// An installed program: dropping it removes the program from every worker.
pub struct Lease {
    id: u64,
    inner: Arc<Inner>,
}

impl Drop for Lease {
    /// Returns once every worker has dropped its share (so nothing of the program runs
    /// after, e.g. writing files), or after 30 s.
    fn drop(&mut self) {
        let (done, acks) = crossbeam_channel::unbounded();
        if self.inner.send(|| Job::Remove(self.id, done.clone())) {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            for _ in 0..self.inner.waker.threads.len() {
                if acks.recv_deadline(deadline).is_err() {
                    tracing::warn!("a dataflow worker did not remove a program within 30 s");
                    break;
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot start the dataflow workers: {0}")]
    Start(String),
    #[error("the dataflow workers have stopped")]
    Stopped,
}

/// Wakes the service's workers (after sending a program something).
#[derive(Clone)]
pub struct Waker {
    threads: Arc<[Thread]>,
}

impl Waker {
    pub fn wake(&self) {
        for thread in self.threads.iter() {
            thread.unpark();
        }
    }

    /// Wakes worker `index` only.
    pub fn wake_one(&self, index: usize) {
        if let Some(thread) = self.threads.get(index) {
            thread.unpark();
        }
    }
}

/// The worker threads and the programs installed on them (cheap to clone).
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    /// One per worker; held locked while a build is sent to all of them, so every
    /// worker receives the builds in the same order.
    jobs: Mutex<Vec<Sender<Job>>>,
    next_id: std::sync::atomic::AtomicU64,
    waker: Waker,
    guards: Mutex<Option<timely::communication::initialize::WorkerGuards<()>>>,
}

impl Inner {
    /// Sends a job to every worker, in the same order on all of them; false if the
    /// workers are gone.
    fn send(&self, job: impl Fn() -> Job) -> bool {
        let Ok(jobs) = self.jobs.lock() else {
            return false;
        };
        let sent = jobs.iter().all(|worker| worker.send(job()).is_ok());
        drop(jobs);
        self.waker.wake();
        sent
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.clear();
        }
        self.waker.wake();
        // The workers end once their programs have; nothing waits for that here.
        if let Some(guards) = self.guards.lock().ok().and_then(|mut g| g.take()) {
            let _ = std::thread::Builder::new()
                .name("dataflow-join".into())
                .spawn(move || drop(guards));
        }
    }
}

/// How long an idle worker parks before looking at its programs again (a client's
/// send wakes it at once; this only bounds how late a missed wake-up could be seen).
const IDLE_PARK: Duration = Duration::from_millis(250);

impl Service {
    /// Starts `threads` workers.
    pub fn start(threads: usize) -> Result<Service, ServiceError> {
        let threads = threads.max(1);
        let mut senders = Vec::with_capacity(threads);
        let mut receivers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (tx, rx) = crossbeam_channel::unbounded::<Job>();
            senders.push(tx);
            receivers.push(Mutex::new(Some(rx)));
        }
        let receivers = Arc::new(receivers);
        let (hello, handles) = crossbeam_channel::unbounded::<(usize, Thread)>();
        let guards = timely::execute(timely::Config::process(threads), move |worker| {
            let jobs = receivers
                .get(worker.index())
                .and_then(|slot| slot.lock().ok().and_then(|mut slot| slot.take()));
            let _ = hello.send((worker.index(), std::thread::current()));
            if let Some(jobs) = jobs {
                work(worker, jobs);
            }
        })
        .map_err(ServiceError::Start)?;
        let mut found: Vec<Option<Thread>> = vec![None; threads];
        for _ in 0..threads {
            let (index, thread) = handles
                .recv_timeout(Duration::from_secs(30))
                .map_err(|_| ServiceError::Start("a worker did not start".into()))?;
            if let Some(slot) = found.get_mut(index) {
                *slot = Some(thread);
            }
        }
        let threads: Vec<Thread> = found.into_iter().flatten().collect();
        Ok(Service {
            inner: Arc::new(Inner {
                jobs: Mutex::new(senders),
                next_id: std::sync::atomic::AtomicU64::new(0),
                waker: Waker {
                    threads: threads.into(),
                },
                guards: Mutex::new(Some(guards)),
            }),
        })
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.inner.waker.threads.len()
    }

    pub fn waker(&self) -> Waker {
        self.inner.waker.clone()
    }

    /// Installs a program: `build` runs on every worker. The program runs until the
    /// lease is dropped (or its poll ends it).
    pub fn install(&self, build: Build) -> Result<Lease, ServiceError> {
        let id = self
            .inner
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let lease = Lease {
            id,
            inner: self.inner.clone(),
        };
        if !self.inner.send(|| Job::Install(id, build.clone())) {
            return Err(ServiceError::Stopped);
        }
        Ok(lease)
    }
}

/// A worker's loop: install what arrives, poll every program, park when idle.
fn work(worker: &mut Worker, jobs: Receiver<Job>) {
    let mut programs: Vec<(u64, Box<dyn Hosted>)> = Vec::new();
    let mut open = true;
    loop {
        while open {
            match jobs.try_recv() {
                Ok(Job::Install(id, build)) => {
                    match std::panic::catch_unwind(AssertUnwindSafe(|| build(worker))) {
                        Ok(program) => programs.push((id, program)),
                        Err(_) => tracing::error!(
                            worker = worker.index(),
                            "a continuous program panicked while being built; not installed"
                        ),
                    }
                }
                Ok(Job::Remove(id, done)) => {
                    programs.retain(|(installed, _)| *installed != id);
                    let _ = done.send(());
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        programs.retain_mut(|(_, program)| {
            match std::panic::catch_unwind(AssertUnwindSafe(|| program.poll(worker))) {
                Ok(running) => running,
                Err(_) => {
                    tracing::error!(
                        worker = worker.index(),
                        "a continuous program panicked; it is stopped"
                    );
                    false
                }
            }
        });
        if !open && programs.is_empty() {
            return;
        }
        worker.step_or_park(Some(IDLE_PARK));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use differential_dataflow::input::InputSession;
    use timely::dataflow::operators::{Exchange, Inspect, Probe};

    /// A counting program fed by worker 0 only, its output gathered on worker 0 —
    /// the shape continuous SQL queries use.
    struct Counter {
        input: Option<InputSession<u64, u64, isize>>,
        probe: timely::dataflow::ProbeHandle<u64>,
        commands: Option<Receiver<Vec<u64>>>,
        epoch: u64,
        done: Sender<u64>,
    }

    impl Hosted for Counter {
        fn poll(&mut self, worker: &mut Worker) -> bool {
            let (Some(input), Some(commands)) = (self.input.as_mut(), self.commands.as_ref())
            else {
                return true;
            };
            loop {
                match commands.try_recv() {
                    Ok(values) => {
                        for v in values {
                            input.insert(v);
                        }
                        self.epoch += 1;
                        input.advance_to(self.epoch);
                        input.flush();
                        while self.probe.less_than(&self.epoch) {
                            worker.step();
                        }
                        let _ = self.done.send(self.epoch);
                    }
                    Err(TryRecvError::Empty) => return true,
                    Err(TryRecvError::Disconnected) => return false,
                }
            }
        }
    }

    #[test]
    fn programs_share_the_workers_and_end_with_their_clients() {
        let service = Service::start(2).expect("service");
        let (out_tx, out_rx) = crossbeam_channel::unbounded::<(u64, isize)>();
        let mut clients = Vec::new();
        let mut leases = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = crossbeam_channel::unbounded::<Vec<u64>>();
            let (done_tx, done_rx) = crossbeam_channel::unbounded::<u64>();
            let slot = Arc::new(Mutex::new(Some((rx, done_tx))));
            let out = out_tx.clone();
            let lease = service
                .install(Arc::new(move |worker: &mut Worker| {
                    let mut input = InputSession::new();
                    let probe = timely::dataflow::ProbeHandle::new();
                    let out = out.clone();
                    worker.dataflow::<u64, _, _>(|scope| {
                        input
                            .to_collection(scope)
                            .map(|v: u64| v % 3)
                            .count()
                            .inner
                            .exchange(|_| 0)
                            .inspect(move |((_key, count), _t, diff)| {
                                let _ = out.send((*count as u64, *diff));
                            })
                            .probe_with(&probe);
                    });
                    let mine = (worker.index() == 0)
                        .then(|| slot.lock().ok().and_then(|mut s| s.take()))
                        .flatten();
                    let (commands, done, input) = match mine {
                        Some((rx, done)) => (Some(rx), done, Some(input)),
                        None => (None, crossbeam_channel::unbounded().0, None),
                    };
                    Box::new(Counter {
                        input,
                        probe,
                        commands,
                        epoch: 0,
                        done,
                    })
                }))
                .expect("install");
            leases.push(lease);
            clients.push((tx, done_rx));
        }
        for (tx, done) in &clients {
            tx.send((0..30).collect()).expect("send");
            service.waker().wake();
            assert_eq!(
                done.recv_timeout(Duration::from_secs(10)).expect("epoch"),
                1
            );
        }
        // Three programs, three groups each of ten values, all seen on worker 0.
        let counts: Vec<(u64, isize)> = out_rx.try_iter().collect();
        assert_eq!(counts.len(), 9, "{counts:?}");
        assert!(counts.iter().all(|&(count, diff)| count == 10 && diff == 1));
        // Dropping a lease ends its program; the others still answer.
        leases.remove(0);
        clients.remove(0);
        let (tx, done) = &clients[0];
        tx.send(vec![0]).expect("send");
        service.waker().wake();
        assert_eq!(
            done.recv_timeout(Duration::from_secs(10)).expect("epoch"),
            2
        );
    }
}
