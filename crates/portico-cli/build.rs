//! `scripts/release` lays the binary out by `link-order.txt` (a linker argument naming the
//! file): a new file must relink the binary, though the arguments stay the same.
fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
}
