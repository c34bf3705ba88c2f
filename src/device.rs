//! `--device auto|cpu|cuda[:N]`, as every model-running command takes it.
//! `auto` is CUDA device 0 when libtorch sees a GPU, the CPU otherwise (PyTorch has no `auto`;
//! the names `cpu`, `cuda` and `cuda:N` are PyTorch's).

use crate::error::{Error, Result};
use tch::Device;

/// Parses a device name. `cuda` means `cuda:0`. Asking for a GPU that is not there is an error,
/// not a silent fallback to the CPU.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim();
    match name {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        _ => {
            let index = match name.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| bad_device(name))?,
                None => return Err(bad_device(name)),
            };
            let count = tch::Cuda::device_count() as usize;
            if index >= count {
                return Err(Error::invalid(format!(
                    "device {name}: libtorch sees {count} CUDA device(s); use --device cpu \
                     (or auto), or run `rnnkit doctor` to see what is available"
                )));
            }
            Ok(Device::Cuda(index))
        }
    }
}

fn bad_device(name: &str) -> Error {
    Error::invalid(format!(
        "unknown device {name:?}: expected auto, cpu, cuda or cuda:N"
    ))
}

/// The name PyTorch prints for a device (`cpu`, `cuda:0`).
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_auto() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        let auto = parse_device("auto").unwrap();
        if tch::Cuda::is_available() {
            assert_eq!(auto, Device::Cuda(0));
        } else {
            assert_eq!(auto, Device::Cpu);
        }
    }

    #[test]
    fn rejects_unknown_names() {
        for bad in ["gpu", "cuda:", "cuda:x", "cuda0", ""] {
            let err = parse_device(bad).unwrap_err().to_string();
            assert!(err.contains("device"), "{bad}: {err}");
        }
    }

    #[test]
    fn missing_gpu_is_an_error_not_a_fallback() {
        let n = tch::Cuda::device_count();
        let err = parse_device(&format!("cuda:{n}")).unwrap_err().to_string();
        assert!(err.contains("CUDA device"), "{err}");
    }
}
