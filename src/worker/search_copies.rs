//! The model host's copies of inf_ivf indexes on the GPU (one CUDA context
//! per server, in this process). A session loads a copy (every row the
//! index holds, by heap TID, read from the table); from the moment a load
//! begins, every backend's aminsert sends its rows here and VACUUM sends the
//! rows it removes, so the copy follows the index. Searches get float16
//! candidates; the session re-scores them from the table in its own
//! snapshot, so rows it cannot see never count and a stale vector here can
//! only cost a re-ask, never a wrong row.
//!
//! Backends learn whether they must send writes from a marker file beside
//! the socket: it exists from the first load on, and a new host removes it.

use super::copy_protocol::{CopyKey, CopyRequest, CopyResponse, CopyState};
use super::protocol::SearchCopyStatus;
use crate::engine::error::ErrorKind;
use crate::engine::gpu::device::DeviceState;
use crate::engine::gpu::emulated::EmulatedSource;
use crate::engine::gpu::search::SearchStore;
use crate::engine::gpu::store::{corpus_bytes, too_large_for, DeviceStore};
use crate::engine::gpu::top_k_kernel::MAX_K;
use crate::engine::{EngineError, EngineResult};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

/// The marker file, relative to the data directory (beside the socket).
pub const MARKER_PATH: &str = "pg_stat_tmp/inf_ir_search_copies";

/// The environment variable that makes the host keep copies in the float16
/// emulation when it has no GPU: for the tests of search from the server.
pub const EMULATION_VARIABLE: &str = "INF_IR_GPU_EMULATION";
/// With the emulation: its "device memory" in bytes (unlimited without),
/// so that tests can see a corpus that does not fit.
pub const EMULATION_MEMORY_VARIABLE: &str = "INF_IR_GPU_EMULATION_MEMORY";

/// How the host makes a copy's store.
#[derive(Debug, Clone, PartialEq)]
pub enum Opener {
    Cuda { ordinal: usize, description: String },
    Emulated { memory: Option<usize> },
    Unavailable(String),
}

impl Opener {
    /// From the device probe; the emulation only where there is no GPU and
    /// the environment asks for it (`emulation`: Some(memory limit)).
    pub fn new(device: &DeviceState, emulation: Option<Option<usize>>) -> Self {
        match device {
            DeviceState::Cuda { ordinal, .. } => Opener::Cuda {
                ordinal: *ordinal,
                description: device.to_string(),
            },
            DeviceState::Cpu { .. } if emulation.is_some() => Opener::Emulated {
                memory: emulation.flatten(),
            },
            DeviceState::Cpu { reason } => Opener::Unavailable(reason.clone()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Opener::Cuda { description, .. } => description.clone(),
            Opener::Emulated { .. } => format!("emulated (float16 on the CPU, {EMULATION_VARIABLE}=1)"),
            Opener::Unavailable(reason) => format!("cpu ({reason})"),
        }
    }

    /// A store for `rows` rows; `used`: bytes the other copies hold (the
    /// driver knows it on a device; the emulation is told).
    fn open(&self, dimension: usize, rows: usize, used: usize) -> EngineResult<Box<dyn SearchStore>> {
        // Room for the rows announced and the inserts of a while.
        let capacity = rows + rows / 8;
        match self {
            Opener::Cuda { ordinal, .. } => Ok(Box::new(DeviceStore::open(*ordinal, dimension, capacity)?)),
            Opener::Emulated { memory: Some(memory) } if used + corpus_bytes(capacity, dimension) > *memory => {
                Err(too_large_for(capacity, dimension, memory.saturating_sub(used), 0))
            }
            Opener::Emulated { .. } => Ok(Box::new(EmulatedSource::new(dimension, capacity))),
            Opener::Unavailable(reason) => Err(EngineError::new(ErrorKind::Device, reason.clone())),
        }
    }
}

enum Phase {
    /// Loaded by `connection`; rows written since the load began are
    /// `touched`: the load's (older) reading of them is skipped.
    Loading {
        connection: u64,
        touched: HashSet<u64>,
    },
    Ready,
}

struct Copy {
    store: Box<dyn SearchStore>,
    phase: Phase,
    last_used: Instant,
    searches: u64,
}

pub struct SearchCopies {
    opener: Opener,
    copies: Mutex<HashMap<CopyKey, Copy>>,
    marker: PathBuf,
}

fn done() -> CopyResponse {
    CopyResponse::Done
}

fn state(s: CopyState) -> CopyResponse {
    CopyResponse::State(s)
}

impl SearchCopies {
    /// A host's copies: none yet, so a marker left by an earlier host goes.
    pub fn new(opener: Opener, marker: PathBuf) -> Self {
        let _ = std::fs::remove_file(&marker);
        SearchCopies {
            opener,
            copies: Mutex::new(HashMap::new()),
            marker,
        }
    }

    pub fn describe(&self) -> String {
        self.opener.describe()
    }

    /// Answer one request from connection number `connection`.
    pub fn handle(&self, connection: u64, request: CopyRequest) -> EngineResult<CopyResponse> {
        match request {
            CopyRequest::State { key, device_only } => Ok(state(self.state(&key, device_only))),
            CopyRequest::Candidates { key, queries, wanted } => self.candidates(&key, &queries, wanted as usize),
            CopyRequest::LoadBegin { key, dimension, rows } => {
                self.begin_load(key, dimension as usize, rows as usize, connection)
            }
            CopyRequest::LoadRows { key, ids, vectors } => self.load_rows(&key, connection, &ids, &vectors),
            CopyRequest::LoadEnd { key } => self.end_load(&key, connection),
            CopyRequest::Append { key, ids, vectors } => Ok(self.write(&key, &ids, |s| s.store(&ids, &vectors))),
            CopyRequest::Remove { key, ids } => Ok(self.write(&key, &ids, |s| s.remove(&ids))),
        }
    }

    fn state(&self, key: &CopyKey, device_only: bool) -> CopyState {
        match &self.opener {
            Opener::Unavailable(reason) => return CopyState::Unavailable { reason: reason.clone() },
            Opener::Emulated { .. } if device_only => {
                return CopyState::Unavailable {
                    reason: "the host has no CUDA device, only the emulation that tests use".into(),
                }
            }
            _ => {}
        }
        match self.copies.lock().get(key) {
            None => CopyState::Missing,
            Some(Copy {
                phase: Phase::Loading { .. },
                ..
            }) => CopyState::Loading,
            Some(copy) => ready(copy, &self.opener),
        }
    }

    fn candidates(&self, key: &CopyKey, queries: &[f32], wanted: usize) -> EngineResult<CopyResponse> {
        let mut copies = self.copies.lock();
        let Some(copy) = copies.get_mut(key).filter(|c| matches!(c.phase, Phase::Ready)) else {
            return Ok(state(CopyState::Missing));
        };
        if wanted == 0 || wanted > MAX_K {
            return Err(EngineError::invalid(format!(
                "a search copy returns 1 to {MAX_K} candidates, not {wanted}"
            )));
        }
        if copy.store.dimension() == 0 || !queries.len().is_multiple_of(copy.store.dimension()) {
            return Err(EngineError::invalid(format!(
                "{} query floats for a copy of dimension {}",
                queries.len(),
                copy.store.dimension()
            )));
        }
        copy.last_used = Instant::now();
        copy.searches += 1;
        match copy.store.candidates(queries, wanted) {
            Ok(lists) => Ok(CopyResponse::Candidates(lists)),
            Err(e) => {
                // The copy no longer answers: drop it; the session searches on the CPU.
                copies.remove(key);
                Err(e)
            }
        }
    }

    fn begin_load(&self, key: CopyKey, dimension: usize, rows: usize, connection: u64) -> EngineResult<CopyResponse> {
        if dimension == 0 {
            return Err(EngineError::invalid("a search copy needs a dimension above 0"));
        }
        let mut copies = self.copies.lock();
        if let Some(copy) = copies.get(&key) {
            return Ok(state(match copy.phase {
                Phase::Loading { .. } => CopyState::Loading,
                Phase::Ready => ready(copy, &self.opener),
            }));
        }
        // An earlier build of the same index (before a REINDEX or TRUNCATE) is never searched again.
        copies.retain(|k, _| k.database != key.database || k.index != key.index);
        let store = loop {
            let used = copies.values().map(|c| c.store.resident_bytes()).sum();
            match self.opener.open(dimension, rows, used) {
                Ok(store) => break store,
                // Too little memory: make room by dropping the copy used least recently.
                Err(e) if e.kind == ErrorKind::OutOfMemory => {
                    let oldest = copies
                        .iter()
                        .filter(|(_, c)| matches!(c.phase, Phase::Ready))
                        .min_by_key(|(_, c)| c.last_used)
                        .map(|(k, _)| *k);
                    match oldest {
                        Some(k) => copies.remove(&k),
                        None => return Ok(state(CopyState::Unavailable { reason: e.to_string() })),
                    };
                }
                Err(e) => return Ok(state(CopyState::Unavailable { reason: e.to_string() })),
            }
        };
        // Before the first row is read: from now on every write is sent here.
        std::fs::write(&self.marker, b"").map_err(|e| {
            EngineError::worker(format!(
                "cannot write the marker {} that asks backends for their index writes: {e}",
                self.marker.display()
            ))
        })?;
        copies.insert(
            key,
            Copy {
                store,
                phase: Phase::Loading {
                    connection,
                    touched: HashSet::new(),
                },
                last_used: Instant::now(),
                searches: 0,
            },
        );
        Ok(done())
    }

    fn loading<'a>(
        copies: &'a mut HashMap<CopyKey, Copy>,
        key: &CopyKey,
        connection: u64,
    ) -> EngineResult<&'a mut Copy> {
        match copies.get_mut(key) {
            Some(copy) if matches!(copy.phase, Phase::Loading { connection: c, .. } if c == connection) => Ok(copy),
            _ => Err(EngineError::worker(
                "this connection is not loading that search copy (it was dropped: a device error, or a REINDEX)",
            )),
        }
    }

    fn load_rows(&self, key: &CopyKey, connection: u64, ids: &[u64], vectors: &[f32]) -> EngineResult<CopyResponse> {
        let mut copies = self.copies.lock();
        let copy = Self::loading(&mut copies, key, connection)?;
        let Phase::Loading { touched, .. } = &copy.phase else {
            unreachable!("checked by loading()")
        };
        let d = copy.store.dimension();
        if vectors.len() != ids.len() * d {
            return Err(EngineError::invalid(format!(
                "{} ids but {} floats: each row needs {d}",
                ids.len(),
                vectors.len()
            )));
        }
        let (mut keep_ids, mut keep_vectors) = (Vec::with_capacity(ids.len()), Vec::with_capacity(vectors.len()));
        for (i, id) in ids.iter().enumerate() {
            if !touched.contains(id) {
                keep_ids.push(*id);
                keep_vectors.extend_from_slice(&vectors[i * d..(i + 1) * d]);
            }
        }
        if let Err(e) = copy.store.store(&keep_ids, &keep_vectors) {
            copies.remove(key);
            return Err(e);
        }
        Ok(done())
    }

    fn end_load(&self, key: &CopyKey, connection: u64) -> EngineResult<CopyResponse> {
        let mut copies = self.copies.lock();
        let copy = Self::loading(&mut copies, key, connection)?;
        copy.phase = Phase::Ready;
        Ok(state(ready(copy, &self.opener)))
    }

    /// An index write: applied to the copy if there is one. A copy that
    /// cannot take it no longer matches its index and is dropped (the next
    /// search loads it again), so the writer never fails for it.
    fn write(
        &self,
        key: &CopyKey,
        ids: &[u64],
        apply: impl FnOnce(&mut dyn SearchStore) -> EngineResult<()>,
    ) -> CopyResponse {
        let mut copies = self.copies.lock();
        let Some(copy) = copies.get_mut(key) else {
            return done();
        };
        if let Phase::Loading { touched, .. } = &mut copy.phase {
            touched.extend(ids.iter().copied());
        }
        if let Err(e) = apply(copy.store.as_mut()) {
            super::host::log(&format!(
                "dropped the search copy of index {} (database {}): {e}",
                key.index, key.database
            ));
            copies.remove(key);
        }
        done()
    }

    /// A connection ended: loads it had not finished are dropped.
    pub fn connection_closed(&self, connection: u64) {
        self.copies
            .lock()
            .retain(|_, c| !matches!(c.phase, Phase::Loading { connection: c, .. } if c == connection));
    }

    pub fn status(&self) -> Vec<SearchCopyStatus> {
        let mut list: Vec<SearchCopyStatus> = self
            .copies
            .lock()
            .iter()
            .map(|(key, copy)| SearchCopyStatus {
                database: key.database,
                index: key.index,
                state: match copy.phase {
                    Phase::Loading { .. } => "loading".into(),
                    Phase::Ready => "ready".into(),
                },
                rows: copy.store.len() as u64,
                bytes: copy.store.resident_bytes() as u64,
                searches: copy.searches,
            })
            .collect();
        list.sort_by_key(|s| (s.database, s.index));
        list
    }
}

fn ready(copy: &Copy, opener: &Opener) -> CopyState {
    CopyState::Ready {
        rows: copy.store.len() as u64,
        max_norm: copy.store.max_norm(),
        dimension: copy.store.dimension() as u32,
        emulated: matches!(opener, Opener::Emulated { .. }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gpu::exact::Candidate;

    const KEY: CopyKey = CopyKey {
        database: 1,
        index: 2,
        build: 3,
    };

    /// A directory of its own per test, removed at the end.
    struct TestDir(PathBuf);

    impl TestDir {
        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tempdir() -> TestDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "inf_ir_copies_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }

    fn copies(dir: &TestDir) -> SearchCopies {
        SearchCopies::new(Opener::Emulated { memory: None }, dir.path().join("marker"))
    }

    fn ids_of(response: CopyResponse) -> Vec<u64> {
        match response {
            CopyResponse::Candidates(lists) => lists[0].iter().map(|c: &Candidate| c.id).collect(),
            other => panic!("{other:?}"),
        }
    }

    fn ask(c: &SearchCopies, query: [f32; 2], wanted: u32) -> CopyResponse {
        c.handle(
            9,
            CopyRequest::Candidates {
                key: KEY,
                queries: query.to_vec(),
                wanted,
            },
        )
        .unwrap()
    }

    #[test]
    fn writes_during_a_load_win_over_the_loads_older_reading() {
        let dir = tempdir();
        let c = copies(&dir);
        assert!(!dir.path().join("marker").exists());
        // Writes before any load are ignored: there is nothing to follow.
        let append =
            |ids: Vec<u64>, vectors: Vec<f32>| c.handle(7, CopyRequest::Append { key: KEY, ids, vectors }).unwrap();
        assert_eq!(append(vec![1], vec![1.0, 0.0]), CopyResponse::Done);
        assert_eq!(
            c.handle(
                1,
                CopyRequest::State {
                    key: KEY,
                    device_only: false
                }
            )
            .unwrap(),
            state(CopyState::Missing)
        );
        let begin = CopyRequest::LoadBegin {
            key: KEY,
            dimension: 2,
            rows: 3,
        };
        assert_eq!(c.handle(1, begin.clone()).unwrap(), CopyResponse::Done);
        assert!(
            dir.path().join("marker").exists(),
            "backends must send writes from now on"
        );
        // A second loader is told to wait; searches see no copy yet.
        assert_eq!(c.handle(2, begin).unwrap(), state(CopyState::Loading));
        assert_eq!(ask(&c, [1.0, 0.0], 5), state(CopyState::Missing));
        // Row 10 was rewritten (TID reused) and row 11 removed while the load ran.
        append(vec![10], vec![0.0, 1.0]);
        c.handle(
            7,
            CopyRequest::Remove {
                key: KEY,
                ids: vec![11],
            },
        )
        .unwrap();
        let rows = CopyRequest::LoadRows {
            key: KEY,
            ids: vec![10, 11, 12],
            vectors: vec![1.0, 0.0, 1.0, 0.0, 0.6, 0.8],
        };
        // Only the loading connection may add rows.
        assert!(c.handle(2, rows.clone()).is_err());
        c.handle(1, rows).unwrap();
        let CopyResponse::State(CopyState::Ready { rows, emulated, .. }) =
            c.handle(1, CopyRequest::LoadEnd { key: KEY }).unwrap()
        else {
            panic!()
        };
        assert_eq!((rows, emulated), (2, true));
        // 12 leads on x; 10 keeps the newer vector (0, 1); 11 stays removed.
        assert_eq!(ids_of(ask(&c, [1.0, 0.0], 5)), vec![12, 10]);
        assert_eq!(ids_of(ask(&c, [0.0, 1.0], 1)), vec![10]);
        // After the load, writes apply directly.
        c.handle(
            7,
            CopyRequest::Remove {
                key: KEY,
                ids: vec![12],
            },
        )
        .unwrap();
        append(vec![13], vec![1.0, 0.0]);
        assert_eq!(ids_of(ask(&c, [1.0, 0.0], 5)), vec![13, 10]);
        let status = c.status();
        assert_eq!(
            (status[0].state.as_str(), status[0].rows, status[0].searches),
            ("ready", 2, 3)
        );
    }

    #[test]
    fn an_unfinished_load_ends_with_its_connection() {
        let dir = tempdir();
        let c = copies(&dir);
        let begin = CopyRequest::LoadBegin {
            key: KEY,
            dimension: 2,
            rows: 1,
        };
        c.handle(1, begin.clone()).unwrap();
        c.connection_closed(4); // someone else's connection: no effect
        assert_eq!(
            c.handle(
                9,
                CopyRequest::State {
                    key: KEY,
                    device_only: false
                }
            )
            .unwrap(),
            state(CopyState::Loading)
        );
        c.connection_closed(1);
        assert_eq!(
            c.handle(
                9,
                CopyRequest::State {
                    key: KEY,
                    device_only: false
                }
            )
            .unwrap(),
            state(CopyState::Missing)
        );
        assert!(c.handle(1, CopyRequest::LoadEnd { key: KEY }).is_err());
        // Another session may load it now.
        assert_eq!(c.handle(2, begin).unwrap(), CopyResponse::Done);
        c.handle(2, CopyRequest::LoadEnd { key: KEY }).unwrap();
        // A new build of the index (REINDEX) replaces the old build's copy.
        let rebuilt = CopyKey { build: 4, ..KEY };
        c.handle(
            3,
            CopyRequest::LoadBegin {
                key: rebuilt,
                dimension: 2,
                rows: 1,
            },
        )
        .unwrap();
        assert_eq!(c.status().len(), 1);
        assert_eq!(
            c.handle(
                9,
                CopyRequest::State {
                    key: KEY,
                    device_only: false
                }
            )
            .unwrap(),
            state(CopyState::Missing)
        );
    }

    #[test]
    fn bad_rows_and_requests_are_refused() {
        let dir = tempdir();
        let c = copies(&dir);
        c.handle(
            1,
            CopyRequest::LoadBegin {
                key: KEY,
                dimension: 2,
                rows: 1,
            },
        )
        .unwrap();
        let e = c
            .handle(
                1,
                CopyRequest::LoadRows {
                    key: KEY,
                    ids: vec![1],
                    vectors: vec![1.0],
                },
            )
            .unwrap_err();
        assert!(e.message.contains("1 ids but 1 floats"), "{e}");
        c.handle(1, CopyRequest::LoadEnd { key: KEY }).unwrap();
        let e = c
            .handle(
                1,
                CopyRequest::Candidates {
                    key: KEY,
                    queries: vec![1.0; 3],
                    wanted: 1,
                },
            )
            .unwrap_err();
        assert!(e.message.contains("3 query floats"), "{e}");
        let e = c
            .handle(
                1,
                CopyRequest::Candidates {
                    key: KEY,
                    queries: vec![1.0; 2],
                    wanted: MAX_K as u32 + 1,
                },
            )
            .unwrap_err();
        assert!(e.message.contains("not 257"), "{e}");
        // A NaN appended: the copy no longer matches its index and is dropped.
        c.handle(
            7,
            CopyRequest::Append {
                key: KEY,
                ids: vec![5],
                vectors: vec![f32::NAN, 0.0],
            },
        )
        .unwrap();
        assert_eq!(
            c.handle(
                9,
                CopyRequest::State {
                    key: KEY,
                    device_only: false
                }
            )
            .unwrap(),
            state(CopyState::Missing)
        );
    }

    #[test]
    fn without_a_device_every_answer_says_why() {
        let dir = tempdir();
        let none = DeviceState::Cpu {
            reason: "no CUDA driver: libcuda.so is not on the loader's path".into(),
        };
        let c = SearchCopies::new(Opener::new(&none, None), dir.path().join("marker"));
        assert_eq!(
            c.describe(),
            "cpu (no CUDA driver: libcuda.so is not on the loader's path)"
        );
        let want = state(CopyState::Unavailable {
            reason: "no CUDA driver: libcuda.so is not on the loader's path".into(),
        });
        assert_eq!(
            c.handle(
                1,
                CopyRequest::State {
                    key: KEY,
                    device_only: false
                }
            )
            .unwrap(),
            want
        );
        let begin = CopyRequest::LoadBegin {
            key: KEY,
            dimension: 2,
            rows: 1,
        };
        assert_eq!(c.handle(1, begin).unwrap(), want);
        assert!(!dir.path().join("marker").exists());
        assert_eq!(Opener::new(&none, Some(None)), Opener::Emulated { memory: None });
        // inf_ir.search_device = auto asks for a device only: the emulation says no.
        let c = copies(&dir);
        let CopyResponse::State(CopyState::Unavailable { reason }) = c
            .handle(
                1,
                CopyRequest::State {
                    key: KEY,
                    device_only: true,
                },
            )
            .unwrap()
        else {
            panic!()
        };
        assert!(reason.contains("no CUDA device"), "{reason}");
    }

    #[test]
    fn a_copy_that_does_not_fit_says_so_and_the_least_used_one_makes_room() {
        let dir = tempdir();
        // Room for one copy of 1,000 rows × 8 (1,125 slots × 17 bytes), not two.
        let c = SearchCopies::new(Opener::Emulated { memory: Some(30_000) }, dir.path().join("marker"));
        let load = |key: CopyKey, rows: u64| {
            let answer = c
                .handle(
                    key.index as u64,
                    CopyRequest::LoadBegin {
                        key,
                        dimension: 8,
                        rows,
                    },
                )
                .unwrap();
            if answer == CopyResponse::Done {
                c.handle(key.index as u64, CopyRequest::LoadEnd { key }).unwrap();
            }
            answer
        };
        let CopyResponse::State(CopyState::Unavailable { reason }) = load(KEY, 100_000) else {
            panic!()
        };
        assert!(
            reason.contains("larger than GPU memory") || reason.contains("is free"),
            "{reason}"
        );
        assert_eq!(load(KEY, 1_000), CopyResponse::Done);
        let second = CopyKey { index: 5, ..KEY };
        assert_eq!(load(second, 1_000), CopyResponse::Done);
        let listed: Vec<u32> = c.status().iter().map(|s| s.index).collect();
        assert_eq!(listed, vec![5], "the older copy made room");
    }

    #[test]
    fn a_new_host_removes_an_old_marker() {
        let dir = tempdir();
        let marker = dir.path().join("marker");
        std::fs::write(&marker, b"").unwrap();
        let _c = SearchCopies::new(Opener::Emulated { memory: None }, marker.clone());
        assert!(!marker.exists());
    }
}
