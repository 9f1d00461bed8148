//! The inverted-file (IVF) vector index, without PostgreSQL: spherical
//! k-means for the lists, a random rotation, 4-bit codes of each row's
//! rotated residual with an error bound, and the ordered, resumable list
//! scan that re-scores exactly only what the bounds cannot rule out.
//! `crate::pg::ivf` stores the same structures in index pages. Imports the
//! engine's top level (`simd`, `topk`, `interrupt`) only.

pub mod centroids;
pub mod codes;
pub mod cosine;
pub mod kmeans;
pub mod rotation;
pub mod scan;
pub mod synthetic;
