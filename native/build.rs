//! Links GCC's unwinder into the module instead of needing `libgcc_s.so.1` beside Envoy.
//!
//! A hook catches a panic by unwinding (`panic = "unwind"`), and on Linux Rust's standard library
//! asks the linker for the shared unwinder, `-lgcc_s`. Envoy needs no such library, and the
//! distroless images it ships in (Envoy Gateway's default) have none, so the module would not
//! load there. Here `-lgcc_s` finds a linker script of the same name first, which takes GCC's
//! static unwinder, `libgcc_eh.a`, instead: the module then needs only the C library.

use std::path::PathBuf;

fn main() {
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux")
        || std::env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("gnu")
    {
        return;
    }
    // The unwinder's symbols stay inside the module: only Rust's exported hooks are exported.
    if std::fs::write(out.join("libgcc_s.so"), "INPUT(-lgcc_eh)\n").is_ok() {
        println!("cargo:rustc-link-search=native={}", out.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
}
