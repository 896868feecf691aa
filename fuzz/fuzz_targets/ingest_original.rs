//! The original `{"src", "payload": "<base64>"}` body, with no CloudEvents headers.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::check(&http::HeaderMap::new(), bytes::Bytes::copy_from_slice(data));
});
