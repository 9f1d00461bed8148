//! Is there a CUDA device this process can use? Answered without creating a
//! context (which panics without a driver, and costs 0.35 s with one): the
//! driver, cuBLAS and NVRTC libraries are looked for first, then the driver
//! is asked for its devices. Every "no" carries the reason a user can act on.

use std::fmt;

/// Where a user asked for work to run (`inf_ir.embed_device`, `inf_ir.search_device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum DevicePreference {
    /// The GPU when there is a usable one, else the CPU, quietly.
    #[default]
    Auto,
    Cpu,
    /// The GPU; without one the CPU still answers, and the reason is logged.
    Cuda,
}

impl DevicePreference {
    pub fn name(self) -> &'static str {
        match self {
            DevicePreference::Auto => "auto",
            DevicePreference::Cpu => "cpu",
            DevicePreference::Cuda => "cuda",
        }
    }
}

/// What a probe found: a device to use, or why the CPU path is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceState {
    Cuda {
        ordinal: usize,
        name: String,
        memory_bytes: u64,
        compute_capability: (i32, i32),
    },
    Cpu {
        reason: String,
    },
}

impl DeviceState {
    pub fn is_cuda(&self) -> bool {
        matches!(self, DeviceState::Cuda { .. })
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceState::Cuda {
                ordinal,
                name,
                memory_bytes,
                compute_capability: (major, minor),
            } => write!(
                f,
                "cuda:{ordinal} {name}, {:.1} GB, compute capability {major}.{minor}",
                *memory_bytes as f64 / 1e9
            ),
            DeviceState::Cpu { reason } => write!(f, "cpu ({reason})"),
        }
    }
}

/// The libraries a GPU path needs, each with what is missing when absent.
pub struct Libraries {
    pub driver: bool,
    pub cublas: bool,
    pub nvrtc: bool,
}

impl Libraries {
    /// Look for them where the dynamic loader looks (cudarc's names for CUDA 13).
    pub fn find() -> Self {
        // SAFETY: each only tries to dlopen a library by name and closes it.
        unsafe {
            Libraries {
                driver: cudarc::driver::sys::is_culib_present(),
                cublas: cudarc::cublas::sys::is_culib_present(),
                nvrtc: cudarc::nvrtc::sys::is_culib_present(),
            }
        }
    }

    /// Why these libraries are not enough, or None when they are.
    pub fn missing(&self) -> Option<String> {
        if !self.driver {
            return Some("no CUDA driver: libcuda.so is not on the loader's path".into());
        }
        let mut missing = Vec::new();
        if !self.cublas {
            missing.push("cuBLAS (libcublas.so)");
        }
        if !self.nvrtc {
            missing.push("NVRTC (libnvrtc.so)");
        }
        if missing.is_empty() {
            None
        } else {
            Some(format!(
                "the CUDA driver is there but {} is not: install the CUDA 13 toolkit's libraries",
                missing.join(" and ")
            ))
        }
    }
}

/// Probe for device `ordinal`. Never panics; loads the driver only when its
/// library is present.
pub fn probe(ordinal: usize) -> DeviceState {
    let cpu = |reason: String| DeviceState::Cpu { reason };
    if let Some(reason) = Libraries::find().missing() {
        return cpu(reason);
    }
    let found = std::panic::catch_unwind(|| -> Result<DeviceState, String> {
        use cudarc::driver::result;
        result::init().map_err(|e| format!("the CUDA driver did not initialise: {e}"))?;
        let count = result::device::get_count().map_err(|e| format!("cannot count CUDA devices: {e}"))?;
        if count <= 0 {
            return Err("the CUDA driver sees no device".into());
        }
        if ordinal >= count as usize {
            return Err(format!("device {ordinal} asked for, but the driver sees {count}"));
        }
        let dev = result::device::get(ordinal as i32).map_err(|e| e.to_string())?;
        let name = result::device::get_name(dev).map_err(|e| e.to_string())?;
        // SAFETY: `dev` is a valid device handle from the initialised driver.
        let memory_bytes = unsafe { result::device::total_mem(dev) }.map_err(|e| e.to_string())? as u64;
        let attribute = |a| unsafe { result::device::get_attribute(dev, a) }.unwrap_or(0);
        use cudarc::driver::sys::CUdevice_attribute as A;
        let compute_capability = (
            attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
            attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
        );
        Ok(DeviceState::Cuda {
            ordinal,
            name,
            memory_bytes,
            compute_capability,
        })
    });
    match found {
        Ok(Ok(state)) => state,
        Ok(Err(reason)) => cpu(reason),
        Err(_) => cpu("the CUDA driver failed while being probed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_libraries_are_named() {
        let none = Libraries {
            driver: false,
            cublas: false,
            nvrtc: false,
        };
        assert!(none.missing().unwrap().contains("no CUDA driver"));
        let no_blas = Libraries {
            driver: true,
            cublas: false,
            nvrtc: true,
        };
        assert!(no_blas.missing().unwrap().contains("cuBLAS (libcublas.so)"));
        let no_rtc = Libraries {
            driver: true,
            cublas: false,
            nvrtc: false,
        };
        assert!(no_rtc.missing().unwrap().contains("cuBLAS (libcublas.so) and NVRTC"));
        let all = Libraries {
            driver: true,
            cublas: true,
            nvrtc: true,
        };
        assert_eq!(all.missing(), None);
    }

    #[test]
    fn probing_never_panics_and_says_why() {
        // Here (CI) there is no GPU: the CPU path with a reason. On a GPU
        // machine, the device's description.
        let state = probe(0);
        let text = state.to_string();
        match &state {
            DeviceState::Cpu { reason } => assert!(!reason.is_empty() && text.starts_with("cpu (")),
            DeviceState::Cuda { .. } => assert!(text.starts_with("cuda:0 ")),
        }
        // An ordinal past the devices is never a device.
        assert!(!probe(4096).is_cuda());
    }
}
