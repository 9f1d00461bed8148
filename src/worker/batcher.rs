//! Cross-session batching: requests queue here, and one thread runs them,
//! merging queued requests for the same model into one batch under a token
//! budget. While a batch runs, new requests gather behind it, so batches
//! grow with load without a fixed wait; `batch_wait` adds a short wait for
//! company when other sessions are connected.

use super::background_yield::BackgroundYield;
use super::models::HostModel;
use super::stats::Stats;
use crate::engine::embed::batching::plan_batches;
use crate::engine::embed::tokenize::TokenizedText;
use crate::engine::{BatchOptions, EngineError, EngineResult, Interrupt};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type Reply = EngineResult<Vec<Vec<f32>>>;

pub struct Job {
    pub model: Arc<HostModel>,
    pub texts: Vec<TokenizedText>,
    /// Set by the connection thread when its backend goes away.
    pub cancelled: Arc<AtomicBool>,
    pub reply: SyncSender<Reply>,
    pub enqueued: Instant,
    /// A background request (see `EmbedRequest::background`).
    pub background: bool,
}

impl Job {
    pub fn tokens(&self) -> usize {
        self.texts.iter().map(TokenizedText::len).sum()
    }
}

/// What the choice of a batch needs to know about a queued job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Queued {
    pub model: usize,
    pub tokens: usize,
    pub cancelled: bool,
    pub background: bool,
}

/// Which queued jobs (by position) form the next batch: the first live
/// interactive job leads (the first live background job only when no
/// interactive one waits); later live jobs of the same model and kind join
/// while the total stays within `token_budget` (the leader always runs,
/// however large).
pub fn choose_batch(queue: &[Queued], token_budget: usize) -> Vec<usize> {
    let Some(leader) = queue
        .iter()
        .position(|q| !q.cancelled && !q.background)
        .or_else(|| queue.iter().position(|q| !q.cancelled))
    else {
        return Vec::new();
    };
    let kind = queue[leader].background;
    let mut chosen = vec![leader];
    let mut tokens = queue[leader].tokens;
    for (i, q) in queue.iter().enumerate().skip(leader + 1) {
        if !q.cancelled && q.background == kind && q.model == queue[leader].model && tokens + q.tokens <= token_budget {
            tokens += q.tokens;
            chosen.push(i);
        }
    }
    chosen
}

pub struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    arrived: Condvar,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            jobs: Mutex::new(VecDeque::new()),
            arrived: Condvar::new(),
        }
    }
}

impl Queue {
    pub fn push(&self, job: Job, stats: &Stats) {
        self.jobs.lock().push_back(job);
        Stats::add(&stats.queue_length, 1);
        self.arrived.notify_one();
    }

    /// Block until there is work; return the next batch's jobs.
    fn next_batch(&self, batch: BatchOptions, wait: Duration, stats: &Stats) -> Vec<Job> {
        let mut jobs = self.jobs.lock();
        loop {
            // Jobs whose backend left are dropped unrun.
            let before = jobs.len();
            jobs.retain(|j| !j.cancelled.load(Ordering::Acquire));
            Stats::sub(&stats.queue_length, (before - jobs.len()) as u64);
            if let Some(first) = jobs.front() {
                let deadline = first.enqueued + wait;
                let queued_tokens: usize = jobs.iter().map(Job::tokens).sum();
                let company_possible = Stats::get(&stats.connections) > jobs.len() as u64;
                if company_possible && queued_tokens < batch.token_budget && Instant::now() < deadline {
                    self.arrived.wait_until(&mut jobs, deadline);
                    continue;
                }
                break;
            }
            self.arrived.wait(&mut jobs);
        }
        take_batch(&mut jobs, batch.token_budget, stats)
    }

    /// The next batch of interactive jobs waiting now, without waiting for
    /// company; empty when none waits. A background batch calls this
    /// between its pieces.
    fn waiting_interactive(&self, batch: BatchOptions, stats: &Stats) -> Vec<Job> {
        let mut jobs = self.jobs.lock();
        if jobs
            .iter()
            .any(|j| !j.background && !j.cancelled.load(Ordering::Acquire))
        {
            take_batch(&mut jobs, batch.token_budget, stats)
        } else {
            Vec::new()
        }
    }
}

/// Remove the jobs `choose_batch` picks from the queue.
fn take_batch(jobs: &mut VecDeque<Job>, token_budget: usize, stats: &Stats) -> Vec<Job> {
    let view: Vec<Queued> = jobs
        .iter()
        .map(|j| Queued {
            model: Arc::as_ptr(&j.model) as usize,
            tokens: j.tokens(),
            cancelled: j.cancelled.load(Ordering::Acquire),
            background: j.background,
        })
        .collect();
    let chosen = choose_batch(&view, token_budget);
    // Remove from the back so earlier positions stay valid.
    let mut taken: Vec<Job> = chosen.iter().rev().filter_map(|&i| jobs.remove(i)).collect();
    taken.reverse();
    Stats::sub(&stats.queue_length, taken.len() as u64);
    taken
}

/// A merged batch stops early only when every one of its backends left.
struct BatchInterrupt<'a> {
    jobs: &'a [Job],
}

impl Interrupt for BatchInterrupt<'_> {
    fn pending(&self) -> bool {
        self.jobs.iter().all(|j| j.cancelled.load(Ordering::Acquire))
    }

    fn checkpoint(&self) -> EngineResult<()> {
        if self.pending() {
            Err(EngineError::cancelled())
        } else {
            Ok(())
        }
    }
}

/// The batcher thread's loop: forever take a batch, run it, answer each job.
pub fn run_forever(queue: &Queue, batch: BatchOptions, wait: Duration, give_way: &BackgroundYield, stats: &Stats) -> ! {
    loop {
        let jobs = queue.next_batch(batch, wait, stats);
        if !jobs.is_empty() {
            run_batch(queue, jobs, batch, give_way, stats);
        }
    }
}

fn run_batch(queue: &Queue, mut jobs: Vec<Job>, batch: BatchOptions, give_way: &BackgroundYield, stats: &Stats) {
    let model = jobs[0].model.clone();
    let counts: Vec<usize> = jobs.iter().map(|j| j.texts.len()).collect();
    let texts: Vec<TokenizedText> = jobs.iter_mut().flat_map(|j| std::mem::take(&mut j.texts)).collect();
    let tokens: usize = texts.iter().map(TokenizedText::len).sum();
    let result = if jobs[0].background {
        embed_yielding(queue, &model, texts, &jobs, batch, give_way, stats)
    } else {
        busy(stats, jobs.len(), || {
            model.embed_tokenized(&texts, batch, &BatchInterrupt { jobs: &jobs })
        })
    };
    Stats::add(&stats.batches, 1);
    Stats::add(&stats.tokens, tokens as u64);
    match result {
        Ok(vectors) => {
            let mut vectors = vectors.into_iter();
            for (job, n) in jobs.iter().zip(counts) {
                let mine: Vec<Vec<f32>> = vectors.by_ref().take(n).collect();
                // A send fails only when the backend already left.
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(e) => {
            if e.kind != crate::engine::ErrorKind::Cancelled {
                Stats::add(&stats.errors, 1);
            }
            for job in &jobs {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

/// One model call, counted in the host's running jobs and busy time.
fn busy(stats: &Stats, jobs: usize, call: impl FnOnce() -> Reply) -> Reply {
    let started = Instant::now();
    stats.running.store(jobs as u64, Ordering::Relaxed);
    let result = call();
    stats.running.store(0, Ordering::Relaxed);
    Stats::add(&stats.busy_nanos, started.elapsed().as_nanos() as u64);
    result
}

/// A background batch in pieces cut by the model's own plan (sorted by
/// length, so no more padding than one call), under a smaller budget. Before
/// each piece: the interactive batches that arrived (an interactive request
/// waits for one piece at most, whatever the background request's size),
/// then a wait while the rest of the machine wants the cores (`give_way`).
fn embed_yielding(
    queue: &Queue,
    model: &HostModel,
    texts: Vec<TokenizedText>,
    jobs: &[Job],
    batch: BatchOptions,
    give_way: &BackgroundYield,
    stats: &Stats,
) -> Reply {
    let lengths: Vec<usize> = texts.iter().map(TokenizedText::len).collect();
    let mut texts: Vec<Option<TokenizedText>> = texts.into_iter().map(Some).collect();
    let mut result: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
    let interrupt = BatchInterrupt { jobs };
    let run_interactive = || {
        loop {
            let waiting = queue.waiting_interactive(batch, stats);
            if waiting.is_empty() {
                break;
            }
            run_batch(queue, waiting, batch, give_way, stats);
        }
        interrupt.checkpoint()
    };
    // At most the default budget, whatever `inf_ir.batch_tokens` says: a
    // piece is what an interactive request or the application's own work
    // may wait for (about 0.5 s for all-MiniLM-L6-v2 on two cores).
    let piece_budget = batch.token_budget.min(BatchOptions::default().token_budget);
    for piece in plan_batches(&lengths, piece_budget, batch.max_rows) {
        run_interactive()?;
        let waited = give_way.wait_for_cores(run_interactive)?;
        Stats::add(&stats.background_wait_nanos, waited.as_nanos() as u64);
        let piece_texts: Vec<TokenizedText> = piece
            .iter()
            .map(|&i| texts[i].take().expect("each text in one piece"))
            .collect();
        let vectors = give_way.piece(|| {
            busy(stats, jobs.len(), || {
                model.embed_tokenized(&piece_texts, batch, &interrupt)
            })
        });
        for (i, v) in piece.into_iter().zip(vectors?) {
            result[i] = v;
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(model: usize, tokens: usize) -> Queued {
        Queued {
            model,
            tokens,
            cancelled: false,
            background: false,
        }
    }

    #[test]
    fn interactive_jobs_go_before_background_ones_and_never_share_a_batch() {
        let mut queue = [q(1, 10), q(1, 10), q(1, 10), q(1, 10)];
        queue[0].background = true;
        queue[1].background = true;
        assert_eq!(choose_batch(&queue, 100), vec![2, 3]);
        queue[2].cancelled = true;
        queue[3].cancelled = true;
        assert_eq!(choose_batch(&queue, 100), vec![0, 1]);
    }

    #[test]
    fn merges_same_model_within_budget() {
        let queue = [q(1, 100), q(1, 200), q(2, 10), q(1, 300), q(1, 50)];
        assert_eq!(choose_batch(&queue, 400), vec![0, 1, 4]);
        assert_eq!(choose_batch(&queue, 10_000), vec![0, 1, 3, 4]);
    }

    #[test]
    fn leader_runs_even_over_budget() {
        assert_eq!(choose_batch(&[q(1, 5000), q(1, 1)], 100), vec![0]);
    }

    #[test]
    fn skips_cancelled_jobs() {
        let mut queue = [q(1, 10), q(1, 10), q(1, 10)];
        queue[0].cancelled = true;
        queue[2].cancelled = true;
        assert_eq!(choose_batch(&queue, 100), vec![1]);
        queue[1].cancelled = true;
        assert!(choose_batch(&queue, 100).is_empty());
    }
}
