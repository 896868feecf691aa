//! Links the `portico` binary with packed relative relocations (`DT_RELR`) where the C library
//! supports them (glibc 2.36 and later). The binary is position-independent, so the loader
//! applies one relocation per pointer in its tables at every start; packed, those take a few
//! kilobytes instead of about 1.7 MB of the binary that every process would otherwise read and
//! keep resident. An older glibc cannot load such a binary, so there the flag is left out
//! (and `PORTICO_PACK_RELOCS=0` leaves it out anywhere).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PORTICO_PACK_RELOCS");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    // Only a native build can ask the C library it will run with.
    let native = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    let wanted = std::env::var("PORTICO_PACK_RELOCS").as_deref() != Ok("0");
    if linux_gnu && native && wanted && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bin=portico=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the glibc of the machine building (and, for a native build, running) the binary
/// is at least `major.minor`, as `getconf GNU_LIBC_VERSION` tells (`glibc 2.36`).
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.split_whitespace().nth(1) else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}
