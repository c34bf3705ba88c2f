//! `weights/`: every embedded default is a directory with a README that lists each of its files
//! with its sha256, and the files have those checksums; all of `weights/` stays under 50 MB;
//! each directory loads as the model its config names (`Model::load_dir`, or `CtcModel` for ctc).

mod common;

use sha2::{Digest, Sha256};

const LIMIT: u64 = 50 * 1000 * 1000;

#[test]
fn embedded_defaults_match_their_readmes_and_load() {
    let root = common::root().join("weights");
    let mut total = 0u64;
    let mut dirs = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        dirs += 1;
        let readme = std::fs::read_to_string(dir.join("README.md"))
            .unwrap_or_else(|e| panic!("{}: README.md: {e}", dir.display()));
        for f in std::fs::read_dir(&dir).unwrap() {
            let path = f.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            total += bytes.len() as u64;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name == "README.md" {
                continue;
            }
            let sha = format!("{:x}", Sha256::digest(&bytes));
            let row = readme
                .lines()
                .find(|l| {
                    l.starts_with(&format!("| `{name}` |"))
                        && l.contains('`')
                        && l.len() > 70
                        && l.split('`').any(|c| c.len() == 64)
                })
                .unwrap_or_else(|| {
                    panic!("{}: no README row with the sha256 of {name}", dir.display())
                });
            assert!(
                row.contains(&sha),
                "{}: {name} has sha256 {sha}, the README says:\n{row}",
                dir.display()
            );
        }
        let family = rnnkit::models::family_of(&dir).unwrap();
        if family == "ctc" {
            rnnkit::models::ctc::CtcModel::load_dir(&dir, tch::Device::Cpu).unwrap();
        } else {
            rnnkit::models::Model::load_dir(&dir, tch::Device::Cpu).unwrap();
        }
        println!("{}: {family}, checksums as in its README", dir.display());
    }
    assert_eq!(dirs, 3, "weights/ holds sentiment, translation and speech");
    assert!(total < LIMIT, "weights/ holds {total} bytes, over {LIMIT}");
    println!("weights/: {total} bytes (limit {LIMIT})");
}
