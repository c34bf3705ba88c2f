//! The `rnnkit` binary: parse, dispatch to the library, print the error chain, exit non-zero.

mod cli;

use anyhow::{Context, Result};
use clap::Parser;
use cli::args::{Cli, Command};

fn main() {
    // Behave like other Unix filters when the reader goes away (`rnnkit predict | head`):
    // end quietly on SIGPIPE instead of panicking on a failed write.
    // SAFETY: setting a signal disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    rnnkit::nn::inference::keep_freed_memory();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Doctor { json } => {
            let report = cli::doctor::run();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            if !report.problems.is_empty() {
                anyhow::bail!("{} problem(s) found; see above", report.problems.len());
            }
        }
        Command::Parity {
            model,
            reference,
            atol,
            rtol,
            device,
            json,
        } => {
            let reference = reference.unwrap_or_else(|| model.join("reference.safetensors"));
            let device = rnnkit::device::parse_device(&device)?;
            let report =
                rnnkit::models::parity::check_model(&model, &reference, atol, rtol, device)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            if !report.ok {
                anyhow::bail!("outputs differ from PyTorch's beyond the tolerance");
            }
        }
        Command::Inspect(args) => print!("{}", cli::inspect(&args)?),
        Command::Convert(args) => {
            println!("{}", rnnkit::checkpoint::convert::run(&args.options())?)
        }
        Command::Finetune(args) => {
            let cfg = finetune_config(&args)?;
            let report = rnnkit::train::finetune::run(&cfg)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::FinetuneLm(a) => {
            let cfg = run_config(&a, "finetune-lm")?;
            let report = rnnkit::train::lm_finetune::run(&cfg)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::FinetuneSeq2seq(a) => {
            let mut cfg: rnnkit::train::seq2seq_finetune::Seq2SeqFinetuneConfig =
                run_config(&a.run, "finetune-seq2seq")?;
            cfg.resume |= a.resume;
            let report = rnnkit::train::seq2seq_finetune::run(&cfg)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::FinetuneCtc(a) => {
            let mut cfg: rnnkit::train::ctc_finetune::CtcFinetuneConfig =
                run_config(&a.run, "finetune-ctc")?;
            cfg.resume |= a.resume;
            let report = rnnkit::train::ctc_finetune::run(&cfg)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Translate(args) => cli::translate::run(&args)?,
        Command::Transcribe(args) => cli::transcribe::run(&args)?,
        Command::Predict {
            model,
            input,
            batch_size,
            device,
            threads,
        } => {
            // Set before the predictor's worker thread starts: libtorch's pool in that thread
            // and rnnkit's fused kernels (which split their work over `tch::get_num_threads()`)
            // both take this count.
            if let Some(n) = threads {
                tch::set_num_threads(n);
            }
            let device = rnnkit::device::parse_device(&device)?;
            let opts = rnnkit::serve::predictor::PredictorOptions {
                max_batch: batch_size.max(1),
                ..Default::default()
            };
            let window = opts.queue_capacity;
            let predictor = rnnkit::serve::predictor::Predictor::load(&model, device, opts)?;
            let mut reader: Box<dyn std::io::BufRead> = if input == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                let f = std::fs::File::open(&input).with_context(|| format!("opening {input}"))?;
                Box::new(std::io::BufReader::new(f))
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let name = if input == "-" {
                "standard input"
            } else {
                input.as_str()
            };
            rnnkit::serve::predictor::predict_stream(&predictor, &mut reader, &mut out, window)
                .with_context(|| format!("predicting {name}"))?;
        }
        Command::Serve {
            model,
            model_name,
            model_repository,
            addr,
            device,
            max_batch,
            max_wait_ms,
            queue_capacity,
            workers,
            max_body_bytes,
            max_text_chars,
            max_texts,
            max_audio_seconds,
            timeout,
            batch_invariant,
            fused_transcription,
        } => {
            let device = rnnkit::device::parse_device(&device)?;
            let opts = rnnkit::serve::predictor::PredictorOptions {
                max_batch: max_batch.max(1),
                max_wait: std::time::Duration::from_secs_f64(max_wait_ms.max(0.0) / 1000.0),
                workers,
                queue_capacity,
                batch_invariant,
                fused_transcription,
            };
            let serve = rnnkit::serve::http::ServeOptions {
                addr,
                model_name: String::new(),
                max_body_bytes,
                max_text_chars,
                max_texts,
                request_timeout: std::time::Duration::from_secs_f64(timeout.max(0.001)),
                max_audio_seconds,
            };
            match (model, model_repository) {
                (_, Some(dir)) => {
                    let repo = rnnkit::serve::http::Repository {
                        dir,
                        device,
                        predictor: opts,
                    };
                    rnnkit::serve::http::serve_repository(repo, serve)?;
                }
                (Some(model), None) => {
                    let model_name = match model_name {
                        Some(n) => n,
                        None => model
                            .canonicalize()
                            .with_context(|| format!("{}", model.display()))?
                            .file_name()
                            .and_then(|n| n.to_str())
                            .unwrap_or("model")
                            .to_string(),
                    };
                    let backend = rnnkit::serve::http::Backend::load(&model, device, opts)?;
                    let serve = rnnkit::serve::http::ServeOptions {
                        model_name,
                        ..serve
                    };
                    rnnkit::serve::http::serve(backend, serve)?;
                }
                (None, None) => anyhow::bail!("give --model DIR or --model-repository DIR"),
            }
        }
        Command::Bench {
            spec,
            iters,
            warmup,
            budget,
            threads,
        } => {
            if let Some(n) = threads {
                tch::set_num_threads(n);
            }
            let spec: cli::bench::Spec =
                serde_json::from_str(&spec).context("invalid --spec JSON")?;
            let r = cli::bench::run(&spec, iters, warmup, budget)?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::Eval {
            model,
            data,
            batch_size,
            device,
            json,
            greedy,
            beam,
            alpha,
        } => {
            use rnnkit::models::seq2seq::translate::{Search, TranslateOptions};
            let device = rnnkit::device::parse_device(&device)?;
            if rnnkit::models::family_of(&model)? == "ctc" {
                anyhow::ensure!(
                    alpha.is_none(),
                    "--alpha applies to seq2seq models; {} is a ctc model",
                    model.display()
                );
                let opts = rnnkit::models::ctc::transcribe::DecodeOptions {
                    beam: if greedy { 0 } else { beam.unwrap_or(0) },
                    words: None,
                };
                let m = rnnkit::train::speech_eval::eval_speech(
                    &model, &data, batch_size, &opts, 600.0, device,
                )?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&m)?);
                } else {
                    let n = m.numbers.map_or(String::new(), |r| {
                        format!(
                            "  numbers ({} utterances): WER {:.4} CER {:.4}",
                            m.numbers_utterances, r.wer, r.cer
                        )
                    });
                    println!(
                        "utterances {}  WER {:.4}  CER {:.4}  loss {:.4}{n}",
                        m.utterances, m.all.wer, m.all.cer, m.loss
                    );
                }
                return Ok(());
            }
            let family = rnnkit::models::ModelConfig::read(&model.join("config.json"))?.family;
            if family == rnnkit::models::Family::Seq2seq {
                let search = if greedy {
                    Search::Greedy
                } else {
                    Search::Beam {
                        beam: beam.unwrap_or(5),
                        alpha: alpha.unwrap_or(0.6),
                        n_best: 1,
                    }
                };
                let opts = TranslateOptions {
                    search,
                    batch_size: batch_size.max(1),
                    ..Default::default()
                };
                let m = rnnkit::train::translation_eval::eval_translation(
                    &model, &data, &opts, device,
                )?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&m)?);
                } else {
                    println!(
                        "sentences {}  BLEU {:.2}  chrF {:.2}  loss {:.4}  perplexity {:.2}",
                        m.sentences, m.bleu, m.chrf, m.loss, m.perplexity
                    );
                }
                return Ok(());
            }
            if greedy || beam.is_some() || alpha.is_some() {
                anyhow::bail!(
                    "--greedy, --beam and --alpha apply to seq2seq models; {} is a {family:?}",
                    model.display()
                );
            }
            let m = rnnkit::train::eval::eval_dir(&model, &data, batch_size, device)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                println!(
                    "examples {}  loss {:.4}  accuracy {:.4}  macro-F1 {:.4}",
                    m.examples, m.loss, m.accuracy, m.macro_f1
                );
                println!(
                    "confusion (rows: true, columns: predicted): {:?}",
                    m.confusion
                );
            }
        }
    }
    Ok(())
}

/// A `--config FILE` of `command` with `--out`, `--seed` and `--device` laid over it.
fn run_config<T: serde::de::DeserializeOwned>(
    a: &cli::args::RunConfigArgs,
    command: &str,
) -> Result<T> {
    let path = &a.config;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut v: serde_json::Value = rnnkit::json::from_str(&text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{}: not JSON", path.display()))?;
    let o = v
        .as_object_mut()
        .with_context(|| format!("{}: not a JSON object", path.display()))?;
    if let Some(out) = &a.out {
        o.insert("out".into(), serde_json::json!(out));
    }
    if let Some(seed) = a.seed {
        o.insert("seed".into(), seed.into());
    }
    if let Some(d) = &a.device {
        o.insert("device".into(), d.clone().into());
    }
    rnnkit::json::from_value(v)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{}: not a {command} config", path.display()))
}

/// `--config FILE` overlaid with the flags given.
fn finetune_config(a: &cli::args::FinetuneArgs) -> Result<rnnkit::train::finetune::FinetuneConfig> {
    use serde_json::{json, Value};
    let mut v: Value = match &a.config {
        Some(p) => serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{}: not a JSON object", p.display()))?,
        None => json!({}),
    };
    // JSON has no NaN or infinity: say which flag rather than "invalid type: null".
    for (flag, x) in [
        ("--lr", a.lr),
        ("--dropout", a.dropout),
        ("--clip-grad-norm", a.clip_grad_norm),
        ("--clip-grad-value", a.clip_grad_value),
        ("--label-smoothing", a.label_smoothing),
        ("--discriminative-factor", a.discriminative_factor),
    ] {
        if let Some(x) = x.filter(|x| !x.is_finite()) {
            anyhow::bail!("{flag} must be a finite number, got {x}");
        }
    }
    let o = v
        .as_object_mut()
        .context("the finetune config must be a JSON object")?;
    let mut set = |k: &str, x: Value| {
        o.insert(k.to_string(), x);
    };
    macro_rules! opt {
        ($($field:ident),*) => {$(
            if let Some(x) = &a.$field {
                set(stringify!($field), json!(x));
            }
        )*};
    }
    opt!(
        model,
        train,
        valid,
        out,
        labels,
        pooling,
        dropout,
        epochs,
        max_steps,
        batch_size,
        lr,
        clip_grad_norm,
        clip_grad_value,
        class_weights,
        label_smoothing,
        seed,
        early_stopping_patience,
        metric,
        checkpoint_every,
        device,
        log_every
    );
    if a.new_head {
        set("new_head", json!(true));
    }
    if a.gradual_unfreezing {
        set("gradual_unfreezing", json!(true));
    }
    if a.resume {
        set("resume", json!(true));
    }
    if a.no_shuffle {
        set("shuffle", json!(false));
    }
    if a.no_bucket {
        set("bucket", json!(false));
    }
    if a.no_pth {
        set("save_pth", json!(false));
    }
    if !a.freeze.is_empty() {
        set("freeze", json!(a.freeze));
    }
    if let Some(f) = a.discriminative_factor {
        set("discriminative_factor", json!(f));
    }
    if a.optimizer.is_none() && (a.weight_decay.is_some() || a.momentum.is_some() || a.nesterov) {
        anyhow::bail!(
            "--weight-decay, --momentum and --nesterov need --optimizer (adam, adamw or sgd)"
        );
    }
    if a.schedule.is_none() && a.warmup_steps.is_some() {
        anyhow::bail!("--warmup-steps needs --schedule linear_warmup");
    }
    if let Some(name) = &a.optimizer {
        let mut opt = json!({"name": name});
        if let Some(wd) = a.weight_decay {
            opt["weight_decay"] = json!(wd);
        }
        if let Some(m) = a.momentum {
            opt["momentum"] = json!(m);
        }
        if a.nesterov {
            opt["nesterov"] = json!(true);
        }
        set("optimizer", opt);
    }
    if let Some(name) = &a.schedule {
        let mut s = json!({"name": name});
        if let Some(w) = a.warmup_steps {
            s["warmup_steps"] = json!(w);
        }
        set("schedule", s);
    }
    rnnkit::json::from_value(v)
        .map_err(anyhow::Error::msg)
        .with_context(|| match &a.config {
            Some(p) => format!(
                "{} with the flags given: invalid fine-tuning configuration",
                p.display()
            ),
            None => "invalid fine-tuning configuration".to_string(),
        })
}
