//! Log-mel filterbank features, as `scripts/rnnkit_ctc.py` computes them with the same
//! libtorch operations (so equal bit for bit on the CPU).
//!
//! ```text
//! x (L,) f32 at sample_rate, L > n_fft / 2
//! x_pad  = reflect-pad x by n_fft / 2 on both sides            (center = True)
//! S      = stft(x_pad, n_fft, hop_length, win_length, hann_window(win_length, periodic),
//!               center = False, onesided, complex)              (n_freqs, T), n_freqs = n_fft/2 + 1
//! P      = |S|²                                                  T = ⌊L / hop_length⌋ + 1
//! mel    = Pᵀ · fb                                               (T, n_mels)
//! fb[f, m] = max(0, min((f_f − p_m) / (p_{m+1} − p_m), (p_{m+2} − f_f) / (p_{m+2} − p_{m+1})))
//!          f_f = linspace(0, sr/2, n_freqs), p = mel⁻¹(linspace(mel(f_min), mel(f_max), n_mels + 2)),
//!          mel(f) = 2595 · log10(1 + f / 700) (HTK), mel⁻¹(m) = 700 · (10^(m / 2595) − 1);
//!          computed in f64, then f32
//! y      = log(max(mel, log_floor))
//! normalize = utterance:  y = (y − mean_t y) / (std_t y + 1e-5)   (correction 0, per band)
//! ```

use super::config::{FeatureConfig, Normalize};
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// HTK's mel scale: `2595 · log10(1 + f / 700)`.
pub fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

/// The filterbank `(n_freqs, n_mels)` f32 (see the module doc).
pub fn mel_filterbank(c: &FeatureConfig) -> Tensor {
    let f64cpu = (Kind::Double, Device::Cpu);
    let n_freqs = c.n_fft / 2 + 1;
    let nyquist = c.sample_rate as f64 / 2.0;
    let f_max = c.f_max.unwrap_or(nyquist);
    let all_freqs = Tensor::linspace(0.0, nyquist, n_freqs, f64cpu);
    let m_pts = Tensor::linspace(hz_to_mel(c.f_min), hz_to_mel(f_max), c.n_mels + 2, f64cpu);
    let f_pts = (Tensor::pow_scalar(10.0, &(m_pts / 2595.0)) - 1.0) * 700.0;
    let m = c.n_mels;
    let f_diff = f_pts.narrow(0, 1, m + 1) - f_pts.narrow(0, 0, m + 1);
    let slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1);
    let down = -slopes.narrow(1, 0, m) / f_diff.narrow(0, 0, m);
    let up = slopes.narrow(1, 2, m) / f_diff.narrow(0, 1, m);
    down.minimum(&up).clamp_min(0.0).to_kind(Kind::Float)
}

/// The front end of one model: its filterbank and window, built once.
#[derive(Debug)]
pub struct Frontend {
    /// The configuration.
    pub config: FeatureConfig,
    fb: Tensor,
    window: Tensor,
}

impl Frontend {
    /// Builds the filterbank and the window of `config`.
    pub fn new(config: &FeatureConfig) -> Self {
        Self {
            fb: mel_filterbank(config),
            window: Tensor::hann_window_periodic(
                config.win_length,
                true,
                (Kind::Float, Device::Cpu),
            ),
            config: config.clone(),
        }
    }

    /// Frames of `len` samples: `⌊len / hop_length⌋ + 1`.
    pub fn num_frames(&self, len: i64) -> i64 {
        len / self.config.hop_length + 1
    }

    /// `x (L,)` f32 at the model's rate → features `(T, n_mels)` f32 (see the module doc).
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let len = x.size()[0];
        let pad = c.n_fft / 2;
        if len <= pad {
            return Err(Error::invalid(format!(
                "{len} samples is too short: more than n_fft / 2 = {pad} samples ({:.1} ms) are needed",
                pad as f64 * 1000.0 / c.sample_rate as f64
            )));
        }
        let padded = x
            .view([1, 1, -1])
            .f_pad([pad, pad], "reflect", None)?
            .view([-1]);
        let y = self.frames(&padded)?;
        Ok(match c.normalize {
            Normalize::None => y,
            Normalize::Utterance => {
                let (std, mean) = y.f_std_mean_correction(Some([0i64].as_slice()), 0, true)?;
                (y - mean) / (std + 1e-5)
            }
        })
    }

    /// Already padded samples `(L_pad,)`, `L_pad ≥ n_fft` → the log-mel frames
    /// `(⌊(L_pad − n_fft) / hop_length⌋ + 1, n_mels)` before normalisation: the frames whose
    /// windows lie inside (the module doc's stft, |S|², the filterbank and the log).
    pub fn frames(&self, padded: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let spec = padded.f_stft(
            c.n_fft,
            c.hop_length,
            c.win_length,
            Some(&self.window),
            false,
            true,
            true,
            false,
        )?;
        let power = spec.f_abs()?.f_square()?;
        let mel = power.transpose(0, 1).f_matmul(&self.fb)?;
        Ok(mel.f_clamp_min(c.log_floor)?.f_log()?)
    }
}

/// Features `(T_n, M)` as one zero-padded batch `(N, T_max, M)` on the CPU, with the `T_n`
/// (`feats` not empty).
pub fn pad_features(feats: &[&Tensor]) -> (Tensor, Vec<i64>) {
    let lengths: Vec<i64> = feats.iter().map(|f| f.size()[0]).collect();
    let t = *lengths.iter().max().expect("a batch is not empty");
    let m = feats[0].size()[1];
    let x = Tensor::zeros([feats.len() as i64, t, m], (Kind::Float, Device::Cpu));
    for (r, f) in feats.iter().enumerate() {
        x.get(r as i64).narrow(0, 0, lengths[r]).copy_(f);
    }
    (x, lengths)
}
