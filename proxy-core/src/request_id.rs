//! Request ids: kept when the client sent a sane one, generated otherwise.

use http::HeaderValue;

/// Longest client-supplied id we keep.
const MAX_LEN: usize = 128;

/// True when a client-supplied id is short and made of unreserved characters, so it is safe to
/// log and to copy into other headers.
pub fn is_valid(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LEN
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

/// A new random id: 32 lowercase hex digits (128 bits).
pub fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u128(..);
    let mut buf = [0u8; 32];
    for (i, slot) in buf.iter_mut().enumerate() {
        *slot = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), 32);
        assert!(is_valid(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn validation() {
        assert!(is_valid(&HeaderValue::from_static("abc-123_x.y:z")));
        assert!(!is_valid(&HeaderValue::from_static("")));
        assert!(!is_valid(&HeaderValue::from_static("has space")));
        assert!(!is_valid(&HeaderValue::from_str(&"a".repeat(129)).unwrap()));
    }
}
