//! Constant-time comparison of tokens and signatures.

use subtle::ConstantTimeEq;

/// Compare without an early exit, so timing says nothing about where bytes differ.
pub fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}
