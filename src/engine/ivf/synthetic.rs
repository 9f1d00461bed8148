//! Vectors and an in-memory IVF index for tests and benchmarks: the same
//! k-means, codes and list scan as the PostgreSQL index, with plain vectors
//! in place of pages and heap rows.

use super::centroids::Centroids;
use super::codes::{code_len, encode};
use super::kmeans::{nearest, train, SplitMix, Training};
use super::rotation::Rotation;
use super::scan::{IvfScan, ListReader, Rescorer, ScanPlan};
use crate::engine::simd::dot;
use crate::engine::topk::{BoundedHeap, Hit};
use std::collections::HashSet;

fn gaussian(rng: &mut SplitMix) -> f32 {
    // Box-Muller from two uniforms in (0, 1].
    let u1 = ((rng.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let u2 = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// `n` random unit vectors of `dim` dimensions, flattened.
pub fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix(seed);
    let mut out: Vec<f32> = (0..n * dim).map(|_| gaussian(&mut rng)).collect();
    out.chunks_mut(dim).for_each(normalize);
    out
}

/// `clusters * per_cluster` unit vectors around random centres (noise
/// `spread` per dimension), flattened, and each row's cluster.
pub fn clustered_vectors(
    clusters: usize,
    per_cluster: usize,
    dim: usize,
    spread: f32,
    seed: u64,
) -> (Vec<f32>, Vec<usize>) {
    let centres = unit_vectors(clusters, dim, seed);
    let mut rng = SplitMix(seed ^ 0xABCD);
    let (mut rows, mut truth) = (Vec::new(), Vec::new());
    for i in 0..clusters * per_cluster {
        let c = i % clusters;
        let mut v: Vec<f32> = centres[c * dim..(c + 1) * dim]
            .iter()
            .map(|x| x + spread * gaussian(&mut rng))
            .collect();
        normalize(&mut v);
        rows.extend(v);
        truth.push(c);
    }
    (rows, truth)
}

/// An IVF index over rows keyed 0..n, held in memory.
pub struct MemoryIndex {
    dim: usize,
    centroids: Centroids,
    rotation: Rotation,
    /// Per list: keys, and their codes back to back (as on a page).
    lists: Vec<(Vec<i64>, Vec<u8>)>,
    vectors: Vec<f32>,
    /// Keys the rescorer treats as invisible rows.
    pub invisible: HashSet<i64>,
}

struct Lists<'a>(&'a [(Vec<i64>, Vec<u8>)], usize, &'a Centroids);

impl ListReader for Lists<'_> {
    fn scan_list(&mut self, list: u32, visit: &mut dyn FnMut(i64, &[u8])) {
        let (keys, codes) = &self.0[list as usize];
        for (key, code) in keys.iter().zip(codes.chunks_exact(self.1)) {
            visit(*key, code);
        }
    }

    fn centroid(&self, list: u32) -> &[f32] {
        self.2.get(list as usize)
    }
}

struct Rows<'a> {
    vectors: &'a [f32],
    dim: usize,
    invisible: &'a HashSet<i64>,
}

impl Rescorer for Rows<'_> {
    fn exact(&mut self, key: i64, query: &[f32]) -> Option<f32> {
        (!self.invisible.contains(&key)).then(|| {
            dot(
                &self.vectors[key as usize * self.dim..(key as usize + 1) * self.dim],
                query,
            )
        })
    }
}

impl MemoryIndex {
    pub fn build(vectors: &[f32], dim: usize, lists: usize, threads: usize) -> Self {
        let centroids = train(
            vectors,
            dim,
            Training {
                lists,
                iterations: 10,
                threads,
                seed: 42,
            },
            &crate::engine::NeverInterrupt,
        )
        .expect("never interrupted");
        let mut index = MemoryIndex {
            dim,
            lists: vec![(Vec::new(), Vec::new()); (centroids.len() / dim).max(1)],
            centroids: Centroids::new(
                if centroids.is_empty() {
                    vec![0.0; dim]
                } else {
                    centroids
                },
                dim,
            ),
            rotation: Rotation::new(dim, 42),
            vectors: vectors.to_vec(),
            invisible: HashSet::new(),
        };
        if !vectors.is_empty() {
            for (key, (list, _)) in nearest(vectors, dim, index.centroids.as_slice(), threads)
                .into_iter()
                .enumerate()
            {
                let mut code = vec![0u8; code_len(dim)];
                let centroid = index.centroids.get(list as usize);
                let mut residual: Vec<f32> = vectors[key * dim..(key + 1) * dim]
                    .iter()
                    .zip(centroid)
                    .map(|(v, c)| v - c)
                    .collect();
                index.rotation.apply(&mut residual);
                encode(&residual, &mut code);
                let (keys, codes) = &mut index.lists[list as usize];
                keys.push(key as i64);
                codes.extend_from_slice(&code);
            }
        }
        index
    }

    pub fn memory_bytes(&self) -> usize {
        self.lists
            .iter()
            .map(|l| l.0.len() * (8 + code_len(self.dim)))
            .sum::<usize>()
            + self.centroids.bytes()
    }

    pub fn scan(&self, query: &[f32], plan: ScanPlan) -> IvfScan {
        IvfScan::new(query, &self.centroids, &self.rotation, plan)
    }

    pub fn next(&self, scan: &mut IvfScan) -> Option<Hit> {
        scan.next(
            &mut Lists(&self.lists, code_len(self.dim), &self.centroids),
            &mut Rows {
                vectors: &self.vectors,
                dim: self.dim,
                invisible: &self.invisible,
            },
        )
    }

    pub fn search(&self, query: &[f32], plan: ScanPlan, k: usize) -> Vec<Hit> {
        let mut scan = self.scan(query, plan);
        std::iter::from_fn(|| self.next(&mut scan)).take(k).collect()
    }

    /// Exact top k over every row (ties by the smaller key).
    pub fn brute_force(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let mut best = BoundedHeap::new(k);
        for (key, v) in self.vectors.chunks_exact(self.dim).enumerate() {
            best.push(Hit {
                score: dot(v, query),
                id: key as i64,
            });
        }
        best.into_sorted()
    }
}
