//! The contract suite: every case runs the same PKCS#11 calls against
//! SoftHSM directly and through libkmsp11 → kmsd → SoftHSM, records what it
//! observes (CK_RVs, lengths, verification outcomes, deterministic outputs)
//! and requires the two transcripts to be equal; each case also asserts
//! what the spec requires on its own. One file per spec chapter; run one
//! case alone with `cargo test -p kmsp11-tests --test contract sign_verify`,
//! list them with `-- --list`. `KMSP11_TRANSCRIPTS=DIR` writes each case's
//! two transcripts there.
#![allow(
    clippy::undocumented_unsafe_blocks,
    clippy::manual_c_str_literals,
    clippy::manual_dangling_ptr
)]

mod crypto;
mod fixture;
mod general;
mod keymgmt;
mod object;
mod session;
mod slot_token;
