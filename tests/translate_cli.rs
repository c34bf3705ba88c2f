//! `rnnkit translate`, `rnnkit eval` and `rnnkit finetune-seq2seq` run as a user runs them, on
//! the golden seq2seq directory with a tokenizer (`s2s_tokenizer_wordpiece`): the translations
//! and their scores are those `rnnkit_seq2seq.translate_texts` computed in PyTorch (strings
//! identical, scores to the bit); BLEU and chrF of a model against its own translations are
//! 100 (within 1e-9); `--fused` gives the same translations, scores within 1e-4; `--workers`
//! gives `--threads 1`'s outputs; a fine-tuned directory
//! translates; bad input is refused with a message.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn rnnkit(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rnnkit"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rnnkit");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

/// The golden directories with tokenizers (make_seq2seq_golden.py's WITH_TOKENIZER): one
/// tokenizer for both sides, or a source and a target tokenizer, with their files.
const WITH_TOKENIZERS: [(&str, &[&str]); 2] = [
    ("s2s_tokenizer_wordpiece", &["tokenizer.json"]),
    (
        "s2s_two_tokenizers",
        &["src_tokenizer.json", "tgt_tokenizer.json"],
    ),
];

fn model() -> PathBuf {
    model_dir("s2s_tokenizer_wordpiece")
}

fn model_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/seq2seq")
        .join(name);
    assert!(
        d.join("translate.json").exists(),
        "{} missing; run .venv/bin/python scripts/make_seq2seq_golden.py tests/golden/seq2seq",
        d.display()
    );
    d
}

fn golden() -> Vec<serde_json::Value> {
    golden_of(&model())
}

fn golden_of(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("translate.json")).unwrap();
    serde_json::from_str::<Vec<serde_json::Value>>(&text).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "rnnkit-translate-cli-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn translate_gives_pytorchs_translations_and_scores() {
    for (name, _) in WITH_TOKENIZERS {
        translate_matches(name);
    }
}

/// `--fused`: PyTorch's translations, scores within 1e-4 (rnnkit's kernels round otherwise).
#[test]
fn translate_fused_gives_pytorchs_translations() {
    for (name, _) in WITH_TOKENIZERS {
        let m = model_dir(name);
        let want = golden_of(&m);
        let input: String = want
            .iter()
            .map(|w| format!("{}\n", w["text"].as_str().unwrap()))
            .collect();
        let lines = translate_lines(&m, &input, &["--fused"]);
        assert_eq!(lines.len(), want.len());
        for (i, (got, w)) in lines.iter().zip(&want).enumerate() {
            assert_eq!(got["translation"], w["translation"], "{name} text {i}");
            let want_score = f64::from_bits(w["score_bits"].as_u64().unwrap());
            let diff = (got["score"].as_f64().unwrap() - want_score).abs();
            assert!(diff <= 1e-4, "{name} text {i}: score differs by {diff}");
        }
    }
}

/// `rnnkit translate --model m --device cpu EXTRA` on `input`: its output lines, parsed.
fn translate_lines(m: &std::path::Path, input: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "translate",
        "--model",
        m.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    let out = rnnkit(&args, Some(input));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn translate_matches(name: &str) {
    let m = model_dir(name);
    let want = golden_of(&m);
    assert_eq!(want.len(), 10, "translate.json: texts");
    let input: String = want
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{}\n", serde_json::json!({"id": i, "text": w["text"]})))
        .collect();
    let lines = translate_lines(&m, &input, &[]);
    assert_eq!(lines.len(), want.len());
    for (i, (got, w)) in lines.iter().zip(&want).enumerate() {
        assert_eq!(got["id"], i, "input fields are kept, in input order");
        assert_eq!(
            got["translation"], w["translation"],
            "text {i}: {:?}",
            w["text"]
        );
        let score = got["score"].as_f64().unwrap();
        assert_eq!(
            score.to_bits(),
            w["score_bits"].as_u64().unwrap(),
            "text {i}: score {score}"
        );
    }
    println!(
        "{name}: {} translations equal PyTorch's, scores to the bit",
        lines.len()
    );
}

/// `--workers N` decodes N batches at once, each with one libtorch thread: the output is
/// `--threads 1`'s, byte for byte (greedy, beam search with n-best, sampling), and the calling
/// thread's libtorch thread count is what it was.
#[test]
fn workers_give_the_outputs_of_one_thread() {
    use rnnkit::models::seq2seq::translate::{Search, TranslateOptions, Translator};
    let searches = [
        Search::Greedy,
        Search::Beam {
            beam: 4,
            alpha: 0.6,
            n_best: 2,
        },
        Search::Sample {
            seed: 7,
            temperature: 0.8,
            top_k: 0,
            top_p: 0.9,
        },
    ];
    let mut compared = 0;
    for (name, _) in WITH_TOKENIZERS {
        let m = model_dir(name);
        let tr = Translator::load(&m, tch::Device::Cpu).unwrap();
        let texts: Vec<String> = golden_of(&m)
            .iter()
            .map(|w| w["text"].as_str().unwrap().to_string())
            .collect();
        for search in searches {
            let opts = TranslateOptions {
                search,
                batch_size: 3,
                ..Default::default()
            };
            tch::set_num_threads(1);
            let one = tr.translate(&texts, &opts).unwrap();
            tch::set_num_threads(2);
            for workers in [2, 3, 8] {
                let got = tr
                    .translate(&texts, &TranslateOptions { workers, ..opts })
                    .unwrap();
                assert_eq!(got, one, "{name} {search:?}, {workers} workers");
                assert_eq!(tch::get_num_threads(), 2, "the caller's thread count");
                compared += got.len();
            }
        }
        let cli = |extra: &[&str]| {
            let args = [&["--batch-size", "3", "--n-best", "2"], extra].concat();
            translate_lines(&m, &texts.join("\n"), &args)
        };
        assert_eq!(
            cli(&["--workers", "2"]),
            cli(&["--threads", "1"]),
            "{name}: CLI"
        );
    }
    println!("{compared} outputs with workers equal to one thread's");
}

#[test]
fn eval_scores_bleu_and_chrf_and_refuses_bad_lines() {
    let dir = tmp("eval");
    let pairs: String = golden()
        .iter()
        .filter(|w| !w["translation"].as_str().unwrap().is_empty())
        .map(|w| {
            format!(
                "{}\n",
                serde_json::json!({"src": w["text"], "tgt": w["translation"]})
            )
        })
        .collect();
    std::fs::write(dir.join("pairs.jsonl"), pairs).unwrap();
    let m = model();
    let out = rnnkit(
        &[
            "eval",
            "--model",
            m.to_str().unwrap(),
            "--data",
            dir.join("pairs.jsonl").to_str().unwrap(),
            "--json",
            "--device",
            "cpu",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("{v}");
    // 100 up to the rounding of exp(Σ log p / 4) (sacrebleu's own arithmetic, tested bitwise in
    // translation_metrics_parity.rs).
    let (bleu, chrf) = (v["bleu"].as_f64().unwrap(), v["chrf"].as_f64().unwrap());
    assert!(
        (bleu - 100.0).abs() < 1e-9,
        "its own translations as references: BLEU {bleu}"
    );
    assert!((chrf - 100.0).abs() < 1e-9, "chrF {chrf}");
    assert!(v["loss"].as_f64().unwrap().is_finite());
    std::fs::write(dir.join("bad.jsonl"), "{\"src\": \"only a source\"}\n").unwrap();
    let out = rnnkit(
        &[
            "eval",
            "--model",
            m.to_str().unwrap(),
            "--data",
            dir.join("bad.jsonl").to_str().unwrap(),
            "--device",
            "cpu",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("bad.jsonl")
            && err.contains("line 1")
            && err.contains("tgt"),
        "{err}"
    );
    std::fs::write(
        dir.join("empty.jsonl"),
        "{\"src\": \"a\", \"tgt\": \"b\"}\n\n{\"src\": \"\", \"tgt\": \"b\"}\n",
    )
    .unwrap();
    let out = rnnkit(
        &[
            "eval",
            "--model",
            m.to_str().unwrap(),
            "--data",
            dir.join("empty.jsonl").to_str().unwrap(),
            "--device",
            "cpu",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("empty.jsonl line 3: \"src\" is empty"),
        "{err}"
    );
    // --greedy scores greedy translations: with them as references, BLEU is 100.
    let want = golden();
    let texts: Vec<&str> = want.iter().map(|w| w["text"].as_str().unwrap()).collect();
    let out = rnnkit(
        &[
            "translate",
            "--model",
            m.to_str().unwrap(),
            "--greedy",
            "--device",
            "cpu",
        ],
        Some(&(texts.join("\n") + "\n")),
    );
    assert!(out.status.success());
    let pairs: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .zip(&texts)
        .map(|(l, t)| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{}\n",
                serde_json::json!({"src": t, "tgt": v["translation"]})
            )
        })
        .filter(|l| !l.contains("\"tgt\":\"\""))
        .collect();
    std::fs::write(dir.join("greedy.jsonl"), pairs).unwrap();
    let out = rnnkit(
        &[
            "eval",
            "--model",
            m.to_str().unwrap(),
            "--data",
            dir.join("greedy.jsonl").to_str().unwrap(),
            "--greedy",
            "--json",
            "--device",
            "cpu",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bleu = v["bleu"].as_f64().unwrap();
    assert!(
        (bleu - 100.0).abs() < 1e-9,
        "greedy references, eval --greedy: BLEU {bleu}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn finetune_seq2seq_writes_a_directory_that_translates() {
    for (name, files) in WITH_TOKENIZERS {
        finetune_and_translate(name, files);
    }
}

fn finetune_and_translate(name: &str, tokenizer_files: &[&str]) {
    let dir = tmp(&format!("finetune-{name}"));
    let pairs: String = golden_of(&model_dir(name))
        .iter()
        .filter(|w| !w["text"].as_str().unwrap().is_empty())
        .map(|w| {
            format!(
                "{}\n",
                serde_json::json!({"src": w["text"], "tgt": "una traducción de prueba"})
            )
        })
        .collect();
    std::fs::write(dir.join("train.jsonl"), pairs).unwrap();
    let cfg = serde_json::json!({
        "model": model_dir(name), "train": dir.join("train.jsonl"), "out": dir.join("out"),
        "epochs": 2, "batch_size": 4, "freeze": ["encoder.*"], "device": "cpu",
    });
    std::fs::write(dir.join("cfg.json"), cfg.to_string()).unwrap();
    let out = rnnkit(
        &[
            "finetune-seq2seq",
            "--config",
            dir.join("cfg.json").to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["steps"], 6, "{report}");
    assert!(report["frozen"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.as_str().unwrap().starts_with("encoder.")));
    for f in [
        "config.json",
        "model.safetensors",
        "model.pth",
        "metrics.jsonl",
    ]
    .iter()
    .chain(tokenizer_files)
    {
        assert!(dir.join("out").join(f).exists(), "{name}: {f} written");
    }
    let out = rnnkit(
        &[
            "translate",
            "--model",
            dir.join("out").to_str().unwrap(),
            "--greedy",
            "--device",
            "cpu",
        ],
        Some("use -f to force removal\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second run into the same directory is refused: nothing a user had is replaced.
    let out = rnnkit(
        &[
            "finetune-seq2seq",
            "--config",
            dir.join("cfg.json").to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn translate_refuses_a_classifier_directory() {
    let clf = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/models/clf_tokenizer_attention");
    let out = rnnkit(
        &[
            "translate",
            "--model",
            clf.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        Some("hello\n"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("seq2seq") && err.contains("Classifier"),
        "{err}"
    );
}

/// Bad input to `translate`: each refused with a message naming what is wrong, nothing written.
#[test]
fn translate_refuses_bad_input_with_a_message() {
    let dir = tmp("bad");
    let m = model();
    let err = |args: &[&str], input: &str| {
        let out = rnnkit(args, Some(input));
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = err(
        &[
            "translate",
            "--model",
            m.to_str().unwrap(),
            "--beam",
            "0",
            "--device",
            "cpu",
        ],
        "hello\n",
    );
    assert!(e.contains("beam 0"), "{e}");
    let long = "word ".repeat(300);
    let e = err(
        &[
            "translate",
            "--model",
            m.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &format!("short\n{long}\n"),
    );
    assert!(
        e.contains("- line 2 has") && e.contains("max_length of 256"),
        "{e}"
    );
    // An empty text, as a blank line or as JSON: an error naming the line, not a translation
    // invented from nothing (or a line silently dropped from the output).
    for input in ["short\n\nthird\n", "{\"text\": \"ok\"}\n{\"text\": \"\"}\n"] {
        let e = err(
            &[
                "translate",
                "--model",
                m.to_str().unwrap(),
                "--device",
                "cpu",
            ],
            input,
        );
        assert!(e.contains("- line 2 is empty"), "{input:?}: {e}");
    }
    // No tokenizer file.
    let copy = dir.join("no_tokenizer");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(m.join(f), copy.join(f)).unwrap();
    }
    let e = err(
        &[
            "translate",
            "--model",
            copy.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        "hello\n",
    );
    assert!(e.contains("no source tokenizer file"), "{e}");
    // A tokenizer with more pieces than the model's vocabulary.
    let small = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/seq2seq/s2s_lstm_bi_general_feed");
    let copy = dir.join("vocab");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(small.join(f), copy.join(f)).unwrap();
    }
    std::fs::copy(m.join("tokenizer.json"), copy.join("tokenizer.json")).unwrap();
    let e = err(
        &[
            "translate",
            "--model",
            copy.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        "hello\n",
    );
    assert!(
        e.contains("tokenizer.json") && e.contains("vocab_size is 30"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
