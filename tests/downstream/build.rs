//! The few lines a service adds: rnnkit publishes the libtorch directory it linked against
//! (`DEP_RNNKIT_LIBTORCH_LIB`, from its `links` metadata); bake it into the binary's rpath so it
//! runs without LD_LIBRARY_PATH.
fn main() {
    if let Ok(dir) = std::env::var("DEP_RNNKIT_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
