//! What the sharding scripts (sql/sharding/*.sql, run with psql beside the
//! extension) need from Rust: libpq's own reading of a connection string
//! (`conninfo`). Imports only the pg plumbing.

pub mod conninfo;
