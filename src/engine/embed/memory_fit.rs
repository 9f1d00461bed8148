//! Whether a model's weights fit in the memory this process can still use,
//! checked before ONNX Runtime loads them: a 1.5B float32 decoder is 6 GB,
//! and a load that runs out is killed by the OS (taking the server's
//! other sessions with it) instead of failing with a message.

use crate::engine::error::{EngineError, EngineResult};
use std::path::Path;

/// ONNX Runtime holds the weights once more than their file size while it
/// builds the session (protobuf parse, then initialisers); a fifth on top.
const LOAD_OVERHEAD: f64 = 1.2;

/// The graph file and its external data files beside it (`model.onnx_data`
/// from optimum and onnx, `model.onnx.data` from torch and the quantiser).
pub fn weight_bytes(onnx_file: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut total = size(onnx_file);
    let (Some(dir), Some(stem)) = (onnx_file.parent(), onnx_file.file_name().and_then(|n| n.to_str())) else {
        return total;
    };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name != stem && name.starts_with(stem) && (name.ends_with("_data") || name.ends_with(".data")) {
                total += size(&entry.path());
            }
        }
    }
    total
}

/// Memory available to this process: the kernel's MemAvailable, capped by
/// a cgroup v2 limit (containers) when there is one. None if unknown.
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let system = mem_available(&meminfo)?;
    let cgroup = || -> Option<u64> {
        let max = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?;
        let current = std::fs::read_to_string("/sys/fs/cgroup/memory.current").ok()?;
        cgroup_headroom(&max, &current)
    };
    Some(cgroup().map_or(system, |c| c.min(system)))
}

fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn cgroup_headroom(max: &str, current: &str) -> Option<u64> {
    let max: u64 = max.trim().parse().ok()?; // "max" (no limit) does not parse
    let current: u64 = current.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// Refuse to load `onnx_file` when its weights cannot fit in `available`.
pub fn check_fits(onnx_file: &Path, weights: u64, available: Option<u64>) -> EngineResult<()> {
    let Some(available) = available else {
        return Ok(());
    };
    let needed = (weights as f64 * LOAD_OVERHEAD) as u64;
    if needed <= available {
        return Ok(());
    }
    let gb = |b: u64| b as f64 / 1e9;
    Err(EngineError::resources(format!(
        "model {} needs about {:.1} GB to load ({:.1} GB of weights) but {:.1} GB of memory is available",
        onnx_file.display(),
        gb(needed),
        gb(weights),
        gb(available)
    ))
    .with_hint(
        "use an int8 copy (scripts/quantize_int8.py FOLDER OUT), set inf_ir.inference = 'worker' so one copy \
         serves every session, or free memory",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_and_cgroup_limits() {
        let meminfo = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   16000000 kB\n";
        assert_eq!(mem_available(meminfo), Some(16_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(cgroup_headroom("max\n", "5\n"), None);
        assert_eq!(cgroup_headroom("1000\n", "400\n"), Some(600));
        assert_eq!(cgroup_headroom("1000\n", "4000\n"), Some(0));
    }

    #[test]
    fn too_large_names_the_file_and_the_fix() {
        let file = Path::new("/m/qwen/model.onnx");
        assert!(check_fits(file, 6_000_000_000, Some(16_000_000_000)).is_ok());
        assert!(check_fits(file, 6_000_000_000, None).is_ok());
        let e = check_fits(file, 6_000_000_000, Some(4_000_000_000)).unwrap_err();
        assert!(e.message.contains("/m/qwen/model.onnx") && e.message.contains("7.2 GB"), "{}", e.message);
        assert!(e.hint.unwrap().contains("quantize_int8"));
    }

    #[test]
    fn counts_external_data_beside_the_graph() {
        let dir = std::env::temp_dir().join(format!("inf_ir_weights_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.onnx"), vec![0u8; 10]).unwrap();
        std::fs::write(dir.join("model.onnx_data"), vec![0u8; 100]).unwrap();
        std::fs::write(dir.join("model.onnx.data"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.join("tokenizer.json"), vec![0u8; 5]).unwrap();
        assert_eq!(weight_bytes(&dir.join("model.onnx")), 1110);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
