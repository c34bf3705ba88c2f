//! `rnnkit doctor`: what libtorch this process loaded and what it can do — version, threads,
//! MKL / oneDNN / OpenMP, CUDA and cuDNN — plus a smoke test that runs a fused LSTM kernel.

use serde::Serialize;
use std::path::{Path, PathBuf};

/// The version of PyTorch that tch 0.26 is built for; the venv must hold exactly this one.
pub const EXPECTED_TORCH_VERSION: &str = "2.13.0";

#[derive(Debug, Serialize)]
pub struct Report {
    pub rnnkit_version: String,
    /// `torch/version.py` next to the loaded library, e.g. `2.13.0+cu130`.
    pub torch_version: Option<String>,
    /// Directory of the `libtorch_cpu.so` this process actually mapped.
    pub libtorch_loaded_from: Option<PathBuf>,
    /// The rpath baked in at build time.
    pub libtorch_built_against: Option<String>,
    pub num_threads: i32,
    pub num_interop_threads: i32,
    pub mkl: bool,
    pub mkldnn: bool,
    pub openmp: bool,
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    pub cudnn_available: bool,
    pub cudnn_version: Option<i64>,
    /// Result of a small LSTM forward on the CPU (`ok` or the error).
    pub smoke_test: String,
    pub problems: Vec<String>,
}

/// Gathers the report. `problems` is empty when everything an rnnkit user needs works.
pub fn run() -> Report {
    let loaded = loaded_libtorch_dir();
    let torch_version = loaded.as_deref().and_then(read_torch_version);
    let mut problems = Vec::new();
    match &torch_version {
        Some(v) if v.split('+').next() == Some(EXPECTED_TORCH_VERSION) => {}
        Some(v) => problems.push(format!(
            "loaded torch {v}, but rnnkit is built for {EXPECTED_TORCH_VERSION}; \
             run scripts/setup.sh and rebuild"
        )),
        None => problems.push(
            "could not read torch/version.py next to the loaded libtorch; \
             is libtorch from the venv that scripts/setup.sh made?"
                .into(),
        ),
    }
    let smoke_test = match smoke_test() {
        Ok(()) => "ok".to_string(),
        Err(e) => {
            problems.push(format!("LSTM smoke test failed: {e}"));
            format!("failed: {e}")
        }
    };
    let cuda_available = tch::Cuda::is_available();
    let cudnn_available = tch::Cuda::cudnn_is_available();
    Report {
        rnnkit_version: env!("CARGO_PKG_VERSION").to_string(),
        torch_version,
        libtorch_loaded_from: loaded,
        libtorch_built_against: option_env!("RNNKIT_LIBTORCH_LIB").map(str::to_string),
        num_threads: tch::get_num_threads(),
        num_interop_threads: tch::get_num_interop_threads(),
        mkl: tch::utils::has_mkl(),
        mkldnn: tch::utils::has_mkldnn(),
        openmp: tch::utils::has_openmp(),
        cuda_available,
        cuda_device_count: tch::Cuda::device_count(),
        cudnn_available,
        cudnn_version: cudnn_available.then(tch::utils::version_cudnn),
        smoke_test,
        problems,
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "unknown".into());
        writeln!(f, "rnnkit            {}", self.rnnkit_version)?;
        writeln!(
            f,
            "torch             {} (rnnkit expects {EXPECTED_TORCH_VERSION})",
            opt(&self.torch_version)
        )?;
        let dir = self
            .libtorch_loaded_from
            .as_ref()
            .map(|p| p.display().to_string());
        writeln!(f, "libtorch loaded   {}", opt(&dir))?;
        writeln!(f, "libtorch rpath    {}", opt(&self.libtorch_built_against))?;
        writeln!(
            f,
            "threads           {} intra-op, {} inter-op",
            self.num_threads, self.num_interop_threads
        )?;
        writeln!(f, "MKL               {}", yes(self.mkl))?;
        writeln!(f, "oneDNN (mkldnn)   {}", yes(self.mkldnn))?;
        writeln!(f, "OpenMP            {}", yes(self.openmp))?;
        writeln!(
            f,
            "CUDA              {} ({} device(s))",
            yes(self.cuda_available),
            self.cuda_device_count
        )?;
        let cudnn = match self.cudnn_version {
            Some(v) => format!("yes (version {v})"),
            None => "no".into(),
        };
        writeln!(f, "cuDNN             {cudnn}")?;
        writeln!(f, "LSTM smoke test   {}", self.smoke_test)?;
        for p in &self.problems {
            writeln!(f, "problem: {p}")?;
        }
        Ok(())
    }
}

/// Runs one fused LSTM step on the CPU: proves libtorch's kernels are callable from here.
fn smoke_test() -> rnnkit::Result<()> {
    use tch::{Kind, Tensor};
    let _guard = tch::no_grad_guard();
    let opts = (Kind::Float, tch::Device::Cpu);
    let x = Tensor::f_ones([3, 1, 4], opts)?;
    let h = Tensor::f_zeros([1, 1, 2], opts)?;
    let params = [
        Tensor::f_full([8, 4], 0.1, opts)?,
        Tensor::f_full([8, 2], 0.1, opts)?,
    ];
    let (out, _, _) = x.f_lstm(
        &[&h, &h],
        &[&params[0], &params[1]],
        false,
        1,
        0.0,
        false,
        false,
        false,
    )?;
    let v = out.f_double_value(&[2, 0, 0])?;
    if !(v.is_finite() && v > 0.0 && v < 1.0) {
        return Err(rnnkit::Error::invalid(format!(
            "unexpected LSTM output {v}"
        )));
    }
    Ok(())
}

/// Finds the directory of the `libtorch_cpu.so` mapped into this process (Linux: /proc/self/maps).
fn loaded_libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| Path::new(p).parent().map(Path::to_path_buf))
}

/// Reads `__version__` from `torch/version.py`, the parent of libtorch's `lib/`.
fn read_torch_version(lib_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(lib_dir.parent()?.join("version.py")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("__version__"))
        .map(|rest| {
            rest.trim_start_matches([' ', '=', ':'])
                .trim()
                .trim_matches(['\'', '"'])
                .to_string()
        })
        .filter(|v| !v.is_empty())
        .map(|v| v.split_once(" ").map(|(a, _)| a.to_string()).unwrap_or(v))
}
