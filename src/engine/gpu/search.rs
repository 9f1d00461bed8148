//! Exact top-k over a device-resident corpus: the device proposes the best
//! candidates by its float16 scores, the host re-scores them in float32
//! (`exact`) and asks again with more candidates until the answer is proved
//! exact. Any `CandidateSource` serves: the CUDA store on a GPU, the float16
//! emulation on the CPU (tests, the benchmark's dry run).

use super::exact::{exact_top_k, fp16_error_bound, Candidate, Outcome, Scored};
use super::top_k_kernel::MAX_K;
use crate::engine::error::{EngineError, EngineResult};

/// Something that scores a batch of queries against every live row and
/// returns each query's best `wanted` by its own (approximate) score.
pub trait CandidateSource {
    fn dimension(&self) -> usize;
    /// Live rows (appended and not deleted).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The largest norm of any row ever stored (the error bound's scale).
    fn max_norm(&self) -> f32;
    /// `queries` row-major, `dimension` floats each; `wanted` ≤ `MAX_K`.
    /// Per query, at most `wanted` candidates, best first; fewer only when
    /// fewer rows are live.
    fn candidates(&mut self, queries: &[f32], wanted: usize) -> EngineResult<Vec<Vec<Candidate>>>;
}

/// A corpus copy that takes writes as well as queries: the CUDA store on a
/// GPU, the float16 emulation in tests. The model host keeps one per index.
pub trait SearchStore: CandidateSource + Send {
    /// Store rows; an id already stored is overwritten in its slot.
    fn store(&mut self, ids: &[u64], vectors: &[f32]) -> EngineResult<()>;
    /// Forget rows (ids not stored are ignored).
    fn remove(&mut self, ids: &[u64]) -> EngineResult<()>;
    /// Where it lives, for the status view: "cuda:0 NVIDIA H100 …".
    fn description(&self) -> String;
    /// Device (or emulated) memory it holds, in bytes.
    fn resident_bytes(&self) -> usize;
}

/// Candidates asked for first: enough that a re-ask is rare.
pub fn first_ask(k: usize) -> usize {
    (2 * k).max(k + 32).min(MAX_K)
}

/// Each query's exact top `k` (float32 scores from `exact(query, id)`, None
/// for a row the caller cannot see; ties by the smaller id). A query whose
/// answer cannot be proved with `MAX_K` candidates (or k above `MAX_K`) is
/// None: the caller answers it on the CPU.
pub fn exact_search<S: CandidateSource + ?Sized>(
    source: &mut S,
    queries: &[f32],
    k: usize,
    mut exact: impl FnMut(usize, u64) -> Option<f32>,
) -> EngineResult<Vec<Option<Vec<Scored>>>> {
    let d = source.dimension();
    if d == 0 || !queries.len().is_multiple_of(d) {
        return Err(EngineError::invalid(format!(
            "query vectors hold {} floats, not a multiple of the corpus's dimension {d}",
            queries.len()
        )));
    }
    if let Some(bad) = queries.iter().position(|x| !x.is_finite()) {
        return Err(
            EngineError::invalid(format!("query {} holds a NaN or infinite value", bad / d))
                .with_hint("embed the query again; a vector with NaN or infinity cannot be ranked"),
        );
    }
    let nq = queries.len() / d;
    let mut results: Vec<Option<Vec<Scored>>> = vec![None; nq];
    if k == 0 || source.is_empty() {
        return Ok(vec![Some(Vec::new()); nq]);
    }
    if k > MAX_K {
        return Ok(results);
    }
    let bounds: Vec<f32> = (0..nq)
        .map(|q| {
            let norm = queries[q * d..(q + 1) * d].iter().map(|x| x * x).sum::<f32>().sqrt();
            fp16_error_bound(d, norm, source.max_norm())
        })
        .collect();
    let mut pending: Vec<usize> = (0..nq).collect();
    let mut wanted = first_ask(k);
    while !pending.is_empty() {
        let batch: Vec<f32> = pending
            .iter()
            .flat_map(|&q| queries[q * d..(q + 1) * d].iter().copied())
            .collect();
        let found = source.candidates(&batch, wanted)?;
        let mut still = Vec::new();
        for (&q, candidates) in pending.iter().zip(&found) {
            // Fewer than asked: these are every live row.
            let all = candidates.len() < wanted;
            match exact_top_k(candidates, all, k, bounds[q], |id| exact(q, id)) {
                Outcome::Exact(rows) => results[q] = Some(rows),
                Outcome::NeedMore => still.push(q),
            }
        }
        if wanted == MAX_K {
            break; // the rest stay None: the CPU answers them
        }
        pending = still;
        wanted = (wanted * 4).min(MAX_K);
    }
    Ok(results)
}

/// Rows to append, checked: as many vectors as ids, of the corpus's
/// dimension, finite. Returns the largest norm among them.
pub fn check_rows(dimension: usize, ids: &[u64], vectors: &[f32]) -> EngineResult<f32> {
    if vectors.len() != ids.len() * dimension {
        return Err(EngineError::invalid(format!(
            "{} ids but {} floats: each row needs {dimension}",
            ids.len(),
            vectors.len()
        )));
    }
    let mut max_norm = 0f32;
    for (row, v) in vectors.chunks_exact(dimension.max(1)).enumerate() {
        if v.iter().any(|x| !x.is_finite()) {
            return Err(EngineError::invalid(format!(
                "row {} holds a NaN or infinite value",
                ids[row]
            )));
        }
        if v.iter().any(|x| x.abs() > 65504.0) {
            return Err(
                EngineError::invalid(format!("row {} holds a value beyond float16's range (65504)", ids[row]))
                    .with_hint("the device stores vectors in float16; normalise the embeddings"),
            );
        }
        max_norm = max_norm.max(v.iter().map(|x| x * x).sum::<f32>().sqrt());
    }
    Ok(max_norm)
}

#[cfg(test)]
mod tests {
    use super::super::emulated::EmulatedSource;
    use super::*;

    fn rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut out = Vec::with_capacity(n * d);
        for _ in 0..n {
            let v: Vec<f32> = (0..d)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
                })
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            out.extend(v.iter().map(|x| x / norm));
        }
        out
    }

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn brute_force(corpus: &[(u64, Vec<f32>)], q: &[f32], k: usize) -> Vec<Scored> {
        let mut all: Vec<Scored> = corpus
            .iter()
            .map(|(id, v)| Scored {
                id: *id,
                score: dot(q, v),
            })
            .collect();
        all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        all.truncate(k);
        all
    }

    #[test]
    fn equals_float32_brute_force_after_appends_and_deletes() {
        let d = 48;
        let data = rows(2000, d, 3);
        let ids: Vec<u64> = (0..2000).map(|i| 10_000 + i * 7).collect();
        let mut source = EmulatedSource::new(d, 64);
        source.append(&ids[..1500], &data[..1500 * d]).unwrap();
        source.append(&ids[1500..], &data[1500 * d..]).unwrap();
        let deleted: Vec<u64> = ids.iter().copied().step_by(3).collect();
        source.delete(&deleted);
        let corpus: Vec<(u64, Vec<f32>)> = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| !deleted.contains(id))
            .map(|(i, id)| (*id, data[i * d..(i + 1) * d].to_vec()))
            .collect();
        let by_id: std::collections::HashMap<u64, &Vec<f32>> = corpus.iter().map(|(id, v)| (*id, v)).collect();
        let queries = rows(9, d, 77);
        for k in [1, 10, 40] {
            let got = exact_search(&mut source, &queries, k, |q, id| {
                by_id.get(&id).map(|v| dot(&queries[q * d..(q + 1) * d], v))
            })
            .unwrap();
            for (q, answer) in got.iter().enumerate() {
                let want = brute_force(&corpus, &queries[q * d..(q + 1) * d], k);
                assert_eq!(answer.as_ref().unwrap(), &want, "query {q}, k {k}");
            }
        }
        assert_eq!(source.len(), 2000 - deleted.len());
    }

    #[test]
    fn rows_the_caller_cannot_see_are_replaced_by_asking_again() {
        let d = 16;
        let data = rows(100, d, 5);
        let ids: Vec<u64> = (0..100).collect();
        let mut source = EmulatedSource::new(d, 8);
        source.append(&ids, &data).unwrap();
        let q = data[..d].to_vec();
        // Only every 10th row is visible: the first ask (42) cannot fill 10.
        let visible = |id: u64| id.is_multiple_of(10);
        let got = exact_search(&mut source, &q, 10, |_, id| {
            visible(id).then(|| dot(&q, &data[id as usize * d..][..d]))
        })
        .unwrap();
        let corpus: Vec<(u64, Vec<f32>)> = ids
            .iter()
            .filter(|id| visible(**id))
            .map(|&id| (id, data[id as usize * d..][..d].to_vec()))
            .collect();
        assert_eq!(got[0].as_ref().unwrap(), &brute_force(&corpus, &q, 10));
        assert_eq!(source.asks, 2); // 42, then 168: all 100 rows
    }

    #[test]
    fn unprovable_or_too_large_answers_go_to_the_cpu() {
        let d = 8;
        // 400 identical rows: no candidate set short of all of them proves a top 10.
        let one = rows(1, d, 9);
        let data: Vec<f32> = one.iter().copied().cycle().take(400 * d).collect();
        let ids: Vec<u64> = (0..400).collect();
        let mut source = EmulatedSource::new(d, 8);
        source.append(&ids, &data).unwrap();
        let got = exact_search(&mut source, &one, 10, |_, id| {
            Some(dot(&one, &data[id as usize * d..][..d]))
        })
        .unwrap();
        assert_eq!(got, vec![None]);
        let got = exact_search(&mut source, &one, MAX_K + 1, |_, _| Some(0.0)).unwrap();
        assert_eq!(got, vec![None]);
        // Every row a candidate (fewer rows than asked): exact, ties by id.
        source.delete(&(10..400).collect::<Vec<u64>>());
        let got = exact_search(&mut source, &one, 3, |_, id| {
            Some(dot(&one, &data[id as usize * d..][..d]))
        })
        .unwrap();
        assert_eq!(
            got[0].as_ref().unwrap().iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let mut source = EmulatedSource::new(4, 8);
        let e = source.append(&[1, 2], &[0.0; 7]).unwrap_err();
        assert!(e.message.contains("2 ids but 7 floats"), "{e}");
        let e = source.append(&[1], &[f32::NAN, 0.0, 0.0, 0.0]).unwrap_err();
        assert!(e.message.contains("row 1 holds a NaN"), "{e}");
        let e = source.append(&[1], &[7e4, 0.0, 0.0, 0.0]).unwrap_err();
        assert!(e.message.contains("float16's range"), "{e}");
        source.append(&[1], &[1.0, 0.0, 0.0, 0.0]).unwrap();
        let e = exact_search(&mut source, &[1.0; 5], 1, |_, _| None).unwrap_err();
        assert!(e.message.contains("not a multiple"), "{e}");
        let e = exact_search(&mut source, &[f32::INFINITY, 0.0, 0.0, 0.0], 1, |_, _| None).unwrap_err();
        assert!(e.message.contains("NaN or infinite"), "{e}");
        // An empty corpus or k = 0: empty answers, not None.
        let mut empty = EmulatedSource::new(4, 8);
        assert_eq!(
            exact_search(&mut empty, &[1.0; 4], 5, |_, _| None).unwrap(),
            vec![Some(vec![])]
        );
    }
}
