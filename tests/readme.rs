//! The README's library example is the code of `examples/quickstart.rs` between its
//! `README:begin` / `README:end` markers (that example is compiled and run by scripts/test.sh),
//! and the README stays short enough to read (about 200 lines).

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn readme_library_example_is_the_compiled_quickstart() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let example = std::fs::read_to_string(root().join("examples/quickstart.rs")).unwrap();
    let marker = "<!-- LIBRARY EXAMPLE: examples/quickstart.rs -->\n```rust\n";
    let at = readme
        .find(marker)
        .expect("README has the library example marker")
        + marker.len();
    let block = &readme[at..at + readme[at..].find("```").unwrap()];
    let shown: Vec<&str> = block
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("use "))
        .collect();
    let begin = example.find("// README:begin\n").unwrap() + "// README:begin\n".len();
    let end = example.find("    // README:end").unwrap();
    let compiled: Vec<&str> = example[begin..end]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect();
    assert_eq!(
        shown, compiled,
        "README.md's library example differs from examples/quickstart.rs"
    );
    for u in block.lines().filter(|l| l.starts_with("use ")) {
        assert!(
            example.contains(u),
            "README imports {u:?}, the example does not"
        );
    }
}

#[test]
fn readme_is_for_users_not_a_lab_notebook() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let n = readme.lines().count();
    assert!(
        n <= 210,
        "README.md has {n} lines; measurements and history belong in docs/"
    );
    assert!(
        !readme.contains("../shared"),
        "README points outside the repository"
    );
}
