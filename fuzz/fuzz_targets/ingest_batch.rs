//! A batch of CloudEvents (`Content-Type: application/cloudevents-batch+json`).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/cloudevents-batch+json"),
    );
    common::check(&headers, bytes::Bytes::copy_from_slice(data));
});
