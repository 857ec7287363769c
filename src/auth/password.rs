//! Argon2id hashing and verification on dedicated OS threads, so tens of
//! milliseconds of memory-hard work never stall the async workers that proxy.
//!
//! A bounded queue feeds the threads; when it is full a request is refused at
//! once ([`PasswordError::Busy`], answered 503) rather than queued without end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::oneshot;

use crate::config::{HashPriority, PasswordConfig};

/// Why a password operation could not give an answer. Never carries a password.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Every worker is busy and the queue is full.
    #[error("password hashing queue is full")]
    Busy,
    #[error("password workers have stopped")]
    Stopped,
    #[error("invalid argon2 parameters ([auth.password]): {0}")]
    Params(argon2::Error),
    #[error("cannot start password worker thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// A stored hash that is not a PHC string argon2 understands.
    #[error("unreadable stored password hash: {0}")]
    Malformed(argon2::password_hash::Error),
    #[error("password hashing failed: {0}")]
    Hash(argon2::password_hash::Error),
}

/// The result of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The password is the one the hash was made from.
    pub matches: bool,
    /// The password matched but the hash uses other parameters than the
    /// configured ones: store a fresh hash (rehash-on-login).
    pub needs_rehash: bool,
}

/// The argon2 worker threads and their queue. Dropping the pool closes the
/// queue; the threads finish their current job and exit.
pub struct PasswordPool {
    jobs: SyncSender<Job>,
    /// A hash of a random password with the configured parameters, made at
    /// start: verifying against it costs what a real verification costs, so
    /// an unknown email cannot be told apart by timing.
    dummy: String,
    /// Jobs accepted and not yet taken by a thread (the metrics' queue depth).
    pending: Arc<AtomicUsize>,
}

/// Work for a thread. Deliberately not `Debug`: it holds a password.
enum Job {
    Hash {
        password: String,
        reply: oneshot::Sender<Result<String, PasswordError>>,
    },
    Verify {
        password: String,
        phc: String,
        reply: oneshot::Sender<Result<Verdict, PasswordError>>,
    },
    /// Holds its worker until `release` is dropped or sent to.
    #[cfg(test)]
    Block {
        started: mpsc::Sender<()>,
        release: Receiver<()>,
    },
}

impl PasswordPool {
    /// Starts `hash_workers` threads (at least one) behind a queue of
    /// `hash_queue` jobs, and computes the dummy hash.
    pub fn new(config: &PasswordConfig) -> Result<Self, PasswordError> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(PasswordError::Params)?;
        let hasher = Hasher {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        };
        let dummy = hasher.hash(&hex_random())?;
        let (jobs, queue) = mpsc::sync_channel(config.hash_queue);
        let queue = Arc::new(Mutex::new(queue));
        let pending = Arc::new(AtomicUsize::new(0));
        for n in 0..config.hash_workers.max(1) {
            let queue = Arc::clone(&queue);
            let pending = Arc::clone(&pending);
            let hasher = hasher.clone();
            let priority = config.hash_priority;
            std::thread::Builder::new()
                .name(format!("authgate-argon2-{n}"))
                .spawn(move || {
                    take_priority(priority);
                    work(&queue, &hasher, &pending)
                })
                .map_err(PasswordError::Spawn)?;
        }
        Ok(Self {
            jobs,
            dummy,
            pending,
        })
    }

    /// Jobs waiting for a thread.
    pub fn queue_depth(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// The PHC string of `password`, with a fresh random salt.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let answer = self.submit_hash(password)?;
        answer.await.map_err(|_| PasswordError::Stopped)?
    }

    /// Checks `password` against a stored PHC string.
    pub async fn verify(&self, password: String, phc: String) -> Result<Verdict, PasswordError> {
        let answer = self.submit_verify(password, phc)?;
        answer.await.map_err(|_| PasswordError::Stopped)?
    }

    /// Does the work of a verification that cannot succeed, for logins to
    /// unknown accounts. Always `Ok(false)` unless the pool is busy or gone.
    pub async fn verify_dummy(&self, password: String) -> Result<bool, PasswordError> {
        let verdict = self.verify(password, self.dummy.clone()).await?;
        Ok(verdict.matches)
    }

    fn submit_hash(
        &self,
        password: String,
    ) -> Result<oneshot::Receiver<Result<String, PasswordError>>, PasswordError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash { password, reply })?;
        Ok(answer)
    }

    fn submit_verify(
        &self,
        password: String,
        phc: String,
    ) -> Result<oneshot::Receiver<Result<Verdict, PasswordError>>, PasswordError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify {
            password,
            phc,
            reply,
        })?;
        Ok(answer)
    }

    /// Never waits: a full queue is an answer (503), not a reason to block
    /// an async worker.
    fn submit(&self, job: Job) -> Result<(), PasswordError> {
        // Counted before the send, so a worker's decrement never comes first.
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.jobs.try_send(job).map_err(|error| {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            match error {
                TrySendError::Full(_) => PasswordError::Busy,
                TrySendError::Disconnected(_) => PasswordError::Stopped,
            }
        })
    }
}

/// The configured argon2 instance, one copy per thread.
#[derive(Clone)]
struct Hasher {
    argon2: Argon2<'static>,
}

impl Hasher {
    fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let salt =
            SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(PasswordError::Hash)?;
        self.argon2
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(PasswordError::Hash)
    }

    fn verify(&self, password: &str, phc: &str) -> Result<Verdict, PasswordError> {
        let stored = PasswordHash::new(phc).map_err(PasswordError::Malformed)?;
        // Verification uses the parameters written in the stored hash, so
        // hashes made under an older configuration keep working.
        match self.argon2.verify_password(password.as_bytes(), &stored) {
            Ok(()) => Ok(Verdict {
                matches: true,
                needs_rehash: !self.is_current(&stored),
            }),
            Err(argon2::password_hash::Error::Password) => Ok(Verdict {
                matches: false,
                needs_rehash: false,
            }),
            Err(error) => Err(PasswordError::Malformed(error)),
        }
    }

    /// True when `stored` was made with exactly the configured algorithm,
    /// version and costs.
    fn is_current(&self, stored: &PasswordHash) -> bool {
        let configured = self.argon2.params();
        stored.algorithm == Algorithm::Argon2id.ident()
            && stored.version == Some(Version::V0x13.into())
            && Params::try_from(stored).is_ok_and(|params| {
                params.m_cost() == configured.m_cost()
                    && params.t_cost() == configured.t_cost()
                    && params.p_cost() == configured.p_cost()
            })
    }
}

/// Puts this hashing thread in its configured scheduling class, so when a
/// login flood and proxied traffic compete for a core, the scheduler serves
/// the proxied requests first. The default, the idle class, is the only one
/// in which a woken request worker takes the core from a hash at once: a
/// batch thread at a lowered nice (`low`) keeps a core it got until the next
/// scheduler tick, which put 4-5 ms on the proxied p99 during the bench's
/// login flood (bench/RESULTS.md, "Issue 12, fifth round").
fn take_priority(priority: HashPriority) {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
    };
    let (policy, priority) = match priority {
        HashPriority::Normal => return,
        // The idle class has no levels within it.
        HashPriority::Idle => (NormalThreadSchedulePolicy::Idle, ThreadPriority::Min),
        // 25 of the crate's 0-99 scale is nice 9.
        HashPriority::Low => match ThreadPriorityValue::try_from(25u8) {
            Ok(value) => (
                NormalThreadSchedulePolicy::Batch,
                ThreadPriority::Crossplatform(value),
            ),
            Err(_) => return,
        },
    };
    let lowered = set_thread_priority_and_policy(
        thread_native_id(),
        priority,
        ThreadSchedulePolicy::Normal(policy),
    );
    if let Err(err) = lowered {
        // Not fatal: hashing works at normal priority, only less politely.
        tracing::warn!(error = ?err, "could not lower the argon2 threads' priority");
    }
}

/// A thread's life: take jobs until the pool is dropped.
fn work(queue: &Mutex<Receiver<Job>>, hasher: &Hasher, pending: &AtomicUsize) {
    loop {
        // Idle threads queue on the lock; the one holding it waits for a job.
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else {
            return;
        };
        // Taken before any answer is sent, so an answered caller never
        // still counts as waiting.
        pending.fetch_sub(1, Ordering::Relaxed);
        match job {
            Job::Hash { password, reply } => {
                // The caller gave up (client gone): skip the expensive part.
                if !reply.is_closed() {
                    let _ = reply.send(hasher.hash(&password));
                }
            }
            Job::Verify {
                password,
                phc,
                reply,
            } => {
                if !reply.is_closed() {
                    let _ = reply.send(hasher.verify(&password, &phc));
                }
            }
            #[cfg(test)]
            Job::Block { started, release } => {
                let _ = started.send(());
                let _ = release.recv();
            }
        }
    }
}

/// A throwaway password for the dummy hash; its value never matters.
fn hex_random() -> String {
    crate::store::hex(&rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(iterations: u32, workers: usize, queue: usize) -> PasswordConfig {
        PasswordConfig {
            memory_kib: 1024,
            iterations,
            parallelism: 1,
            hash_workers: workers,
            hash_queue: queue,
            hash_priority: HashPriority::Normal,
        }
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let pool = PasswordPool::new(&config(1, 2, 8)).unwrap();
        let phc = pool.hash("correct horse".to_owned()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        let right = pool
            .verify("correct horse".to_owned(), phc.clone())
            .await
            .unwrap();
        assert_eq!(
            right,
            Verdict {
                matches: true,
                needs_rehash: false
            }
        );
        let wrong = pool
            .verify("battery".to_owned(), phc.clone())
            .await
            .unwrap();
        assert!(!wrong.matches);
        // Salts differ, so the same password hashes differently.
        assert_ne!(pool.hash("correct horse".to_owned()).await.unwrap(), phc);
    }

    #[tokio::test]
    async fn changed_parameters_ask_for_a_rehash() {
        let old = PasswordPool::new(&config(1, 1, 4)).unwrap();
        let phc = old.hash("correct horse".to_owned()).await.unwrap();
        let new = PasswordPool::new(&config(2, 1, 4)).unwrap();
        let verdict = new.verify("correct horse".to_owned(), phc).await.unwrap();
        assert_eq!(
            verdict,
            Verdict {
                matches: true,
                needs_rehash: true
            }
        );
    }

    #[tokio::test]
    async fn dummy_verification_fails() {
        let pool = PasswordPool::new(&config(1, 1, 4)).unwrap();
        assert!(!pool.verify_dummy("anything".to_owned()).await.unwrap());
    }

    #[tokio::test]
    async fn a_malformed_stored_hash_is_an_error() {
        let pool = PasswordPool::new(&config(1, 1, 4)).unwrap();
        let result = pool.verify("pw".to_owned(), "not-a-phc".to_owned()).await;
        assert!(matches!(result, Err(PasswordError::Malformed(_))));
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        let pool = PasswordPool::new(&config(1, 1, 1)).unwrap();
        let (started, running) = mpsc::channel();
        let (release, held) = mpsc::channel();
        pool.submit(Job::Block {
            started,
            release: held,
        })
        .unwrap();
        running.recv().unwrap();
        assert_eq!(pool.queue_depth(), 0, "a running job is not waiting");
        // The worker is held; one job fits in the queue, the next does not.
        let queued = pool.submit_hash("first".to_owned()).unwrap();
        assert!(matches!(
            pool.hash("second".to_owned()).await,
            Err(PasswordError::Busy)
        ));
        assert_eq!(pool.queue_depth(), 1, "a refused job does not count");
        release.send(()).unwrap();
        assert!(queued.await.unwrap().is_ok());
        assert_eq!(pool.queue_depth(), 0);
        assert!(pool.hash("third".to_owned()).await.is_ok());
    }

    #[test]
    fn bad_parameters_are_refused() {
        let mut bad = config(1, 1, 1);
        bad.memory_kib = 1;
        assert!(matches!(
            PasswordPool::new(&bad),
            Err(PasswordError::Params(_))
        ));
    }
}
