//! Embeds an rpath to libtorch's `lib/` directory in every binary, test and example of this
//! package, so they run from a plain shell without `LD_LIBRARY_PATH` or an activated venv.
//! It also keeps libtorch_cuda linked where the wheel has it. torch-sys reports the directory it linked against through its `links` metadata.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        // Resolve the .venv/libtorch symlink so the rpath survives a moved cwd.
        let lib = std::fs::canonicalize(&lib)
            .map(|p| p.display().to_string())
            .unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=RNNKIT_LIBTORCH_LIB={lib}");
        // The linker drops libtorch_cuda under --as-needed (nothing references it directly), and
        // then libtorch never registers its CUDA backend: keep it so `--device cuda` can work.
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
