//! CREATE INDEX / REINDEX: two passes over the table. The first samples
//! rows (reservoir) and counts them; k-means trains the lists on the sample;
//! the second assigns every row to its nearest list (blocked GEMMs on all
//! cores) and keeps the 4-bit code of its rotated residual; then the pages are written, each as a
//! full-page generic WAL record.

use super::pages::{self, ListHead, Locked, Meta, WalChange};
use super::{options, vector};
use crate::engine::ivf::kmeans::{self, SplitMix, Training};
use crate::engine::ivf::rotation::Rotation;
use crate::pg::gucs;
use crate::pg::interrupt::PgInterrupt;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Training rows per list (more gives steadier lists, costs k-means time).
const SAMPLE_PER_LIST: usize = 48;
/// Fewest training rows per list, whatever the budget below says.
const MIN_SAMPLE_PER_LIST: usize = 16;
/// Row-centroid products per k-means iteration (about 1.5 s each on two
/// cores at 384 dimensions): bounds the sample when there are many lists.
const KMEANS_WORK: usize = 400_000_000;
/// Smallest reservoir when the list count is automatic (the sample for
/// 4,000 lists; the exact row count is known only after the scan).
const AUTO_SAMPLE: usize = 100_000;
/// Rows assigned per GEMM batch in the second pass.
const ASSIGN_BATCH: usize = 32_768;
const KMEANS_ITERATIONS: usize = 8;

/// Lists for `rows` rows when the `lists` option is 0. From 100,000 rows:
/// four times the square root (FAISS advises 4 to 16 times; more lists mean
/// fewer entries read for the same recall, at more k-means time). Below:
/// one per 1,000 rows, so that the default `inf_ir.probes` (10) reads every
/// list of a corpus under 10,000 rows and small corpora are searched
/// exactly, and the lists of small corpora stay large.
pub fn auto_lists(rows: u64) -> usize {
    let lists = if rows < 100_000 {
        rows / 1000
    } else {
        (4.0 * (rows as f64).sqrt()) as u64
    };
    lists.max(1) as usize
}

/// Training rows for `lists` lists: 48 per list, fewer when k-means would
/// cost more than `KMEANS_WORK` products an iteration, never fewer than 16.
pub fn training_rows(lists: usize) -> usize {
    (lists * SAMPLE_PER_LIST)
        .min(KMEANS_WORK / lists.max(1))
        .max(lists * MIN_SAMPLE_PER_LIST)
}

struct Pass1 {
    dim: Option<usize>,
    seen: u64,
    cap: usize,
    sample: Vec<f32>,
    rng: SplitMix,
}

struct Pass2 {
    dim: usize,
    centroids: Vec<f32>,
    rotation: Rotation,
    threads: usize,
    tids: Vec<pg_sys::ItemPointerData>,
    batch: Vec<f32>,
    /// Entry bytes per list, concatenated.
    lists: Vec<Vec<u8>>,
    rows: u64,
}

unsafe fn row_vector(datum: pg_sys::Datum, tid: pg_sys::ItemPointer, dim: Option<usize>) -> Vec<f32> {
    let what = format!("the vector of row {}", tid_text(&*tid));
    vector::with_floats(datum, &what, |v| {
        if let Some(dim) = dim {
            if v.len() != dim {
                crate::pg::errors::raise_with(
                    pgrx::PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
                    format!("{what} has {} dimensions; the index's other rows have {dim}", v.len()),
                    "an inf_ivf index holds vectors of one model; index each corpus (model) separately, e.g. with a partial index WHERE corpus_id = ...",
                );
            }
        }
        vector::unit(v, &what)
    })
}

pub fn tid_text(tid: &pg_sys::ItemPointerData) -> String {
    let block = ((tid.ip_blkid.bi_hi as u32) << 16) | tid.ip_blkid.bi_lo as u32;
    format!("({block},{})", tid.ip_posid)
}

/// Where the table scan's rows go, pass by pass.
trait RowSink {
    /// The dimension rows must have, once known.
    fn dim(&self) -> Option<usize>;
    fn take(&mut self, tid: &pg_sys::ItemPointerData, unit: Vec<f32>);
}

impl RowSink for Pass1 {
    fn dim(&self) -> Option<usize> {
        self.dim
    }

    fn take(&mut self, _tid: &pg_sys::ItemPointerData, v: Vec<f32>) {
        let dim = *self.dim.get_or_insert(v.len());
        self.seen += 1;
        if self.sample.len() / dim < self.cap {
            self.sample.extend_from_slice(&v);
        } else {
            // Reservoir sampling: row n replaces a held one with probability cap / n.
            let j = (self.rng.next() % self.seen) as usize;
            if j < self.cap {
                self.sample[j * dim..(j + 1) * dim].copy_from_slice(&v);
            }
        }
    }
}

impl RowSink for Pass2 {
    fn dim(&self) -> Option<usize> {
        Some(self.dim)
    }

    fn take(&mut self, tid: &pg_sys::ItemPointerData, v: Vec<f32>) {
        self.tids.push(*tid);
        self.batch.extend_from_slice(&v);
        if self.tids.len() >= ASSIGN_BATCH {
            self.flush();
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn each_row(
    _index: pg_sys::Relation,
    tid: pg_sys::ItemPointer,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    _alive: bool,
    state: *mut std::ffi::c_void,
) {
    let sink = &mut **(state as *mut &mut dyn RowSink);
    if *isnull {
        return;
    }
    let v = row_vector(*values, tid, sink.dim());
    sink.take(&*tid, v);
}

impl Pass2 {
    fn flush(&mut self) {
        if self.tids.is_empty() {
            return;
        }
        pgrx::check_for_interrupts!();
        // Exact, as for inserts (grouped assignment is for k-means only).
        let nearest = kmeans::nearest_interruptible(&self.batch, self.dim, &self.centroids, self.threads, &PgInterrupt)
            .unwrap_or_else(|e| crate::pg::errors::raise(e));
        // Rotating and encoding is pure arithmetic: all cores, then append.
        let (dim, entry_len) = (self.dim, pages::entry_len(self.dim));
        let chunk = nearest.len().div_ceil(self.threads.max(1)).max(1);
        let encoded: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let (batch, tids, centroids, rotation) = (&self.batch, &self.tids, &self.centroids, &self.rotation);
            let workers: Vec<_> = nearest
                .chunks(chunk)
                .enumerate()
                .map(|(t, part)| {
                    scope.spawn(move || {
                        let (mut out, mut entry) = (Vec::with_capacity(part.len() * entry_len), Vec::new());
                        for (j, (list, _)) in part.iter().enumerate() {
                            let i = t * chunk + j;
                            let centroid = &centroids[*list as usize * dim..(*list as usize + 1) * dim];
                            pages::make_entry(&tids[i], &batch[i * dim..(i + 1) * dim], centroid, rotation, &mut entry);
                            out.extend_from_slice(&entry);
                        }
                        out
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("encoding thread"))
                .collect()
        });
        for (i, (list, _)) in nearest.iter().enumerate() {
            let bytes = &encoded[i / chunk][(i % chunk) * entry_len..(i % chunk + 1) * entry_len];
            self.lists[*list as usize].extend_from_slice(bytes);
        }
        self.rows += self.tids.len() as u64;
        self.tids.clear();
        self.batch.clear();
    }
}

unsafe fn scan_table(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    info: *mut pg_sys::IndexInfo,
    sink: &mut dyn RowSink,
) -> f64 {
    let mut sink: &mut dyn RowSink = sink;
    let state = &mut sink as *mut &mut dyn RowSink as *mut std::ffi::c_void;
    let scan = (*(*heap).rd_tableam)
        .index_build_range_scan
        .expect("table AM builds indexes");
    scan(
        heap,
        index,
        info,
        true,
        false,
        true,
        0,
        pg_sys::InvalidBlockNumber,
        Some(each_row),
        state,
        std::ptr::null_mut(),
    )
}

/// A new build id (the meta page's; backends re-read centroids when it changes).
pub(super) fn new_build_id() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    SplitMix(now ^ ((std::process::id() as u64) << 32)).next()
}

pub unsafe fn check_indexed_column(index: pg_sys::Relation) -> i32 {
    let attnum = *(*(*index).rd_index).indkey.values.as_ptr();
    if attnum <= 0 {
        pgrx::error!("inf_ir: an inf_ivf index is on a real[] column, not an expression");
    }
    attnum as i32
}

#[pg_guard]
pub unsafe extern "C-unwind" fn ambuild(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    info: *mut pg_sys::IndexInfo,
) -> *mut pg_sys::IndexBuildResult {
    check_indexed_column(index);
    if pg_sys::RelationGetNumberOfBlocksInFork(index, pg_sys::ForkNumber::MAIN_FORKNUM) != 0 {
        pgrx::error!(
            "inf_ir: index \"{}\" already contains data",
            pages::relation_name(index)
        );
    }
    let wanted_lists = options::lists(index);
    let threads = gucs::threads();
    let mut pass1 = Pass1 {
        dim: None,
        seen: 0,
        cap: if wanted_lists > 0 {
            training_rows(wanted_lists).max(10_000)
        } else {
            // The table's row estimate (all rows, an upper bound for a partial
            // index) sizes the sample for the lists it will likely get.
            let estimate = (*(*heap).rd_rel).reltuples.max(0.0) as u64;
            training_rows(auto_lists(estimate)).max(AUTO_SAMPLE)
        },
        sample: Vec::new(),
        rng: SplitMix(0x5EED),
    };
    let started = std::time::Instant::now();
    let heap_tuples = scan_table(heap, index, info, &mut pass1);
    let rows = pass1.seen;
    let sampled = started.elapsed();
    let (centroids, dim) = match pass1.dim {
        None => (Vec::new(), 0),
        Some(dim) => {
            let lists = if wanted_lists > 0 {
                wanted_lists
            } else {
                auto_lists(rows)
            };
            let sample = training_subset(&pass1.sample, dim, training_rows(lists), &mut pass1.rng);
            pgrx::check_for_interrupts!();
            let centroids = kmeans::train(
                &sample,
                dim,
                Training {
                    lists,
                    iterations: KMEANS_ITERATIONS,
                    threads,
                    seed: 42,
                },
                &PgInterrupt,
            )
            .unwrap_or_else(|e| crate::pg::errors::raise(e));
            (centroids, dim)
        }
    };
    drop(pass1);
    let trained = started.elapsed();
    let lists = centroids.len().checked_div(dim).unwrap_or(0);
    let mut pass2 = Pass2 {
        dim,
        centroids,
        rotation: Rotation::new(dim, pages::ROTATION_SEED),
        threads,
        tids: Vec::new(),
        batch: Vec::new(),
        lists: vec![Vec::new(); lists],
        rows: 0,
    };
    if lists > 0 {
        scan_table(heap, index, info, &mut pass2);
        pass2.flush();
    }
    let assigned = started.elapsed();
    write_index(index, pg_sys::ForkNumber::MAIN_FORKNUM, &pass2, rows);
    pgrx::debug1!(
        "inf_ir: built index \"{}\": {rows} rows, {lists} lists; sample pass {:.1} s, k-means {:.1} s, assignment pass {:.1} s, pages {:.1} s",
        pages::relation_name(index),
        sampled.as_secs_f64(),
        (trained - sampled).as_secs_f64(),
        (assigned - trained).as_secs_f64(),
        (started.elapsed() - assigned).as_secs_f64()
    );
    let mut result = PgBox::<pg_sys::IndexBuildResult>::alloc0();
    result.heap_tuples = heap_tuples;
    result.index_tuples = pass2.rows as f64;
    result.into_pg()
}

/// At most `want` rows of the reservoir, picked at random (its prefix is
/// not a uniform sample while it was still filling).
fn training_subset(sample: &[f32], dim: usize, want: usize, rng: &mut SplitMix) -> Vec<f32> {
    if sample.len() / dim <= want {
        return sample.to_vec();
    }
    kmeans::random_rows(sample, dim, want, rng)
}

/// Write meta page, data pages of every list, then the directory.
unsafe fn write_index(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type, built: &Pass2, rows: u64) {
    let meta_buffer = Locked::extend(index, fork);
    assert_eq!(meta_buffer.block(), pages::META_BLOCK);
    let dim = built.dim;
    let entry_len = pages::entry_len(dim.max(1));
    let mut heads = Vec::with_capacity(built.lists.len());
    for entries in &built.lists {
        heads.push(write_list(index, fork, entries, entry_len));
        pgrx::check_for_interrupts!();
    }
    let first_directory = if heads.is_empty() {
        pages::INVALID_BLOCK
    } else {
        write_directory(index, fork, &heads, &built.centroids, dim)
    };
    let mut wal = WalChange::start(index);
    let page = wal.page(&meta_buffer, true);
    pages::write_meta(
        page,
        Meta {
            magic: pages::MAGIC,
            version: pages::LAYOUT_VERSION,
            dim: dim as u32,
            lists: heads.len() as u32,
            first_directory,
            _pad: 0,
            build_id: new_build_id(),
            trained_rows: rows,
        },
    );
    wal.finish();
}

/// A chain of new pages of one kind holding `items` in order, each page a
/// full-page WAL record; returns its first and last blocks.
unsafe fn write_chain<'a>(
    index: pg_sys::Relation,
    fork: pg_sys::ForkNumber::Type,
    kind: u16,
    items: impl Iterator<Item = std::borrow::Cow<'a, [u8]>>,
) -> ListHead {
    let mut current = Locked::extend(index, fork);
    let first = current.block();
    let mut wal = WalChange::start(index);
    let mut page = wal.page(&current, true);
    pages::init_page(page, kind);
    for item in items {
        if !pages::has_room(page, item.len()) {
            let next = Locked::extend(index, fork);
            (*pages::opaque(page)).next = next.block();
            wal.finish();
            current = next;
            wal = WalChange::start(index);
            page = wal.page(&current, true);
            pages::init_page(page, kind);
        }
        if !pages::add_item(page, &item) {
            pgrx::error!("inf_ir: an index item of {} bytes does not fit on a page", item.len());
        }
    }
    let last = current.block();
    wal.finish();
    drop(current);
    ListHead {
        head: first,
        insert: last,
    }
}

/// One list's chain of data pages.
unsafe fn write_list(
    index: pg_sys::Relation,
    fork: pg_sys::ForkNumber::Type,
    entries: &[u8],
    entry_len: usize,
) -> ListHead {
    let items = entries.chunks_exact(entry_len).map(std::borrow::Cow::Borrowed);
    write_chain(index, fork, pages::KIND_DATA, items)
}

/// The directory chain; returns its first block.
unsafe fn write_directory(
    index: pg_sys::Relation,
    fork: pg_sys::ForkNumber::Type,
    heads: &[ListHead],
    centroids: &[f32],
    dim: usize,
) -> pg_sys::BlockNumber {
    let items = heads
        .iter()
        .zip(centroids.chunks_exact(dim))
        .map(|(head, centroid)| std::borrow::Cow::Owned(pages::list_item(*head, centroid)));
    write_chain(index, fork, pages::KIND_DIRECTORY, items).head
}

/// An unlogged table's index: the init fork holds an empty meta page.
#[pg_guard]
pub unsafe extern "C-unwind" fn ambuildempty(index: pg_sys::Relation) {
    let buffer = Locked::extend(index, pg_sys::ForkNumber::INIT_FORKNUM);
    pages::write_meta(
        buffer.page(),
        Meta {
            magic: pages::MAGIC,
            version: pages::LAYOUT_VERSION,
            dim: 0,
            lists: 0,
            first_directory: pages::INVALID_BLOCK,
            _pad: 0,
            build_id: new_build_id(),
            trained_rows: 0,
        },
    );
    pg_sys::MarkBufferDirty(buffer.buffer);
    drop(buffer);
    pg_sys::log_newpage_range(index, pg_sys::ForkNumber::INIT_FORKNUM, 0, 1, true);
}
