//! Which attribute types hold a `CK_ULONG`, an array of them or a nested
//! template. Both ends use this table, so a value's encoding never depends on
//! the platform's `CK_ULONG` width.

/// Attribute types whose value is one `CK_ULONG`.
pub fn is_ulong(kind: u64) -> bool {
    matches!(
        kind,
        0x000 // CKA_CLASS
            | 0x080 // CKA_CERTIFICATE_TYPE
            | 0x087 // CKA_CERTIFICATE_CATEGORY
            | 0x088 // CKA_JAVA_MIDP_SECURITY_DOMAIN
            | 0x08c // CKA_NAME_HASH_ALGORITHM
            | 0x100 // CKA_KEY_TYPE
            | 0x121 // CKA_MODULUS_BITS
            | 0x133 // CKA_PRIME_BITS
            | 0x134 // CKA_SUBPRIME_BITS
            | 0x160 // CKA_VALUE_BITS
            | 0x161 // CKA_VALUE_LEN
            | 0x166 // CKA_KEY_GEN_MECHANISM
            | 0x300 // CKA_HW_FEATURE_TYPE
            | 0x500 // CKA_MECHANISM_TYPE
            | 0x601 // CKA_PROFILE_ID
    )
}

/// `CKA_ALLOWED_MECHANISMS`: an array of `CK_MECHANISM_TYPE`.
pub fn is_ulong_array(kind: u64) -> bool {
    kind == 0x4000_0600
}

/// `CKA_WRAP_TEMPLATE`, `CKA_UNWRAP_TEMPLATE`, `CKA_DERIVE_TEMPLATE`: arrays of `CK_ATTRIBUTE`.
pub fn is_template(kind: u64) -> bool {
    matches!(kind, 0x4000_0211..=0x4000_0213)
}

/// Nested templates deeper than this are refused (the spec nests one level).
pub const MAX_TEMPLATE_DEPTH: usize = 2;
/// The most attributes a template may carry.
pub const MAX_TEMPLATE_LEN: usize = 4096;
