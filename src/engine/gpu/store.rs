//! A corpus resident on a CUDA device: float16 rows (no other scaling), one
//! cuBLAS GEMM (float16 inputs, float32 accumulation) scores a batch of
//! queries against every row, and the NVRTC top-k kernels return each
//! query's best candidates; `search::exact_search` makes them exact.
//! Appends write only the new rows (the matrix grows by one device copy);
//! deletes set a mask byte. Every CUDA call is checked: a missing driver or
//! library, too little memory or a device fault is an `EngineError` that
//! says why, so the caller can search on the CPU instead.

use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use half::f16;

use super::context::{device_error, to_half, Device};
use super::exact::Candidate;
use super::gemm_plan;
use super::search::{check_rows, CandidateSource, SearchStore};
use super::slots::{runs, SlotMap};
use super::top_k_kernel::{self as kernel, variant_for};
use crate::engine::error::{EngineError, EngineResult, ErrorKind};

/// Rows converted to float16 and copied per step: bounds the host's staging memory.
const UPLOAD_ROWS: usize = 1 << 18;

/// The score matrix of one GEMM is at most this large; bigger batches are split.
const SCORE_BYTES: usize = 2 << 30;

/// Device memory left free after the corpus (cuBLAS workspace, kernels, other processes).
const HEADROOM_BYTES: usize = 1 << 30;

struct TopK {
    kmax: usize,
    positions: CudaFunction,
    pairs: CudaFunction,
}

pub struct DeviceStore {
    device: Device,
    top_k: Vec<TopK>,
    dimension: usize,
    slots: SlotMap,
    /// capacity × dimension, row-major by slot.
    vectors: CudaSlice<f16>,
    /// One byte per slot: 1 when it holds no live row.
    masked: CudaSlice<u8>,
    max_norm: f32,
    scores: Option<CudaSlice<f32>>,
    /// Set when a device step failed half way: the store no longer matches
    /// the corpus, and every later call says so.
    broken: Option<String>,
}

/// Bytes a corpus of `capacity` rows needs on the device.
pub fn corpus_bytes(capacity: usize, dimension: usize) -> usize {
    capacity * (dimension * 2 + 1)
}

impl DeviceStore {
    /// An empty store on device `ordinal` with room for `capacity` rows
    /// (it grows past that). Refuses, with the reason, when the libraries or
    /// the device are missing or the memory is not there.
    pub fn open(ordinal: usize, dimension: usize, capacity: usize) -> EngineResult<Self> {
        if dimension == 0 {
            return Err(EngineError::invalid("a corpus needs a dimension above 0"));
        }
        let device = Device::open(ordinal)?;
        let free = device.free_memory()?;
        let capacity = capacity.max(1);
        if corpus_bytes(capacity, dimension) + HEADROOM_BYTES > free {
            return Err(too_large(capacity, dimension, free));
        }
        let top_k = kernel::VARIANTS
            .iter()
            .map(|&kmax| {
                let mut f = device.compile(
                    kernel::SOURCE,
                    kernel::compile_defines(kmax),
                    &["top_k_positions", "top_k_pairs"],
                )?;
                Ok(TopK {
                    kmax,
                    positions: f.remove("top_k_positions").expect("loaded"),
                    pairs: f.remove("top_k_pairs").expect("loaded"),
                })
            })
            .collect::<EngineResult<Vec<_>>>()?;
        let vectors = device
            .stream
            .alloc_zeros::<f16>(capacity * dimension)
            .map_err(|e| device_error("allocating the corpus", e))?;
        let masked = device
            .stream
            .clone_htod(&vec![1u8; capacity])
            .map_err(|e| device_error("allocating the mask", e))?;
        Ok(DeviceStore {
            device,
            top_k,
            dimension,
            slots: SlotMap::with_capacity(capacity),
            vectors,
            masked,
            max_norm: 0.0,
            scores: None,
            broken: None,
        })
    }

    /// "cuda:0 NVIDIA H100 …, compute capability 9.0".
    pub fn description(&self) -> &str {
        &self.device.description
    }

    /// Device memory the corpus holds now, in bytes.
    pub fn resident_bytes(&self) -> usize {
        corpus_bytes(self.slots.capacity(), self.dimension)
    }

    fn usable(&self) -> EngineResult<()> {
        match &self.broken {
            Some(why) => Err(
                EngineError::new(ErrorKind::Device, format!("the GPU corpus is unusable: {why}"))
                    .with_hint("open it again; until then the CPU path answers"),
            ),
            None => Ok(()),
        }
    }

    /// Run a device step; a failure leaves the store marked unusable.
    fn step<T>(&mut self, result: EngineResult<T>) -> EngineResult<T> {
        if let Err(e) = &result {
            self.broken = Some(e.message.clone());
        }
        result
    }

    /// Store rows (an id already stored is overwritten in its slot): only
    /// these rows travel to the device.
    pub fn append(&mut self, ids: &[u64], vectors: &[f32]) -> EngineResult<()> {
        self.usable()?;
        let norm = check_rows(self.dimension, ids, vectors)?;
        let (slots, grow) = self.slots.append_batch(ids);
        if let Some(capacity) = grow {
            let grown = self.grow(capacity);
            self.step(grown)?;
        }
        let written = self.write_rows(&slots, vectors);
        self.step(written)?;
        self.max_norm = self.max_norm.max(norm);
        Ok(())
    }

    fn grow(&mut self, capacity: usize) -> EngineResult<()> {
        let d = self.dimension;
        let free = self.device.free_memory()?;
        // Old and new matrices coexist during the copy.
        if corpus_bytes(capacity, d) + HEADROOM_BYTES > free {
            return Err(too_large(capacity, d, free + self.resident_bytes()));
        }
        let mut vectors = self
            .device
            .stream
            .alloc_zeros::<f16>(capacity * d)
            .map_err(|e| device_error("growing the corpus", e))?;
        let old_rows = self.vectors.len();
        self.device
            .stream
            .memcpy_dtod(&self.vectors, &mut vectors.slice_mut(..old_rows))
            .map_err(|e| device_error("copying the corpus", e))?;
        let mut masked = self
            .device
            .stream
            .clone_htod(&vec![1u8; capacity])
            .map_err(|e| device_error("growing the mask", e))?;
        let old_slots = self.masked.len();
        self.device
            .stream
            .memcpy_dtod(&self.masked, &mut masked.slice_mut(..old_slots))
            .map_err(|e| device_error("copying the mask", e))?;
        self.vectors = vectors;
        self.masked = masked;
        Ok(())
    }

    fn write_rows(&mut self, slots: &[usize], vectors: &[f32]) -> EngineResult<()> {
        let d = self.dimension;
        for run in runs(slots) {
            for start in (0..run.len).step_by(UPLOAD_ROWS) {
                let len = UPLOAD_ROWS.min(run.len - start);
                let first = run.first + start;
                let half = to_half(&vectors[first * d..(first + len) * d]);
                let slot = run.slot + start;
                self.device
                    .stream
                    .memcpy_htod(&half, &mut self.vectors.slice_mut(slot * d..(slot + len) * d))
                    .map_err(|e| device_error("uploading rows", e))?;
                self.device
                    .stream
                    .memcpy_htod(&vec![0u8; len], &mut self.masked.slice_mut(slot..slot + len))
                    .map_err(|e| device_error("unmasking rows", e))?;
            }
        }
        self.device
            .stream
            .synchronize()
            .map_err(|e| device_error("uploading rows", e))
    }

    /// Remove rows: their slots are masked (one small copy per run of slots).
    pub fn delete(&mut self, ids: &[u64]) -> EngineResult<()> {
        self.usable()?;
        let mut slots: Vec<usize> = ids.iter().filter_map(|&id| self.slots.delete(id)).collect();
        slots.sort_unstable();
        slots.dedup();
        let masked = (|| {
            for run in runs(&slots) {
                self.device
                    .stream
                    .memcpy_htod(
                        &vec![1u8; run.len],
                        &mut self.masked.slice_mut(run.slot..run.slot + run.len),
                    )
                    .map_err(|e| device_error("masking rows", e))?;
            }
            self.device
                .stream
                .synchronize()
                .map_err(|e| device_error("masking rows", e))
        })();
        self.step(masked)
    }

    /// One GEMM and the two top-k passes for `nq` queries (already float16
    /// on the device); returns per query up to `wanted` (slot, score).
    fn score_and_select(
        &mut self,
        queries: &CudaSlice<f16>,
        nq: usize,
        wanted: usize,
    ) -> EngineResult<Vec<Vec<(usize, f32)>>> {
        let rows = self.slots.rows();
        let d = self.dimension;
        let kernels = self
            .top_k
            .iter()
            .find(|t| Some(t.kmax) == variant_for(wanted))
            .ok_or_else(|| EngineError::invalid(format!("{wanted} candidates asked for; at most {}", kernel::MAX_K)))?;
        if self.scores.as_ref().is_none_or(|s| s.len() < rows * nq) {
            self.scores = None; // free the old one first
            let scores = unsafe { self.device.stream.alloc::<f32>(rows * nq) }
                .map_err(|e| device_error("allocating scores", e))?;
            self.scores = Some(scores);
        }
        let scores = self.scores.as_mut().expect("allocated above");
        {
            // scores [nq, rows] = queries · vectorsᵀ (a linear layer with the corpus as weights).
            let stream = &self.device.stream;
            let (a, _read_a) = self.vectors.device_ptr(stream);
            let (b, _read_b) = queries.device_ptr(stream);
            let (c, _write_c) = scores.device_ptr(stream);
            self.device
                .gemm(&gemm_plan::linear(nq, d, rows), a, b, c, true, "scoring")?;
        }
        let blocks = kernel::blocks(rows, wanted);
        let chunk = kernel::chunk(wanted);
        let middle = nq * blocks * wanted;
        let stream = &self.device.stream;
        let alloc =
            |len: usize| unsafe { stream.alloc::<f32>(len) }.map_err(|e| device_error("allocating top-k space", e));
        let alloc_ids =
            |len: usize| unsafe { stream.alloc::<i32>(len) }.map_err(|e| device_error("allocating top-k space", e));
        let (mut mid_s, mut mid_id) = (alloc(middle)?, alloc_ids(middle)?);
        let (mut out_s, mut out_id) = (alloc(nq * wanted)?, alloc_ids(nq * wanted)?);
        let (ld, n, k, chunk_arg) = (rows as i64, rows as i32, wanted as i32, chunk as i32);
        let block_dim = (kernel::THREADS, 1, 1);
        unsafe {
            stream
                .launch_builder(&kernels.positions)
                .arg(&*scores)
                .arg(&ld)
                .arg(&n)
                .arg(&self.masked)
                .arg(&k)
                .arg(&chunk_arg)
                .arg(&mut mid_s)
                .arg(&mut mid_id)
                .launch(LaunchConfig {
                    grid_dim: (blocks as u32, nq as u32, 1),
                    block_dim,
                    shared_mem_bytes: 0,
                })
        }
        .map_err(|e| device_error("selecting candidates (pass 1)", e))?;
        let (ld2, n2) = ((blocks * wanted) as i64, (blocks * wanted) as i32);
        unsafe {
            stream
                .launch_builder(&kernels.pairs)
                .arg(&mid_s)
                .arg(&mid_id)
                .arg(&ld2)
                .arg(&n2)
                .arg(&k)
                .arg(&mut out_s)
                .arg(&mut out_id)
                .launch(LaunchConfig {
                    grid_dim: (1, nq as u32, 1),
                    block_dim,
                    shared_mem_bytes: 0,
                })
        }
        .map_err(|e| device_error("selecting candidates (pass 2)", e))?;
        let s = stream
            .clone_dtoh(&out_s)
            .map_err(|e| device_error("reading candidates", e))?;
        let ids = stream
            .clone_dtoh(&out_id)
            .map_err(|e| device_error("reading candidates", e))?;
        stream
            .synchronize()
            .map_err(|e| device_error("reading candidates", e))?;
        Ok((0..nq)
            .map(|q| {
                (q * wanted..(q + 1) * wanted)
                    .filter(|&i| ids[i] >= 0)
                    .map(|i| (ids[i] as usize, s[i]))
                    .collect()
            })
            .collect())
    }
}

fn too_large(capacity: usize, dimension: usize, free: usize) -> EngineError {
    too_large_for(capacity, dimension, free, HEADROOM_BYTES)
}

/// "3.46 MB", "15.38 GB".
fn bytes_text(bytes: usize) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.2} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.2} MB", bytes as f64 / 1e6)
    }
}

/// The refusal of a corpus that does not fit in `free` bytes with
/// `headroom` left over.
pub fn too_large_for(capacity: usize, dimension: usize, free: usize, headroom: usize) -> EngineError {
    let headroom_text = if headroom > 0 {
        format!(" plus {} headroom", bytes_text(headroom))
    } else {
        String::new()
    };
    EngineError::resources(format!(
        "a corpus of {capacity} rows × {dimension} needs {} on the GPU (float16){headroom_text}; {} is free",
        bytes_text(corpus_bytes(capacity, dimension)),
        bytes_text(free)
    ))
    .with_hint("the corpus is larger than GPU memory: inf_ir searches it on the CPU")
}

impl CandidateSource for DeviceStore {
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
        self.usable()?;
        let d = self.dimension;
        let nq = queries.len() / d;
        let rows = self.slots.rows();
        if rows == 0 || nq == 0 {
            return Ok(vec![Vec::new(); nq]);
        }
        let per_gemm = (SCORE_BYTES / 4 / rows).clamp(1, 65_535);
        let mut out = Vec::with_capacity(nq);
        for first in (0..nq).step_by(per_gemm) {
            let count = per_gemm.min(nq - first);
            let half = to_half(&queries[first * d..(first + count) * d]);
            let on_device = self
                .device
                .stream
                .clone_htod(&half)
                .map_err(|e| device_error("uploading queries", e));
            let on_device = self.step(on_device)?;
            let found = self.score_and_select(&on_device, count, wanted);
            for per_query in self.step(found)? {
                out.push(
                    per_query
                        .into_iter()
                        .filter_map(|(slot, approx)| self.slots.id_at(slot).map(|id| Candidate { id, approx }))
                        .collect(),
                );
            }
        }
        Ok(out)
    }
}

impl SearchStore for DeviceStore {
    fn store(&mut self, ids: &[u64], vectors: &[f32]) -> EngineResult<()> {
        self.append(ids, vectors)
    }

    fn remove(&mut self, ids: &[u64]) -> EngineResult<()> {
        self.delete(ids)
    }

    fn description(&self) -> String {
        DeviceStore::description(self).to_string()
    }

    fn resident_bytes(&self) -> usize {
        DeviceStore::resident_bytes(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_gpu_opening_says_why() {
        match DeviceStore::open(0, 384, 1000) {
            // CI: no driver here, a reason and the CPU path.
            Err(e) => {
                assert!(matches!(e.kind, ErrorKind::Device | ErrorKind::OutOfMemory), "{e}");
                assert!(!e.message.is_empty());
            }
            Ok(store) => assert!(store.description().starts_with("cuda:0 ")),
        }
        let Err(e) = DeviceStore::open(0, 0, 10) else {
            panic!("a zero dimension was accepted")
        };
        assert!(e.message.contains("dimension"), "{e}");
    }

    #[test]
    fn memory_figures_are_stated() {
        assert_eq!(corpus_bytes(10_000_000, 384), 7_690_000_000);
        let e = too_large(10_000_000, 384, 4_000_000_000);
        assert!(
            e.message.contains("7.69 GB") && e.message.contains("4.00 GB is free"),
            "{e}"
        );
        assert_eq!(e.kind, ErrorKind::OutOfMemory);
    }
}
