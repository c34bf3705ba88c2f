//! The library's one error type. Every variant names what failed: the file, the key, and the
//! expected and actual shapes where there are some, so a user can fix the input without a debugger.
//! Binaries and examples wrap it with `anyhow` context at their edges.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error every fallible library call returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input tensor or state does not have the shape an operation needs.
    #[error("{what}: expected shape {expected}, got {actual:?}")]
    Shape {
        /// The tensor and the operation it was given to (`Linear input`).
        what: String,
        /// The shape wanted, in PyTorch's notation with the known sizes filled in
        /// (`(*, 20)`, `(N, 10) or unbatched (10)`).
        expected: String,
        /// The shape given.
        actual: Vec<i64>,
    },

    /// Tensors that must share a dtype (or a dtype the operation supports) do not.
    #[error("{what}: expected dtype {expected}, got {actual}")]
    Dtype {
        /// The tensor and the operation it was given to (`Embedding input`).
        what: String,
        /// The dtype or dtypes accepted (`Int64 or Int (token ids)`).
        expected: String,
        /// The dtype given, as tch's `Kind` prints it.
        actual: String,
    },

    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Any other invalid argument to a library call.
    #[error("{0}")]
    Invalid(String),

    /// A file could not be read or written. The cause is part of the message, not a separate
    /// `source`, so that printing the error chain does not repeat it.
    #[error("{path}: {err}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error itself.
        err: std::io::Error,
    },

    /// A file was read but its content is not what it claims to be.
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content, with the line, key or offset where there is one.
        msg: String,
    },

    /// Loading a state_dict into a module failed; lists every problem at once, as
    /// PyTorch's `load_state_dict(strict=True)` does.
    #[error("error(s) in loading state_dict{}:\n{}", source_name(.file), .problems.join("\n"))]
    StateDict {
        /// The file the state_dict was read from, when it was read from one.
        file: Option<PathBuf>,
        /// One line per problem: the missing keys, the unexpected keys, each shape mismatch.
        problems: Vec<String>,
    },

    /// An error reported by libtorch (caught, never an abort). Holds libtorch's message; the
    /// conversion from `tch::TchError` lives in [`crate::checkpoint::state_dict`], so this file
    /// (and checkpoint parsing) compiles without libtorch.
    #[error("libtorch: {0}")]
    Torch(String),

    /// A pickle (a `.pth` file's `data.pkl`) that `torch.load(weights_only=True)` would refuse,
    /// or a tensor record it describes that is inconsistent. The reader adds the file's path.
    #[error("{0}")]
    Pickle(String),

    /// Reading a checkpoint would allocate more than its reading budget allows
    /// (`checkpoint::ReadOptions::max_bytes`); nothing was allocated. `what` names the tensor or
    /// storage, `bytes` what it needs, `used` what the read had already taken.
    #[error(
        "{}: {what} needs {} ({bytes} bytes), more than the reading budget allows ({} in all, {} already charged); \
         refusing before allocating. If the file is trusted, raise the budget: `rnnkit convert --max-bytes SIZE`, \
         or `ReadOptions::max_bytes` in the library (`StateDict::load_with`, `Model::load_dir_with`)",
        path.display(),
        human_size(*bytes),
        human_size(*max),
        human_size(*used)
    )]
    Budget {
        /// The checkpoint being read.
        path: PathBuf,
        /// The tensor or storage that would take the read past the budget.
        what: String,
        /// What it needs.
        bytes: u64,
        /// What the read had already charged.
        used: u64,
        /// The budget.
        max: u64,
    },

    /// The predictor's queue holds this many sequences already; the request was not queued.
    #[error("queue full ({queued} sequences waiting)")]
    QueueFull {
        /// Sequences waiting when the request came.
        queued: usize,
    },

    /// The predictor is shutting down and takes no more requests.
    #[error("predictor closed")]
    Closed,
}

/// A byte count for people: `1.5 GiB`, `24 bytes`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let digits = if v < 10.0 && v.fract() != 0.0 { 1 } else { 0 };
    format!("{v:.digits$} {}", UNITS[unit])
}

fn source_name(file: &Option<PathBuf>) -> String {
    match file {
        Some(p) => format!(" from {}", p.display()),
        None => String::new(),
    }
}

impl Error {
    /// [`Error::Shape`]: `actual` copied from a tensor's `size()`.
    pub fn shape(what: impl Into<String>, expected: impl Into<String>, actual: &[i64]) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.into(),
            actual: actual.to_vec(),
        }
    }
    /// [`Error::Config`] with `msg`.
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
    /// [`Error::Invalid`] with `msg`.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    /// [`Error::Io`]: `source` met while reading or writing `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }
    /// [`Error::Format`]: the content of `path` is wrong as `msg` says.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
    /// [`Error::Pickle`] with `msg`.
    pub fn pickle(msg: impl Into<String>) -> Self {
        Error::Pickle(msg.into())
    }
}
