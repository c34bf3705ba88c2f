//! Audio in: a WAV file (RIFF PCM 8/16/24/32-bit integer or 32-bit float, any channel count;
//! read with `hound`) → mono f32 samples at the model's rate, as `scripts/rnnkit_ctc.py` does it.
//!
//! ```text
//! integer samples  x = v / 2^(bits−1)          (8-bit: the stored byte minus 128, over 128)
//! float samples    x = v
//! mono             x = mean over channels      torch.mean(x (L, C), dim=1)
//! resample         sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99 (torchaudio's
//!                  formula, written out in `resample`): rates reduced by their gcd to o → n,
//!                  kernels (n, 1, o + 2w) in f64 then f32, w = ⌈6·o / (0.99·min(o, n))⌉,
//!                  y = conv1d(pad(x, (w, w + o)), kernels, stride o), (1, n, F) → n·F samples
//!                  in time order, cut to ⌈n·L / o⌉
//! ```
//! Both languages run the same libtorch operations, so resampled samples are equal bit for bit.
//! Resampling is written out rather than taken from a Rust crate because PyTorch must compute
//! the same samples (torchaudio has no wheel for torch 2.13).

use crate::error::{Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The most kernel elements `resample` builds (n · (o + 2w)): rates whose gcd leaves larger
/// kernels (44,101 Hz → 8,000 Hz) are refused.
pub const MAX_RESAMPLE_KERNEL: i64 = 1 << 22;

/// Mono samples and their rate.
#[derive(Debug)]
pub struct Audio {
    /// `(L,)` f32 on the CPU.
    pub samples: Tensor,
    /// Hz.
    pub sample_rate: i64,
}

/// What `read_wav` found in the header.
#[derive(Debug, Clone, Copy)]
pub struct WavInfo {
    /// Channels.
    pub channels: u16,
    /// Hz.
    pub sample_rate: u32,
    /// Bits per sample.
    pub bits: u16,
    /// Float samples (format 3) rather than integers.
    pub float: bool,
    /// Samples per channel.
    pub frames: u32,
}

/// Reads the header of `path` only.
pub fn wav_info(path: &Path) -> Result<WavInfo> {
    let reader = open(path)?;
    Ok(info_of(&reader))
}

fn open(path: &Path) -> Result<hound::WavReader<std::io::BufReader<std::fs::File>>> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    hound::WavReader::open(path).map_err(|e| {
        Error::format(
            path,
            format!("not a WAV file rnnkit can read (RIFF PCM or float): {e}"),
        )
    })
}

fn info_of<R: std::io::Read>(r: &hound::WavReader<R>) -> WavInfo {
    let s = r.spec();
    WavInfo {
        channels: s.channels,
        sample_rate: s.sample_rate,
        bits: s.bits_per_sample,
        float: s.sample_format == hound::SampleFormat::Float,
        frames: r.duration(),
    }
}

/// Reads `path` as mono f32 at its own rate. Refuses a file of more than `max_seconds`
/// (memory grows with the length) and a file without samples, naming the file.
pub fn read_wav(path: &Path, max_seconds: f64) -> Result<Audio> {
    decode(open(path)?, path, max_seconds)
}

/// [`read_wav`] of a WAV file in memory (an HTTP body); errors name `name`.
pub fn read_wav_bytes(bytes: &[u8], name: &Path, max_seconds: f64) -> Result<Audio> {
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| {
        Error::format(
            name,
            format!("not a WAV file rnnkit can read (RIFF PCM or float): {e}"),
        )
    })?;
    decode(reader, name, max_seconds)
}

fn decode<R: std::io::Read>(
    mut reader: hound::WavReader<R>,
    path: &Path,
    max_seconds: f64,
) -> Result<Audio> {
    let info = checked_info(&reader, path)?;
    let seconds = info.frames as f64 / info.sample_rate as f64;
    if seconds > max_seconds {
        return Err(Error::format(
            path,
            format!(
                "{seconds:.1} s of audio is over the limit of {max_seconds} s per file \
                 (split the file, or raise the limit: --max-seconds; or transcribe it in pieces: \
                 --chunk-seconds)"
            ),
        ));
    }
    read_frames(&mut reader, &info, (0, info.frames as usize), path)
}

/// The header of an open file, refused without channels, rate or samples, or in a sample
/// format rnnkit does not read.
fn checked_info<R: std::io::Read>(reader: &hound::WavReader<R>, path: &Path) -> Result<WavInfo> {
    let info = info_of(reader);
    if info.channels == 0 || info.sample_rate == 0 {
        return Err(Error::format(
            path,
            format!(
                "WAV header says {} channels at {} Hz",
                info.channels, info.sample_rate
            ),
        ));
    }
    if info.frames == 0 {
        return Err(Error::format(path, "the WAV file holds no samples"));
    }
    if !matches!((info.float, info.bits), (true, 32) | (false, 1..=32)) {
        return Err(Error::format(
            path,
            format!(
                "{}-bit {} samples are not supported (integer 8–32 bit or 32-bit float)",
                info.bits,
                if info.float { "float" } else { "integer" }
            ),
        ));
    }
    Ok(info)
}

/// The next `frames` frames of `reader`, which has read `before` frames, as mono f32.
fn read_frames<R: std::io::Read>(
    reader: &mut hound::WavReader<R>,
    info: &WavInfo,
    (before, frames): (usize, usize),
    path: &Path,
) -> Result<Audio> {
    let bad = |e: hound::Error| Error::format(path, format!("reading samples: {e}"));
    let n = frames * info.channels as usize;
    let mut data = Vec::with_capacity(n);
    if info.float {
        for s in reader.samples::<f32>().take(n) {
            data.push(s.map_err(bad)?);
        }
    } else {
        let scale = (1u64 << (info.bits - 1)) as f32;
        for s in reader.samples::<i32>().take(n) {
            data.push(s.map_err(bad)? as f32 / scale);
        }
    }
    if data.len() != n {
        return Err(Error::format(
            path,
            format!(
                "the header promises {} samples, the file holds {}",
                info.frames as usize * info.channels as usize,
                before * info.channels as usize + data.len()
            ),
        ));
    }
    let t = Tensor::from_slice(&data);
    let samples = if info.channels > 1 {
        t.view([-1, info.channels as i64])
            .mean_dim(1, false, Kind::Float)
    } else {
        t
    };
    Ok(Audio {
        samples,
        sample_rate: info.sample_rate as i64,
    })
}

/// Reads `path` in consecutive pieces of `chunk_seconds`, each as [`read_wav`] would read a
/// file holding only that piece, and calls `f` with it and its first frame's index; a last
/// piece shorter than half a chunk joins the one before it. Memory holds one piece (at most
/// 1.5 chunks) whatever the file's length.
pub fn read_wav_chunked(
    path: &Path,
    chunk_seconds: f64,
    mut f: impl FnMut(Audio, u64) -> Result<()>,
) -> Result<()> {
    let mut reader = open(path)?;
    let info = checked_info(&reader, path)?;
    if !(chunk_seconds > 0.0 && chunk_seconds.is_finite()) {
        return Err(Error::invalid(format!(
            "chunk length must be a positive number of seconds, got {chunk_seconds}"
        )));
    }
    let chunk = ((chunk_seconds * info.sample_rate as f64).round() as u64).max(1);
    for (start, end) in chunk_bounds(info.frames as u64, chunk) {
        let audio = read_frames(
            &mut reader,
            &info,
            (start as usize, (end - start) as usize),
            path,
        )?;
        f(audio, start)?;
    }
    Ok(())
}

/// `[start, end)` frame ranges of `chunk` frames covering `total`; a last range shorter than
/// half a chunk is merged into the one before.
fn chunk_bounds(total: u64, chunk: u64) -> Vec<(u64, u64)> {
    let mut starts: Vec<u64> = (0..total).step_by(chunk as usize).collect();
    if starts.len() > 1 && total - starts[starts.len() - 1] < chunk.div_ceil(2) {
        starts.pop();
    }
    let ends = starts.iter().skip(1).copied().chain(std::iter::once(total));
    starts.iter().copied().zip(ends).collect()
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `x (L,)` f32 from `orig` Hz to `new` Hz (see the module doc); the identity when they agree.
pub fn resample(x: &Tensor, orig: i64, new: i64) -> Result<Tensor> {
    let Some(r) = Resampler::new(orig, new)? else {
        return Ok(x.shallow_clone());
    };
    let (before, after) = r.pads();
    let padded = x.view([1, 1, -1]).f_constant_pad_nd([before, after])?;
    let y = r.apply(&padded.view([-1]))?;
    let target = r.output_len(x.size()[0]);
    Ok(y.narrow(0, 0, target.min(y.size()[0])))
}

/// The resampling of one pair of rates (see the module doc): `o → n` phases, half-width `w`
/// and the kernels, built once.
#[derive(Debug)]
pub struct Resampler {
    o: i64,
    n: i64,
    width: i64,
    kernels: Tensor,
}

impl Resampler {
    /// The resampler from `orig` Hz to `new` Hz; None when the rates agree (nothing to do).
    pub fn new(orig: i64, new: i64) -> Result<Option<Self>> {
        if orig < 1 || new < 1 {
            return Err(Error::invalid(format!(
                "cannot resample from {orig} Hz to {new} Hz"
            )));
        }
        let g = gcd(orig, new);
        let (o, n) = (orig / g, new / g);
        if o == n {
            return Ok(None);
        }
        const LPW: f64 = 6.0;
        let base = o.min(n) as f64 * 0.99;
        let width = (LPW * o as f64 / base).ceil() as i64;
        if n * (o + 2 * width) > MAX_RESAMPLE_KERNEL {
            return Err(Error::invalid(format!(
                "cannot resample from {orig} Hz to {new} Hz: their greatest common divisor {g} leaves \
                 {o} → {n} phases, a kernel of {} elements (limit {MAX_RESAMPLE_KERNEL}); convert the \
                 file to a rate with a larger common divisor first (e.g. 8000, 16000, 22050, 44100, 48000 Hz)",
                n * (o + 2 * width)
            )));
        }
        let f64cpu = (Kind::Double, Device::Cpu);
        let idx = Tensor::arange_start(-width, width + o, f64cpu).view([1, 1, -1]) / o as f64;
        let t = Tensor::arange_start_step(0, -n, -1, f64cpu).view([-1, 1, 1]) / n as f64 + idx;
        let t = (t * base).clamp(-LPW, LPW);
        let window = (&t * (std::f64::consts::PI / LPW / 2.0)).cos().square();
        let t = t * std::f64::consts::PI;
        let scale = base / o as f64;
        let sinc = t.sin() / &t;
        let kernels = sinc.where_self(&t.ne(0.0), &Tensor::ones_like(&t));
        let kernels = (kernels * (window * scale)).to_kind(Kind::Float);
        Ok(Some(Self {
            o,
            n,
            width,
            kernels,
        }))
    }

    /// Zeros before and after the input: `(w, w + o)`.
    pub fn pads(&self) -> (i64, i64) {
        (self.width, self.width + self.o)
    }

    /// Input samples per output block (`o + 2w`), and between blocks (`o`).
    pub fn window(&self) -> (i64, i64) {
        (self.o + 2 * self.width, self.o)
    }

    /// Output samples of `len` input samples: `⌈n · len / o⌉`.
    pub fn output_len(&self, len: i64) -> i64 {
        (self.n * len + self.o - 1) / self.o
    }

    /// Padded samples `(L_pad,)`, `L_pad ≥ o + 2w` → the `n · F` samples of the
    /// `F = ⌊(L_pad − o − 2w) / o⌋ + 1` blocks inside, in time order.
    pub fn apply(&self, padded: &Tensor) -> Result<Tensor> {
        let y = padded.view([1, 1, -1]).f_conv1d(
            &self.kernels,
            None::<Tensor>,
            [self.o],
            [0],
            [1],
            1,
        )?;
        Ok(y.transpose(1, 2).reshape([-1]))
    }
}

#[cfg(test)]
mod tests {
    use super::chunk_bounds;

    #[test]
    fn chunks_cover_the_file_and_a_short_tail_joins_the_last() {
        assert_eq!(chunk_bounds(9, 4), vec![(0, 4), (4, 9)]);
        assert_eq!(chunk_bounds(10, 4), vec![(0, 4), (4, 8), (8, 10)]);
        assert_eq!(chunk_bounds(12, 4), vec![(0, 4), (4, 8), (8, 12)]);
        assert_eq!(chunk_bounds(3, 4), vec![(0, 3)]);
        assert_eq!(chunk_bounds(1, 1), vec![(0, 1)]);
    }
}
