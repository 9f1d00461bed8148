//! Frames between a backend and the worker on a Unix socket.
//!
//! A frame is a one-byte tag, a little-endian u32 length and a payload.
//! Requests and errors are JSON (texts, specs); vectors go back as raw
//! little-endian f32, since they are most of the bytes.

use super::copy_protocol::{CopyRequest, CopyResponse};
use crate::engine::{EmbedInput, EngineError, EngineResult, ModelSpec};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::PathBuf;

const TAG_EMBED: u8 = 1;
const TAG_STATUS: u8 = 2;
const TAG_COPY: u8 = 3;
const TAG_VECTORS: u8 = 10;
const TAG_ERROR: u8 = 11;
const TAG_STATUS_REPLY: u8 = 12;
const TAG_COPY_REPLY: u8 = 13;

pub const HEADER_LEN: usize = 5;
/// PostgreSQL's own limit for one value; nothing larger can come from SQL.
pub const MAX_FRAME: usize = 1 << 30;

/// The model as the backend's registry describes it; the worker loads it
/// from these files and checks the fingerprint itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    pub spec: ModelSpec,
    pub folder: PathBuf,
    pub fingerprint: String,
    pub library: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OwnedInput {
    Passage(String),
    Query { instruction: Option<String>, query: String },
}

impl OwnedInput {
    pub fn from_input(input: &EmbedInput<'_>) -> Self {
        match *input {
            EmbedInput::Passage(p) => OwnedInput::Passage(p.to_string()),
            EmbedInput::Query { instruction, query } => OwnedInput::Query {
                instruction: instruction.map(str::to_string),
                query: query.to_string(),
            },
        }
    }

    pub fn as_input(&self) -> EmbedInput<'_> {
        match self {
            OwnedInput::Passage(p) => EmbedInput::Passage(p),
            OwnedInput::Query { instruction, query } => EmbedInput::Query {
                instruction: instruction.as_deref(),
                query,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedRequest {
    pub model: ModelRef,
    pub inputs: Vec<OwnedInput>,
    /// From the background embedder of table-following corpora: runs only
    /// when no interactive request is queued.
    #[serde(default)]
    pub background: bool,
}

// One request per call: its size on the stack does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Embed(EmbedRequest),
    Status,
    /// The search copies of inf_ivf indexes (`copy_protocol`).
    Copy(CopyRequest),
}

/// One loaded model, as the status view lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadedModelStatus {
    pub name: String,
    pub dimension: usize,
    pub fingerprint: String,
    pub requests: u64,
    /// Where it embeds: "cuda:0 …" or "cpu (why)".
    #[serde(default)]
    pub device: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WorkerStatus {
    /// The supervising background worker (a PostgreSQL process).
    pub supervisor_pid: i32,
    /// The model host process, which holds the models.
    pub host_pid: i32,
    /// Unix seconds when this host started.
    pub host_started_at: f64,
    /// How many times the supervisor has started a host (1 = never restarted).
    pub host_starts: u64,
    pub connections: u64,
    pub queue_length: u64,
    /// Requests in the batch being computed now.
    pub running: u64,
    pub requests: u64,
    pub texts: u64,
    pub tokens: u64,
    pub batches: u64,
    pub busy_seconds: f64,
    pub errors: u64,
    pub dropped: u64,
    /// How long background pieces waited for cores others wanted.
    #[serde(default)]
    pub background_wait_seconds: f64,
    pub models: Vec<LoadedModelStatus>,
    /// inf_ir.embed_device and what the probe found.
    #[serde(default)]
    pub embed_device: String,
    /// Where search copies live ("cuda:0 …", or "cpu (why not)").
    #[serde(default)]
    pub search_device: String,
    #[serde(default)]
    pub search_copies: Vec<SearchCopyStatus>,
}

/// One index's copy in the host, as the status view lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchCopyStatus {
    pub database: u32,
    pub index: u32,
    /// "ready" or "loading".
    pub state: String,
    pub rows: u64,
    pub bytes: u64,
    pub searches: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Vectors(Vec<Vec<f32>>),
    Error(EngineError),
    Status(WorkerStatus),
    Copy(CopyResponse),
}

fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(tag);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn protocol_error(what: impl std::fmt::Display) -> EngineError {
    EngineError::worker(format!("inf_ir worker protocol error: {what}"))
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("protocol types serialize")
}

fn from_json<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> EngineResult<T> {
    serde_json::from_slice(payload).map_err(protocol_error)
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::Embed(r) => frame(TAG_EMBED, &json(r)),
            Request::Status => frame(TAG_STATUS, &[]),
            Request::Copy(r) => frame(TAG_COPY, &r.encode_payload()),
        }
    }

    pub fn decode(tag: u8, payload: &[u8]) -> EngineResult<Self> {
        match tag {
            TAG_EMBED => Ok(Request::Embed(from_json(payload)?)),
            TAG_STATUS => Ok(Request::Status),
            TAG_COPY => Ok(Request::Copy(CopyRequest::decode_payload(payload)?)),
            other => Err(protocol_error(format!("unknown request tag {other}"))),
        }
    }
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Response::Vectors(vectors) => {
                let dimension = vectors.first().map_or(0, Vec::len);
                let mut payload = Vec::with_capacity(8 + vectors.len() * dimension * 4);
                payload.extend_from_slice(&(vectors.len() as u32).to_le_bytes());
                payload.extend_from_slice(&(dimension as u32).to_le_bytes());
                for v in vectors {
                    debug_assert_eq!(v.len(), dimension);
                    for x in v {
                        payload.extend_from_slice(&x.to_le_bytes());
                    }
                }
                frame(TAG_VECTORS, &payload)
            }
            Response::Error(e) => frame(TAG_ERROR, &json(e)),
            Response::Status(s) => frame(TAG_STATUS_REPLY, &json(s)),
            Response::Copy(r) => frame(TAG_COPY_REPLY, &r.encode_payload()),
        }
    }

    pub fn decode(tag: u8, payload: &[u8]) -> EngineResult<Self> {
        match tag {
            TAG_VECTORS => {
                let word = |i: usize| -> EngineResult<usize> {
                    let bytes = payload
                        .get(i * 4..i * 4 + 4)
                        .ok_or_else(|| protocol_error("short vectors frame"))?;
                    Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
                };
                let (count, dimension) = (word(0)?, word(1)?);
                let body = &payload[8..];
                if body.len() != count * dimension * 4 {
                    return Err(protocol_error(format!(
                        "{} bytes for {count} vectors of {dimension}",
                        body.len()
                    )));
                }
                let values: Vec<f32> = body
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                Ok(Response::Vectors(if dimension == 0 {
                    vec![Vec::new(); count]
                } else {
                    values.chunks_exact(dimension).map(<[f32]>::to_vec).collect()
                }))
            }
            TAG_ERROR => Ok(Response::Error(from_json(payload)?)),
            TAG_STATUS_REPLY => Ok(Response::Status(from_json(payload)?)),
            TAG_COPY_REPLY => Ok(Response::Copy(CopyResponse::decode_payload(payload)?)),
            other => Err(protocol_error(format!("unknown response tag {other}"))),
        }
    }
}

/// Parse a frame header: tag and payload length.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> EngineResult<(u8, usize)> {
    let len = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME {
        return Err(protocol_error(format!("frame of {len} bytes")));
    }
    Ok((header[0], len))
}

/// Blocking read of one frame (the host's side). `Ok(None)` at a clean end of stream.
pub fn read_frame(stream: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; HEADER_LEN];
    match stream.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (tag, len) = parse_header(&header).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    Ok(Some((tag, payload)))
}

pub fn write_all(stream: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::embed::padded_batch::PaddingSide;
    use crate::engine::Pooling;

    fn decode_request(bytes: &[u8]) -> Request {
        let (tag, len) = parse_header(bytes[..HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(len, bytes.len() - HEADER_LEN);
        Request::decode(tag, &bytes[HEADER_LEN..]).unwrap()
    }

    fn decode_response(bytes: &[u8]) -> Response {
        let (tag, len) = parse_header(bytes[..HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(len, bytes.len() - HEADER_LEN);
        Response::decode(tag, &bytes[HEADER_LEN..]).unwrap()
    }

    #[test]
    fn requests_round_trip() {
        let request = Request::Embed(EmbedRequest {
            background: true,
            model: ModelRef {
                spec: ModelSpec {
                    name: "m".into(),
                    onnx_file: "/x/model.onnx".into(),
                    tokenizer_file: "/x/tokenizer.json".into(),
                    query_template: "{query} {instruction}".into(),
                    passage_template: "{passage}".into(),
                    pooling: Pooling::Mean,
                    dimension: 384,
                    max_tokens: 256,
                    pad_token_id: 0,
                    padding_side: PaddingSide::Left,
                },
                folder: "/x".into(),
                fingerprint: "ab".into(),
                library: "/lib/libonnxruntime.so".into(),
            },
            inputs: vec![
                OwnedInput::Passage("émoji 🙂 \"quoted\"\n".into()),
                OwnedInput::Query {
                    instruction: None,
                    query: "q".into(),
                },
                OwnedInput::Query {
                    instruction: Some("only reviews".into()),
                    query: "".into(),
                },
            ],
        });
        assert_eq!(decode_request(&request.encode()), request);
        assert_eq!(decode_request(&Request::Status.encode()), Request::Status);
    }

    #[test]
    fn vectors_round_trip_bit_exact() {
        let vectors = vec![vec![0.1f32, -0.0, f32::MIN_POSITIVE], vec![1.0, 2.5e-8, -3.0]];
        let bytes = Response::Vectors(vectors.clone()).encode();
        let Response::Vectors(back) = decode_response(&bytes) else {
            panic!()
        };
        for (a, b) in vectors.iter().flatten().zip(back.iter().flatten()) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        assert_eq!(
            decode_response(&Response::Vectors(vec![]).encode()),
            Response::Vectors(vec![])
        );
    }

    #[test]
    fn errors_keep_kind_and_hint() {
        let e = EngineError::files("gone").with_hint("re-register");
        assert_eq!(
            decode_response(&Response::Error(e.clone()).encode()),
            Response::Error(e)
        );
    }

    #[test]
    fn refuses_bad_frames() {
        assert!(Request::decode(99, b"").is_err());
        assert!(Response::decode(TAG_VECTORS, &[2, 0, 0, 0, 4, 0, 0, 0, 1]).is_err());
        assert!(Response::decode(TAG_VECTORS, &[1]).is_err());
        let mut header = [TAG_EMBED, 0, 0, 0, 0];
        header[1..5].copy_from_slice(&((MAX_FRAME as u32) + 1).to_le_bytes());
        assert!(parse_header(&header).is_err());
        assert!(Request::decode(TAG_EMBED, b"{not json").is_err());
    }
}
