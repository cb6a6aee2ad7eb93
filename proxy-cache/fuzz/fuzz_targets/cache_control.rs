//! Feeds arbitrary bytes to the Cache-Control, request Cache-Control/Pragma and
//! CDN-Cache-Control parsers. Each `\n`-separated chunk that is a valid `HeaderValue` becomes one
//! field line, so combining several lines is exercised too. The parsers must never panic.
//!
//! Run with `cargo +nightly fuzz run cache_control` from `proxy-cache/`.

#![no_main]

use http::header::{CACHE_CONTROL, HeaderName, PRAGMA};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use proxy_cache::directives::{parse_request, parse_response, parse_targeted};

fuzz_target!(|data: &[u8]| {
    let cdn = HeaderName::from_static("cdn-cache-control");
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(CACHE_CONTROL, value.clone());
            headers.append(PRAGMA, value.clone());
            headers.append(cdn.clone(), value);
        }
    }
    let _ = parse_response(&headers);
    let _ = parse_request(&headers);
    let _ = parse_targeted(&headers, &cdn);

    // Pragma alone: a request without Cache-Control.
    let mut pragma_only = HeaderMap::new();
    for value in headers.get_all(PRAGMA) {
        pragma_only.append(PRAGMA, value.clone());
    }
    let _ = parse_request(&pragma_only);
});
