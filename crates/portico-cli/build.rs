//! Links the `portico` binary with packed relative relocations (`DT_RELR`) where the C library
//! supports them (glibc 2.36 and later). The binary is position-independent, so the loader
//! applies one relocation per pointer in its tables at every start; packed, those take a few
//! kilobytes instead of about 1.7 MB of the binary that every process would otherwise read and
//! keep resident. An older glibc cannot load such a binary, so there the flag is left out
//! (and `PORTICO_PACK_RELOCS=0` leaves it out anywhere).
//!
//! A release build is also laid out by `link-order.txt` (lld's `--symbol-ordering-file`): the
//! functions that start-up and the event path run, put side by side so that the pages the
//! kernel maps around them are few (`scripts/link-order` makes the file and says why). Only
//! where the linker is lld, Rust's default on x86_64 Linux since 1.90, and no other linker is
//! configured; `PORTICO_LINK_ORDER=0` leaves it out.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PORTICO_PACK_RELOCS");
    println!("cargo:rerun-if-env-changed=PORTICO_LINK_ORDER");
    println!("cargo:rerun-if-changed=link-order.txt");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    // Only a native build can ask the C library it will run with.
    let native = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    let wanted = std::env::var("PORTICO_PACK_RELOCS").as_deref() != Ok("0");
    if linux_gnu && native && wanted && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bin=portico=-Wl,-z,pack-relative-relocs");
    }
    let order = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("link-order.txt");
    if std::env::var("PROFILE").as_deref() == Ok("release")
        && std::env::var("PORTICO_LINK_ORDER").as_deref() != Ok("0")
        && order.is_file()
        && links_with_default_lld()
    {
        println!(
            "cargo:rustc-link-arg-bin=portico=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // Names the binary no longer has (another toolchain or dependency) are skipped.
        println!("cargo:rustc-link-arg-bin=portico=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the binary is linked by rustc's bundled lld: the x86_64 Linux target of rustc 1.90
/// or later, with no linker configured for it (`RUSTC_LINKER`, or a linker in the flags).
fn links_with_default_lld() -> bool {
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || std::env::var_os("RUSTC_LINKER").is_some()
    {
        return false;
    }
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker") || flags.contains("fuse-ld") {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    // `rustc 1.95.0 (59807616e 2026-04-14)`
    version_of(Command::new(rustc).arg("--version")).is_some_and(|v| v >= (1, 90))
}

/// Whether the glibc of the machine building (and, for a native build, running) the binary
/// is at least `major.minor`, as `getconf GNU_LIBC_VERSION` tells (`glibc 2.36`).
fn glibc_at_least(major: u32, minor: u32) -> bool {
    version_of(Command::new("getconf").arg("GNU_LIBC_VERSION")).is_some_and(|v| v >= (major, minor))
}

/// `(major, minor)` of the second word a command prints (`name 1.2.3 …`), if it runs.
fn version_of(command: &mut Command) -> Option<(u32, u32)> {
    let out = command.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().nth(1)?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}
