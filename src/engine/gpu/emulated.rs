//! The device's arithmetic on the CPU: rows stored in float16, scored with
//! float32 sums, masked slots skipped, best by (score desc, slot asc), the
//! same slot layout as the CUDA store. A `CandidateSource` for the tests of
//! the exact search, the GPU benchmark's dry run on a machine without a GPU
//! and the model host's search copies under INF_IR_GPU_EMULATION=1 (the
//! tests of search from the server); not a search path a user would choose
//! (the CPU index is faster).

use half::f16;

use super::exact::Candidate;
use super::search::{check_rows, CandidateSource, SearchStore};
use super::slots::SlotMap;
use super::store::corpus_bytes;
use crate::engine::error::{EngineError, EngineResult};

pub struct EmulatedSource {
    dimension: usize,
    slots: SlotMap,
    /// capacity × dimension, float16, row-major by slot.
    vectors: Vec<f16>,
    /// One byte per slot: non-zero when the slot holds no live row.
    masked: Vec<u8>,
    max_norm: f32,
    /// How many times `candidates` was called (the tests count re-asks).
    pub asks: usize,
}

impl EmulatedSource {
    pub fn new(dimension: usize, capacity: usize) -> Self {
        let slots = SlotMap::with_capacity(capacity);
        EmulatedSource {
            dimension,
            vectors: vec![f16::ZERO; slots.capacity() * dimension],
            masked: vec![1; slots.capacity()],
            slots,
            max_norm: 0.0,
            asks: 0,
        }
    }

    /// Store rows (an id already stored is overwritten in its slot).
    pub fn append(&mut self, ids: &[u64], vectors: &[f32]) -> EngineResult<()> {
        let norm = check_rows(self.dimension, ids, vectors)?;
        let d = self.dimension;
        let (slots, grow) = self.slots.append_batch(ids);
        if let Some(capacity) = grow {
            self.vectors.resize(capacity * d, f16::ZERO);
            self.masked.resize(capacity, 1);
        }
        for (row, &slot) in slots.iter().enumerate() {
            let target = &mut self.vectors[slot * d..(slot + 1) * d];
            target
                .iter_mut()
                .zip(&vectors[row * d..(row + 1) * d])
                .for_each(|(t, v)| *t = f16::from_f32(*v));
            self.masked[slot] = 0;
        }
        self.max_norm = self.max_norm.max(norm);
        Ok(())
    }

    pub fn delete(&mut self, ids: &[u64]) {
        for &id in ids {
            if let Some(slot) = self.slots.delete(id) {
                self.masked[slot] = 1;
            }
        }
    }
}

impl CandidateSource for EmulatedSource {
    fn dimension(&self) -> usize {
        self.dimension
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn max_norm(&self) -> f32 {
        self.max_norm
    }

    fn candidates(&mut self, queries: &[f32], wanted: usize) -> EngineResult<Vec<Vec<Candidate>>> {
        let d = self.dimension;
        if !queries.len().is_multiple_of(d) {
            return Err(EngineError::invalid("query batch is not a whole number of vectors"));
        }
        self.asks += 1;
        let rows = self.slots.rows();
        Ok(queries
            .chunks_exact(d)
            .map(|q| {
                let q: Vec<f32> = q.iter().map(|x| f16::from_f32(*x).to_f32()).collect();
                let mut scored: Vec<(f32, usize)> = (0..rows)
                    .filter(|&slot| self.masked[slot] == 0)
                    .map(|slot| {
                        let row = &self.vectors[slot * d..(slot + 1) * d];
                        (q.iter().zip(row).map(|(a, b)| a * b.to_f32()).sum::<f32>(), slot)
                    })
                    .collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                scored
                    .into_iter()
                    .take(wanted)
                    .filter_map(|(approx, slot)| self.slots.id_at(slot).map(|id| Candidate { id, approx }))
                    .collect()
            })
            .collect())
    }
}

impl SearchStore for EmulatedSource {
    fn store(&mut self, ids: &[u64], vectors: &[f32]) -> EngineResult<()> {
        self.append(ids, vectors)
    }

    fn remove(&mut self, ids: &[u64]) -> EngineResult<()> {
        self.delete(ids);
        Ok(())
    }

    fn description(&self) -> String {
        "float16 emulated on the CPU (INF_IR_GPU_EMULATION=1, for tests)".into()
    }

    fn resident_bytes(&self) -> usize {
        corpus_bytes(self.slots.capacity(), self.dimension)
    }
}
