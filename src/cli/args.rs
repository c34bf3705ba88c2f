//! The command line: clap definitions only. Each subcommand maps to one library call in
//! `main.rs`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "rnnkit",
    version,
    about = "Recurrent networks on libtorch, exactly as PyTorch computes them"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show which libtorch is loaded and what it can do (threads, MKL, oneDNN, CUDA).
    Doctor {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a model directory on the inputs of a PyTorch reference file and compare the outputs.
    Parity {
        /// Model directory (config.json + model.safetensors).
        #[arg(long)]
        model: PathBuf,
        /// Reference file written by scripts/rnnkit_export.py (default: MODEL/reference.safetensors).
        #[arg(long)]
        reference: Option<PathBuf>,
        /// Absolute tolerance.
        #[arg(long, default_value_t = 1e-5)]
        atol: f64,
        /// Relative tolerance.
        #[arg(long, default_value_t = 1e-4)]
        rtol: f64,
        #[arg(long, default_value = "auto")]
        device: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what a checkpoint (.pth zip or legacy, or .safetensors) holds: the tree, dtypes,
    /// shapes, storage sharing, parameter count and the recurrent layers it recognises.
    Inspect(InspectArgs),
    /// Convert a checkpoint between .pth and .safetensors (output format from OUT's extension).
    Convert(ConvertArgs),
    /// Fine-tune a classifier (from a pretrained language model or classifier) with cross-entropy.
    Finetune(Box<FinetuneArgs>),
    /// ULMFiT's second stage: adapt a language model to unlabelled in-domain text (JSONL with
    /// "text"; labels ignored) before `finetune` builds the classifier on it. The config has the
    /// field names of `rnnkit::train::lm_finetune::LmFinetuneConfig`.
    FinetuneLm(RunConfigArgs),
    /// Fine-tune a pretrained seq2seq model on parallel text (JSONL with "src" and "tgt"):
    /// teacher forcing, label-smoothed cross-entropy, parameters frozen by glob. The config has
    /// the field names of `rnnkit::train::seq2seq_finetune::Seq2SeqFinetuneConfig`.
    FinetuneSeq2seq(ResumableRunArgs),
    /// Fine-tune (or, with "from_scratch", train) a ctc speech model on transcribed audio
    /// (JSONL with "wav" and "text"): CTC loss, SpecAugment, parameters frozen by glob. The config
    /// has the field names of `rnnkit::train::ctc_finetune::CtcFinetuneConfig`.
    FinetuneCtc(ResumableRunArgs),
    /// Translate texts with a seq2seq model: plain lines or JSONL ({"text": ...} or
    /// {"src": ...}) in, JSONL out ({"translation", "score"}, and "n_best" with --n-best > 1).
    Translate(TranslateArgs),
    /// Transcribe WAV files with a ctc model: JSONL out, one line per file
    /// ({"file", "text", "score", "words": [{"word", "start", "end"}]}).
    Transcribe(TranscribeArgs),
    /// Predict labels for texts: plain lines or JSONL ({"text": ...}) in, JSONL out.
    Predict {
        #[arg(long)]
        model: PathBuf,
        /// Input file, or - for standard input.
        #[arg(long, default_value = "-")]
        input: String,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[arg(long, default_value = "auto")]
        device: String,
        /// libtorch intra-op threads, which rnnkit's fused kernels use as well (default:
        /// libtorch's choice).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        threads: Option<i32>,
    },
    /// Serve a model over HTTP: POST /v1/predict (classifier) or /v1/translate (seq2seq),
    /// the Open Inference Protocol v2 (/v2/...), GET /healthz, GET /metrics.
    Serve {
        /// The model directory to serve (or --model-repository).
        #[arg(long, required_unless_present = "model_repository")]
        model: Option<PathBuf>,
        /// The model's name under /v2/models/ (default: the model directory's name).
        #[arg(long, conflicts_with = "model_repository")]
        model_name: Option<String>,
        /// Serve every model of a repository DIR/<name>/<version>/ (the highest version of
        /// each), with the repository API to load, reload and unload them.
        #[arg(long, conflicts_with = "model")]
        model_repository: Option<PathBuf>,
        /// Address to listen on (port 0 picks a free one; the bound address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        #[arg(long, default_value = "auto")]
        device: String,
        /// Largest micro-batch (1 disables micro-batching).
        #[arg(long, default_value_t = 32)]
        max_batch: usize,
        /// Longest wait for a micro-batch to fill, in milliseconds.
        #[arg(long, default_value_t = 2.0)]
        max_wait_ms: f64,
        /// Sequences that may wait; beyond that requests get 503.
        #[arg(long, default_value_t = 1024)]
        queue_capacity: usize,
        #[arg(long, default_value_t = 1)]
        workers: usize,
        #[arg(long, default_value_t = 1048576)]
        max_body_bytes: usize,
        #[arg(long, default_value_t = 10000)]
        max_text_chars: usize,
        #[arg(long, default_value_t = 256)]
        max_texts: usize,
        /// Longest audio of a /v1/transcribe request, in seconds.
        #[arg(long, default_value_t = 120.0)]
        max_audio_seconds: f64,
        /// Seconds before a request gets 504.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// Classifier answers bitwise independent of what a text is micro-batched with
        /// (`false`: libtorch's batched head and softmax, a few percent faster).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        batch_invariant: bool,
        /// ctc models: the encoder on rnnkit's fused kernel (faster; scores within 1e-4 of
        /// PyTorch's instead of its bits, the default).
        #[arg(long)]
        fused_transcription: bool,
    },
    /// Time one benchmark configuration (JSON spec; see rnnkit::bench) and print JSON.
    Bench {
        /// e.g. '{"kind": "rnn", "mode": "LSTM", "B": 1, "T": 32, "I": 128, "H": 256}'
        #[arg(long)]
        spec: String,
        #[arg(long, default_value_t = 200)]
        iters: usize,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// Stop timing after this many seconds (at least 3 iterations).
        #[arg(long, default_value_t = 3.0)]
        budget: f64,
        /// libtorch intra-op threads (default: libtorch's choice).
        #[arg(long)]
        threads: Option<i32>,
    },
    /// A classifier: accuracy, macro-F1, loss and confusion matrix on a labelled JSONL file.
    /// A seq2seq model: corpus BLEU and chrF (as sacrebleu computes them) of its translations
    /// (beam 5, α 0.6, or as --greedy/--beam/--alpha say), and the loss per target token, on
    /// JSONL pairs ("src", "tgt"). A ctc model: WER and CER (as jiwer computes them) of its
    /// transcripts, overall and on the lines marked "numbers": true, and the CTC loss, on JSONL
    /// ("wav", "text").
    Eval {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long)]
        json: bool,
        /// Seq2seq: greedy decoding instead of beam search (ctc: the default).
        #[arg(long, conflicts_with_all = ["beam", "alpha"])]
        greedy: bool,
        /// Seq2seq: beam width (default 5); ctc: prefix beam search with this width (default: greedy).
        #[arg(long)]
        beam: Option<usize>,
        /// Seq2seq: the length penalty's α (default 0.6).
        #[arg(long)]
        alpha: Option<f64>,
    },
}

/// Flags of the commands run from a JSON config (`finetune-lm`, `finetune-seq2seq`).
#[derive(Debug, clap::Args)]
pub struct RunConfigArgs {
    /// JSON with the fields of the command's config.
    #[arg(long)]
    pub config: PathBuf,
    /// Overrides the config's output directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Overrides the config's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Overrides the config's device.
    #[arg(long)]
    pub device: Option<String>,
}

/// Flags of `rnnkit finetune-seq2seq` and `rnnkit finetune-ctc`.
#[derive(Debug, clap::Args)]
pub struct ResumableRunArgs {
    /// The config file and its overrides.
    #[command(flatten)]
    pub run: RunConfigArgs,
    /// Continue from OUT/checkpoint.safetensors.
    #[arg(long)]
    pub resume: bool,
}

/// Flags of `rnnkit translate`.
#[derive(Debug, clap::Args)]
pub struct TranslateArgs {
    /// Seq2seq model directory (config.json, weights, tokenizer files).
    #[arg(long)]
    pub model: PathBuf,
    /// Input file, or - for standard input.
    #[arg(long, default_value = "-")]
    pub input: String,
    /// Beam width (1 with --n-best 1 is still beam search; --greedy for argmax decoding).
    #[arg(long, default_value_t = 5)]
    pub beam: usize,
    /// Outputs per sentence (at most --beam).
    #[arg(long, default_value_t = 1)]
    pub n_best: usize,
    /// GNMT length penalty α: scores are divided by ((5 + length) / 6)^α.
    #[arg(long, default_value_t = 0.6)]
    pub alpha: f64,
    /// Greedy decoding instead of beam search.
    #[arg(long, conflicts_with = "sample")]
    pub greedy: bool,
    /// Sample instead of searching, with this seed (sentence i uses seed + i).
    #[arg(long, value_name = "SEED")]
    pub sample: Option<u64>,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Sample from the k most probable tokens only (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: i64,
    /// Sample from the smallest set of tokens whose probability reaches p.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Outputs may have up to ⌊a · source tokens + b⌋ tokens (EOS included) ...
    #[arg(long, default_value_t = 2.0)]
    pub max_len_a: f64,
    /// ... see --max-len-a ...
    #[arg(long, default_value_t = 10.0)]
    pub max_len_b: f64,
    /// ... and never more than this.
    #[arg(long, default_value_t = 256)]
    pub max_len: usize,
    /// Sentences decoded together.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Run the encoder, decoder and output layer on rnnkit's fused kernels (CPU): faster;
    /// scores within 1e-4 of PyTorch's instead of its bits (the default).
    #[arg(long)]
    pub fused: bool,
    /// Decode this many batches at once on the CPU, each on its own thread with one libtorch
    /// thread (outputs as with --threads 1); 1: one batch at a time on --threads threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: u16,
    /// Draw the first sentence's attention (source tokens × target tokens) into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub attention_plot: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// libtorch intra-op threads (default: libtorch's choice).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub threads: Option<i32>,
}

/// Flags of `rnnkit transcribe`.
#[derive(Debug, clap::Args)]
pub struct TranscribeArgs {
    /// ctc model directory (config.json, weights).
    #[arg(long)]
    pub model: PathBuf,
    /// WAV files (PCM 8–32 bit or 32-bit float, any channel count and common rate).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Prefix beam search with this many prefixes; 0 = greedy decoding.
    #[arg(long, default_value_t = 0)]
    pub beam: usize,
    /// A word list (one word per line): beam search outputs only these words.
    #[arg(long, value_name = "FILE")]
    pub words: Option<PathBuf>,
    /// Files decoded together.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Longer files are refused (memory grows with the length), unless --chunk-seconds.
    #[arg(long, default_value_t = 600.0)]
    pub max_seconds: f64,
    /// Transcribe each file in consecutive pieces of this many seconds, each alone as a file of
    /// its own (texts joined, scores summed, times shifted): any length in bounded memory.
    /// With --stream: the size of the pieces fed to the stream (default 0.5).
    #[arg(long, value_name = "SECONDS")]
    pub chunk_seconds: Option<f64>,
    /// Feed each file in pieces to a unidirectional model carrying its state from piece to
    /// piece: the whole file's result in bounded memory, any length.
    #[arg(long)]
    pub stream: bool,
    /// Run the encoder on rnnkit's fused kernel: faster; log-probabilities within 1e-5 of
    /// PyTorch's instead of its bits (the default).
    #[arg(long)]
    pub fused: bool,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// libtorch intra-op threads (default: libtorch's choice).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub threads: Option<i32>,
}

/// Flags of `rnnkit finetune`; each overrides the same field of `--config FILE` (JSON with the
/// field names of `rnnkit::train::finetune::FinetuneConfig`).
#[derive(Debug, clap::Args, Default)]
pub struct FinetuneArgs {
    /// JSON file with any of the fields below (flags win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Pretrained model directory.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Training data (JSONL with "text" or "ids", and "label").
    #[arg(long)]
    pub train: Option<PathBuf>,
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Class names of a new head, comma-separated (negative,positive).
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<String>>,
    #[arg(long)]
    pub new_head: bool,
    /// last | mean | max | concat | attention
    #[arg(long)]
    pub pooling: Option<String>,
    #[arg(long)]
    pub dropout: Option<f64>,
    #[arg(long)]
    pub epochs: Option<u64>,
    #[arg(long)]
    pub max_steps: Option<u64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// adam | adamw | sgd
    #[arg(long)]
    pub optimizer: Option<String>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long)]
    pub momentum: Option<f64>,
    #[arg(long)]
    pub nesterov: bool,
    /// constant | slanted_triangular | one_cycle | cosine | linear_warmup
    #[arg(long)]
    pub schedule: Option<String>,
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// Glob over parameter names to keep frozen (repeatable): --freeze 'encoder.*'
    #[arg(long)]
    pub freeze: Vec<String>,
    #[arg(long)]
    pub gradual_unfreezing: bool,
    #[arg(long)]
    pub discriminative_factor: Option<f64>,
    #[arg(long)]
    pub clip_grad_norm: Option<f64>,
    #[arg(long)]
    pub clip_grad_value: Option<f64>,
    #[arg(long, value_delimiter = ',')]
    pub class_weights: Option<Vec<f64>>,
    #[arg(long)]
    pub label_smoothing: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub no_shuffle: bool,
    #[arg(long)]
    pub no_bucket: bool,
    #[arg(long)]
    pub early_stopping_patience: Option<u64>,
    /// accuracy | macro_f1 | loss
    #[arg(long)]
    pub metric: Option<String>,
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Continue from OUT/checkpoint.safetensors.
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Do not write model.pth beside model.safetensors.
    #[arg(long)]
    pub no_pth: bool,
}

/// Arguments of `rnnkit inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// A .pth/.pt/.bin (torch.save, zip or legacy) or .safetensors file; the format is read
    /// from the content, not the extension.
    pub file: PathBuf,
    /// Only the sub-tree at this dotted path (e.g. model_state_dict).
    #[arg(long)]
    pub key: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Items shown per list, tuple or set (dict entries are always all shown).
    #[arg(long, default_value_t = 20)]
    pub max_items: usize,
}

/// Arguments of `rnnkit convert`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConvertArgs {
    /// Input checkpoint (.pth zip or legacy, or .safetensors; detected from the content).
    pub input: PathBuf,
    /// Output file: .safetensors, or .pth / .pt / .bin for torch.save format.
    pub output: PathBuf,
    /// Sub-tree to convert, as a dotted path (e.g. model_state_dict). For a safetensors input,
    /// the tensors named `KEY.*`, with `KEY.` removed.
    #[arg(long)]
    pub key: Option<String>,
    /// Remove this prefix from every name that has it (repeatable). `auto` removes `module.` and
    /// `_orig_mod.` when every name carries them.
    #[arg(long)]
    pub strip_prefix: Vec<String>,
    /// Rename a name prefix, OLD=NEW (repeatable; applied after --strip-prefix).
    #[arg(long)]
    pub rename: Vec<String>,
    /// Cast floating-point tensors to this dtype (float32, float16, bfloat16, float64).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Reading budget: refuse to load more than SIZE bytes of storages, or to materialise more
    /// than SIZE bytes of tensors (each view's numel × element size), checked before
    /// allocating. A number with an optional K, M, G or T suffix (powers of 1024) [default: 16G]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_bytes: Option<u64>,
}

/// `--max-bytes`: `16G`, `512M`, `1073741824`.
fn parse_size(s: &str) -> Result<u64, String> {
    rnnkit::checkpoint::budget::parse_size(s)
}

impl ConvertArgs {
    /// The library's options for these arguments.
    pub fn options(&self) -> rnnkit::checkpoint::convert::ConvertOptions {
        rnnkit::checkpoint::convert::ConvertOptions {
            input: self.input.clone(),
            output: self.output.clone(),
            key: self.key.clone(),
            strip_prefix: self.strip_prefix.clone(),
            rename: self.rename.clone(),
            dtype: self.dtype.clone(),
            read: rnnkit::checkpoint::ReadOptions::with_max_bytes(
                self.max_bytes
                    .unwrap_or(rnnkit::checkpoint::DEFAULT_MAX_BYTES),
            ),
        }
    }
}
