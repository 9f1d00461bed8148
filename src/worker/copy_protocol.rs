//! Frames for the model host's search copies (`search_copies`): a JSON head
//! (what to do, which index) followed by the row ids and floats as raw
//! little-endian arrays, since a load moves gigabytes of them.

use crate::engine::gpu::exact::Candidate;
use crate::engine::{EngineError, EngineResult};
use serde::{Deserialize, Serialize};

/// One inf_ivf index in one database; `build` changes with every REINDEX,
/// TRUNCATE or rebuild, so a copy never outlives the index it mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CopyKey {
    pub database: u32,
    pub index: u32,
    pub build: u64,
}

/// Where an index's copy stands in the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CopyState {
    /// Searchable: every row the index held when the load began, and every
    /// write since.
    Ready {
        rows: u64,
        max_norm: f32,
        dimension: u32,
        /// The float16 emulation (tests), not a GPU.
        emulated: bool,
    },
    /// No copy: a session may load one.
    Missing,
    /// Another session is loading it.
    Loading,
    /// The host cannot hold copies (no device, or too little memory): why.
    Unavailable { reason: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum CopyRequest {
    /// Where the copy stands; with `device_only`, the emulation answers
    /// Unavailable (inf_ir.search_device = auto never uses it).
    State {
        key: CopyKey,
        device_only: bool,
    },
    /// Each query's best `wanted` rows by the device's float16 score.
    Candidates {
        key: CopyKey,
        queries: Vec<f32>,
        wanted: u32,
    },
    /// Start a load on this connection (it ends when the connection does,
    /// unless `LoadEnd` came first).
    LoadBegin {
        key: CopyKey,
        dimension: u32,
        rows: u64,
    },
    LoadRows {
        key: CopyKey,
        ids: Vec<u64>,
        vectors: Vec<f32>,
    },
    LoadEnd {
        key: CopyKey,
    },
    /// A row written to the index (aminsert); ignored without a copy.
    Append {
        key: CopyKey,
        ids: Vec<u64>,
        vectors: Vec<f32>,
    },
    /// Rows removed from the index (VACUUM); ignored without a copy.
    Remove {
        key: CopyKey,
        ids: Vec<u64>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum CopyResponse {
    State(CopyState),
    Candidates(Vec<Vec<Candidate>>),
    Done,
}

#[derive(Serialize, Deserialize)]
enum RequestHead {
    State { key: CopyKey, device_only: bool },
    Candidates { key: CopyKey, wanted: u32 },
    LoadBegin { key: CopyKey, dimension: u32, rows: u64 },
    LoadRows { key: CopyKey },
    LoadEnd { key: CopyKey },
    Append { key: CopyKey },
    Remove { key: CopyKey },
}

#[derive(Serialize, Deserialize)]
enum ResponseHead {
    State(CopyState),
    /// Candidates per query; their ids and scores follow as arrays.
    Candidates {
        counts: Vec<u32>,
    },
    Done,
}

fn protocol_error(what: impl std::fmt::Display) -> EngineError {
    EngineError::worker(format!("inf_ir worker protocol error (search copy): {what}"))
}

fn encode<H: Serialize>(head: &H, ids: &[u64], floats: &[f32]) -> Vec<u8> {
    let head = serde_json::to_vec(head).expect("protocol types serialize");
    let mut out = Vec::with_capacity(4 + head.len() + 16 + ids.len() * 8 + floats.len() * 4);
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    ids.iter().for_each(|id| out.extend_from_slice(&id.to_le_bytes()));
    out.extend_from_slice(&(floats.len() as u64).to_le_bytes());
    floats.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> EngineResult<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(protocol_error("short frame"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn count(&mut self, width: usize) -> EngineResult<usize> {
        let n = u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")) as usize;
        if n.checked_mul(width).is_none_or(|bytes| bytes > self.bytes.len()) {
            return Err(protocol_error(format!("{n} values announced, fewer sent")));
        }
        Ok(n)
    }
}

fn decode<H: for<'de> Deserialize<'de>>(payload: &[u8]) -> EngineResult<(H, Vec<u64>, Vec<f32>)> {
    let mut r = Reader { bytes: payload };
    let head_len = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes")) as usize;
    let head: H = serde_json::from_slice(r.take(head_len)?).map_err(protocol_error)?;
    let n = r.count(8)?;
    let ids = r
        .take(n * 8)?
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let n = r.count(4)?;
    let floats = r
        .take(n * 4)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    if !r.bytes.is_empty() {
        return Err(protocol_error("trailing bytes"));
    }
    Ok((head, ids, floats))
}

impl CopyRequest {
    pub fn encode_payload(&self) -> Vec<u8> {
        use CopyRequest as R;
        match self {
            R::State { key, device_only } => encode(
                &RequestHead::State {
                    key: *key,
                    device_only: *device_only,
                },
                &[],
                &[],
            ),
            R::Candidates { key, queries, wanted } => encode(
                &RequestHead::Candidates {
                    key: *key,
                    wanted: *wanted,
                },
                &[],
                queries,
            ),
            R::LoadBegin { key, dimension, rows } => encode(
                &RequestHead::LoadBegin {
                    key: *key,
                    dimension: *dimension,
                    rows: *rows,
                },
                &[],
                &[],
            ),
            R::LoadRows { key, ids, vectors } => encode(&RequestHead::LoadRows { key: *key }, ids, vectors),
            R::LoadEnd { key } => encode(&RequestHead::LoadEnd { key: *key }, &[], &[]),
            R::Append { key, ids, vectors } => encode(&RequestHead::Append { key: *key }, ids, vectors),
            R::Remove { key, ids } => encode(&RequestHead::Remove { key: *key }, ids, &[]),
        }
    }

    pub fn decode_payload(payload: &[u8]) -> EngineResult<Self> {
        let (head, ids, floats) = decode::<RequestHead>(payload)?;
        Ok(match head {
            RequestHead::State { key, device_only } => CopyRequest::State { key, device_only },
            RequestHead::Candidates { key, wanted } => CopyRequest::Candidates {
                key,
                queries: floats,
                wanted,
            },
            RequestHead::LoadBegin { key, dimension, rows } => CopyRequest::LoadBegin { key, dimension, rows },
            RequestHead::LoadRows { key } => CopyRequest::LoadRows {
                key,
                ids,
                vectors: floats,
            },
            RequestHead::LoadEnd { key } => CopyRequest::LoadEnd { key },
            RequestHead::Append { key } => CopyRequest::Append {
                key,
                ids,
                vectors: floats,
            },
            RequestHead::Remove { key } => CopyRequest::Remove { key, ids },
        })
    }
}

impl CopyResponse {
    pub fn encode_payload(&self) -> Vec<u8> {
        match self {
            CopyResponse::State(state) => encode(&ResponseHead::State(state.clone()), &[], &[]),
            CopyResponse::Candidates(lists) => {
                let counts = lists.iter().map(|l| l.len() as u32).collect();
                let ids: Vec<u64> = lists.iter().flatten().map(|c| c.id).collect();
                let scores: Vec<f32> = lists.iter().flatten().map(|c| c.approx).collect();
                encode(&ResponseHead::Candidates { counts }, &ids, &scores)
            }
            CopyResponse::Done => encode(&ResponseHead::Done, &[], &[]),
        }
    }

    pub fn decode_payload(payload: &[u8]) -> EngineResult<Self> {
        let (head, ids, scores) = decode::<ResponseHead>(payload)?;
        Ok(match head {
            ResponseHead::State(state) => CopyResponse::State(state),
            ResponseHead::Done => CopyResponse::Done,
            ResponseHead::Candidates { counts } => {
                let total: usize = counts.iter().map(|&c| c as usize).sum();
                if ids.len() != total || scores.len() != total {
                    return Err(protocol_error(format!(
                        "{total} candidates announced, {} ids and {} scores sent",
                        ids.len(),
                        scores.len()
                    )));
                }
                let mut all = ids.into_iter().zip(scores).map(|(id, approx)| Candidate { id, approx });
                CopyResponse::Candidates(
                    counts
                        .iter()
                        .map(|&c| all.by_ref().take(c as usize).collect())
                        .collect(),
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: CopyKey = CopyKey {
        database: 5,
        index: 16_384,
        build: u64::MAX - 3,
    };

    #[test]
    fn requests_round_trip_bit_exact() {
        let requests = [
            CopyRequest::State {
                key: KEY,
                device_only: true,
            },
            CopyRequest::Candidates {
                key: KEY,
                queries: vec![0.25, -0.0, f32::MIN_POSITIVE],
                wanted: 42,
            },
            CopyRequest::LoadBegin {
                key: KEY,
                dimension: 384,
                rows: 10_000_000,
            },
            CopyRequest::LoadRows {
                key: KEY,
                ids: vec![1, u64::MAX],
                vectors: vec![1.5, -2.5],
            },
            CopyRequest::LoadEnd { key: KEY },
            CopyRequest::Append {
                key: KEY,
                ids: vec![7],
                vectors: vec![],
            },
            CopyRequest::Remove {
                key: KEY,
                ids: vec![3, 4, 5],
            },
        ];
        for r in requests {
            assert_eq!(CopyRequest::decode_payload(&r.encode_payload()).unwrap(), r);
        }
    }

    #[test]
    fn responses_round_trip() {
        let lists = vec![
            vec![Candidate { id: 9, approx: 0.5 }, Candidate { id: 2, approx: 0.25 }],
            vec![],
            vec![Candidate { id: 1, approx: -1.0 }],
        ];
        for r in [
            CopyResponse::Candidates(lists),
            CopyResponse::Done,
            CopyResponse::State(CopyState::Unavailable {
                reason: "no CUDA driver".into(),
            }),
            CopyResponse::State(CopyState::Ready {
                rows: 3,
                max_norm: 1.0,
                dimension: 384,
                emulated: true,
            }),
        ] {
            assert_eq!(CopyResponse::decode_payload(&r.encode_payload()).unwrap(), r);
        }
    }

    #[test]
    fn refuses_short_or_inconsistent_frames() {
        let bytes = CopyRequest::LoadRows {
            key: KEY,
            ids: vec![1, 2],
            vectors: vec![1.0; 8],
        }
        .encode_payload();
        assert!(CopyRequest::decode_payload(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(CopyRequest::decode_payload(&longer).is_err());
        assert!(CopyRequest::decode_payload(&[0xff, 0xff, 0xff, 0xff]).is_err());
        let mut bad = CopyResponse::Candidates(vec![vec![Candidate { id: 1, approx: 0.0 }]]).encode_payload();
        // Announce two candidates in the head while one is sent.
        let text = String::from_utf8_lossy(&bad).replace("[1]", "[2]");
        bad = text.into_bytes();
        assert!(CopyResponse::decode_payload(&bad).is_err());
    }
}
