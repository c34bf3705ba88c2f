//! Embeds an rpath to libtorch's `lib/` directory in every binary, test and example of this
//! package, so they run from a plain shell without `LD_LIBRARY_PATH` or an activated venv.
//! It also keeps libtorch_cuda linked where the wheel has it, and compiles the small
//! inference-mode and OpenMP shim. torch-sys reports the directory it linked against through its `links` metadata.

fn main() {
    inference_mode_shim();
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        // Resolve the .venv/libtorch symlink so the rpath survives a moved cwd.
        let lib = std::fs::canonicalize(&lib)
            .map(|p| p.display().to_string())
            .unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=RNNKIT_LIBTORCH_LIB={lib}");
        // Crates that depend on rnnkit read this as DEP_RNNKIT_LIBTORCH_LIB (`links = "rnnkit"`)
        // and bake the same rpath into their own binaries.
        println!("cargo:libtorch_lib={lib}");
        // The linker drops libtorch_cuda under --as-needed (nothing references it directly), and
        // then libtorch never registers its CUDA backend: keep it so `--device cuda` can work.
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}

/// Compiles `src/nn/inference_mode.cpp` (c10::InferenceMode behind a C ABI) against the headers of
/// the same libtorch torch-sys links.
fn inference_mode_shim() {
    println!("cargo:rerun-if-changed=src/nn/inference_mode.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Ok(libtorch) = std::env::var("LIBTORCH") else {
        panic!("LIBTORCH is not set: run scripts/setup.sh (it creates .venv/libtorch for .cargo/config.toml)");
    };
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .file("src/nn/inference_mode.cpp")
        .include(format!("{libtorch}/include"))
        .flag("-std=c++17")
        .flag("-fopenmp")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .warnings(false)
        .compile("rnnkit_inference_mode");
    // GOMP_* resolve against libgomp.so.1; at run time that is libtorch's copy (same soname,
    // found first through the rpath), so the shim's parallel regions share libtorch's threads.
    println!("cargo:rustc-link-lib=gomp");
}
