//! A reader for the safetensors format (the weights the exporter reads): an
//! 8-byte little-endian header length, a JSON header naming each tensor's
//! dtype, shape and byte range, then the data. Tensors are widened to f32 on
//! the host; the device side narrows them to what its kernels take.

use half::{bf16, f16};
use std::collections::HashMap;
use std::path::Path;

use crate::engine::error::{EngineError, EngineResult};

#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
    begin: usize,
    end: usize,
}

pub struct SafeTensors {
    path: String,
    data: Vec<u8>,
    /// Where the data section starts in `data`.
    base: usize,
    tensors: HashMap<String, TensorInfo>,
}

fn element_size(dtype: &str) -> Option<usize> {
    match dtype {
        "F32" => Some(4),
        "F16" | "BF16" => Some(2),
        _ => None,
    }
}

impl SafeTensors {
    pub fn open(path: &Path) -> EngineResult<Self> {
        let data = std::fs::read(path)
            .map_err(|e| EngineError::files(format!("cannot read weights {}: {e}", path.display())))?;
        Self::parse(path.display().to_string(), data)
    }

    pub fn parse(path: String, data: Vec<u8>) -> EngineResult<Self> {
        let broken = |why: String| {
            EngineError::files(format!("{path} is not a safetensors file: {why}"))
                .with_hint("point at the model folder's model.safetensors")
        };
        if data.len() < 8 {
            return Err(broken("shorter than its 8-byte header length".into()));
        }
        let header_len = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) as usize;
        let base = 8usize.checked_add(header_len).filter(|&b| b <= data.len());
        let base = base.ok_or_else(|| broken(format!("header of {header_len} bytes past the end")))?;
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&data[8..base]).map_err(|e| broken(format!("header is not JSON: {e}")))?;
        let mut tensors = HashMap::new();
        for (name, entry) in header {
            if name == "__metadata__" {
                continue;
            }
            let field = |key: &str| {
                entry
                    .get(key)
                    .ok_or_else(|| broken(format!("tensor {name} has no {key}")))
            };
            let dtype = field("dtype")?.as_str().unwrap_or_default().to_string();
            let numbers = |v: &serde_json::Value| -> Option<Vec<usize>> {
                v.as_array()?.iter().map(|x| x.as_u64().map(|x| x as usize)).collect()
            };
            let shape = numbers(field("shape")?).ok_or_else(|| broken(format!("tensor {name}: bad shape")))?;
            let offsets = numbers(field("data_offsets")?).filter(|o| o.len() == 2);
            let [begin, end] = offsets
                .as_deref()
                .and_then(|o| o.try_into().ok())
                .unwrap_or([usize::MAX, 0]);
            let count: usize = shape.iter().product();
            let fits = begin <= end && base + end <= data.len();
            let sized = element_size(&dtype).is_none_or(|size| end - begin == count * size);
            if !fits || !sized {
                return Err(broken(format!(
                    "tensor {name}: byte range does not match its shape and the file"
                )));
            }
            tensors.insert(
                name,
                TensorInfo {
                    dtype,
                    shape,
                    begin,
                    end,
                },
            );
        }
        Ok(SafeTensors {
            path,
            data,
            base,
            tensors,
        })
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }

    /// Tensor `name` as f32, checked against the `shape` the model expects.
    pub fn f32(&self, name: &str, shape: &[usize]) -> EngineResult<Vec<f32>> {
        let info = self.tensors.get(name).ok_or_else(|| {
            EngineError::files(format!("{} has no tensor {name}", self.path))
                .with_hint("the GPU encoder reads BERT-family checkpoints (BertModel)")
        })?;
        if info.shape != shape {
            return Err(EngineError::files(format!(
                "tensor {name} in {} has shape {:?}; the config says {shape:?}",
                self.path, info.shape
            )));
        }
        let bytes = &self.data[self.base + info.begin..self.base + info.end];
        Ok(match info.dtype.as_str() {
            "F32" => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            "F16" => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            "BF16" => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(EngineError::files(format!(
                    "tensor {name} in {} is {other}; F32, F16 and BF16 are read",
                    self.path
                )))
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A safetensors file of f32 tensors (what a test model needs).
    pub(crate) fn write(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut body = Vec::new();
        for (name, shape, values) in tensors {
            let begin = body.len();
            values.iter().for_each(|v| body.extend(v.to_le_bytes()));
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [begin, body.len()]}),
            );
        }
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let header = serde_json::to_vec(&header).unwrap();
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header);
        out.extend(body);
        out
    }

    #[test]
    fn reads_what_it_wrote_and_checks_shapes() {
        let file = write(&[
            ("a", vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            ("b", vec![1], vec![-0.5]),
        ]);
        let st = SafeTensors::parse("t".into(), file).unwrap();
        assert_eq!(st.f32("a", &[2, 3]).unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(st.f32("b", &[1]).unwrap(), vec![-0.5]);
        assert!(st.f32("a", &[3, 2]).unwrap_err().message.contains("has shape [2, 3]"));
        assert!(st.f32("c", &[1]).unwrap_err().message.contains("has no tensor c"));
        assert_eq!(st.names().count(), 2);
    }

    #[test]
    fn half_precision_is_widened() {
        let header = br#"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[4,6]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend(header);
        file.extend(f16::from_f32(1.5).to_le_bytes());
        file.extend(f16::from_f32(-2.0).to_le_bytes());
        file.extend(bf16::from_f32(0.25).to_le_bytes());
        let st = SafeTensors::parse("t".into(), file).unwrap();
        assert_eq!(st.f32("h", &[2]).unwrap(), vec![1.5, -2.0]);
        assert_eq!(st.f32("b", &[1]).unwrap(), vec![0.25]);
    }

    #[test]
    fn broken_files_are_refused_with_the_reason() {
        let e = |bytes: Vec<u8>| SafeTensors::parse("m".into(), bytes).err().unwrap().message;
        assert!(e(vec![1, 2]).contains("8-byte header"));
        assert!(e(1000u64.to_le_bytes().to_vec()).contains("past the end"));
        let mut not_json = 3u64.to_le_bytes().to_vec();
        not_json.extend(b"{x}");
        assert!(e(not_json).contains("not JSON"));
        let mut file = write(&[("a", vec![4], vec![1.0; 4])]);
        file.truncate(file.len() - 4); // the data is cut short
        assert!(e(file).contains("byte range"));
    }
}
