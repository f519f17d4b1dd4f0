//! The sandbox helper as a binary of its own, for this crate's tests and benchmark. The `kiln`
//! binary exposes the same entry point as `kiln sandbox-helper`.

fn main() {
    kiln_sandbox::helper_main()
}
