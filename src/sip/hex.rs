//! Lowercase hex for the identifiers we write into every request (branches, Call-IDs, tags,
//! cnonces, nonce counts). They are written thousands of times a second; appending digits
//! directly costs a fraction of going through `format!`.

/// The sixteen digits, by value (also how a hash is written out on the stack in `digest`).
pub(crate) const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the `width` lowest hex digits of `value`, most significant first (zero-padded).
pub fn push_fixed(out: &mut String, value: u128, width: usize) {
    for i in (0..width.min(32)).rev() {
        out.push(char::from(DIGITS[((value >> (4 * i)) & 15) as usize]));
    }
}

/// Appends `value` in hex without leading zeros (`0` for zero), as `{:x}` writes it.
pub fn push_short(out: &mut String, value: u64) {
    let digits = (64 - value.leading_zeros()).div_ceil(4).max(1) as usize;
    push_fixed(out, u128::from(value), digits);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_format_writes() {
        for value in [0u64, 1, 9, 10, 15, 16, 255, 0x1234_abcd, u64::MAX] {
            let mut short = String::new();
            push_short(&mut short, value);
            assert_eq!(short, format!("{value:x}"));
            let mut fixed = String::new();
            push_fixed(&mut fixed, u128::from(value), 16);
            assert_eq!(fixed, format!("{value:016x}"));
        }
        let wide = u128::MAX - 12345;
        let mut fixed = String::new();
        push_fixed(&mut fixed, wide, 32);
        assert_eq!(fixed, format!("{wide:032x}"));
        let mut nc = String::new();
        push_fixed(&mut nc, 10, 8);
        assert_eq!(nc, "0000000a");
    }
}
