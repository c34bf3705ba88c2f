//! `rnnkit translate`: lines or JSONL in, JSONL out, and the attention plot.
//!
//! Input lines are plain text, or JSON objects with `"text"` or `"src"` (other fields are
//! copied to the output line). Each output line:
//! `{"translation": best, "score": s, "tokens": [...]}` (+ `"n_best": [{"translation", "score",
//! "raw_score", "tokens"}, …]` with `--n-best` > 1). The plot is an SVG heat map of α (N_t × N_s),
//! one row per target token, one column per source token, darker for more weight.

use crate::cli::args::TranslateArgs;
use anyhow::{Context, Result};
use rnnkit::models::seq2seq::decode::MaxLength;
use rnnkit::models::seq2seq::translate::{
    encode_sources_named, Search, TranslateOptions, Translator,
};
use std::io::{BufRead, Write};
use tch::Tensor;

/// Runs the command.
pub fn run(a: &TranslateArgs) -> Result<()> {
    if let Some(n) = a.threads {
        tch::set_num_threads(n);
    }
    let device = rnnkit::device::parse_device(&a.device)?;
    let mut tr = Translator::load(&a.model, device)?;
    tr.model.set_fused_inference(a.fused)?;
    let search = match (a.greedy, a.sample) {
        (true, _) => Search::Greedy,
        (false, Some(seed)) => Search::Sample {
            seed,
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
        },
        (false, None) => Search::Beam {
            beam: a.beam,
            alpha: a.alpha,
            n_best: a.n_best.min(a.beam).max(1),
        },
    };
    let opts = TranslateOptions {
        search,
        max_len: MaxLength {
            a: a.max_len_a,
            b: a.max_len_b,
            cap: a.max_len,
        },
        batch_size: a.batch_size.max(1),
        workers: a.workers.into(),
    };
    let reader: Box<dyn BufRead> = if a.input == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(&a.input).with_context(|| format!("opening {}", a.input))?;
        Box::new(std::io::BufReader::new(f))
    };
    let (mut texts, mut extra) = (Vec::new(), Vec::new());
    // One output line per input line: a blank line is refused, not skipped, so that output
    // line k is always input line k's translation.
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {} line {}", a.input, i + 1))?;
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(mut o)) => {
                let text = ["text", "src"]
                    .iter()
                    .find_map(|k| o.remove(*k))
                    .and_then(|v| v.as_str().map(str::to_string))
                    .with_context(|| {
                        format!("{} line {}: no \"text\" or \"src\"", a.input, i + 1)
                    })?;
                texts.push(text);
                extra.push(o);
            }
            _ => {
                texts.push(line);
                extra.push(Default::default());
            }
        }
    }
    let ids = encode_sources_named(&tr.src_tokenizer, tr.model.config.max_length, &texts, |k| {
        format!("{} line {}", a.input, k + 1)
    })?;
    let outputs = tr.translate_ids(&ids, &opts)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (hyps, mut o) in outputs.iter().zip(extra) {
        let best = hyps.first().context("no output")?;
        o.insert("translation".into(), best.text.clone().into());
        o.insert("score".into(), best.hypothesis.score.into());
        o.insert("tokens".into(), best.hypothesis.tokens.clone().into());
        if hyps.len() > 1 || matches!(opts.search, Search::Beam { n_best, .. } if n_best > 1) {
            let list: Vec<serde_json::Value> = hyps
                .iter()
                .map(|h| {
                    serde_json::json!({"translation": h.text, "score": h.hypothesis.score,
                        "raw_score": h.hypothesis.raw_score, "tokens": h.hypothesis.tokens})
                })
                .collect();
            o.insert("n_best".into(), list.into());
        }
        writeln!(out, "{}", serde_json::Value::Object(o))?;
    }
    out.flush()?;
    if let (Some(path), Some(first)) = (&a.attention_plot, outputs.first()) {
        let tokens = &first.first().context("no output")?.hypothesis.tokens;
        // The ids that were translated.
        let ids = &ids[0];
        let src = Tensor::from_slice(ids)
            .view([1, ids.len() as i64])
            .to_device(device);
        let alpha = tr.model.attention(&src, ids.len() as i64, tokens)?;
        let label = |t: &rnnkit::models::Tokenizer, id: i64| {
            t.id_to_token(id).unwrap_or_else(|| id.to_string())
        };
        let cols: Vec<String> = ids.iter().map(|&i| label(&tr.src_tokenizer, i)).collect();
        let rows: Vec<String> = tokens
            .iter()
            .map(|&i| label(&tr.tgt_tokenizer, i))
            .collect();
        let svg = attention_svg(&cols, &rows, &alpha)?;
        rnnkit::checkpoint::atomic::write_atomic(path, |w| {
            w.write_all(svg.as_bytes())
                .map_err(rnnkit::checkpoint::atomic::write_err(path))
        })?;
        eprintln!("attention plot: {}", path.display());
    }
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG heat map of `alpha` (rows × cols), labelled.
fn attention_svg(cols: &[String], rows: &[String], alpha: &Tensor) -> Result<String> {
    let values: Vec<f32> =
        Vec::<f32>::try_from(&alpha.to_kind(tch::Kind::Float).contiguous().view([-1]))?;
    let (cell, left, top) = (28.0, 120.0, 110.0);
    let (w, h) = (
        left + cell * cols.len() as f64 + 20.0,
        top + cell * rows.len() as f64 + 20.0,
    );
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    for (j, c) in cols.iter().enumerate() {
        let x = left + cell * (j as f64 + 0.5);
        s += &format!(
            "<text x=\"{x}\" y=\"{}\" transform=\"rotate(-60 {x} {})\">{}</text>\n",
            top - 6.0,
            top - 6.0,
            escape(c)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + cell * i as f64;
        s += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            left - 6.0,
            y + cell * 0.65,
            escape(r)
        );
        for j in 0..cols.len() {
            let v = values
                .get(i * cols.len() + j)
                .copied()
                .unwrap_or(0.0)
                .clamp(0.0, 1.0);
            let shade = (255.0 * (1.0 - v)).round() as u8;
            s += &format!(
                "<rect x=\"{}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"rgb({shade},{shade},255)\"><title>{:.3}</title></rect>\n",
                left + cell * j as f64,
                v
            );
        }
    }
    s += "</svg>\n";
    Ok(s)
}
