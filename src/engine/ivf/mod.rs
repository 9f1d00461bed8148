//! The inverted-file (IVF) vector index, without PostgreSQL: spherical
//! k-means for the lists, int8 codes of each row, and the ordered,
//! resumable list scan with an exact re-score of a shortlist. `crate::pg::ivf`
//! stores the same structures in index pages.

pub mod codes;
pub mod kmeans;
pub mod scan;
pub mod synthetic;
