//! See `src/bin/kmsp11-load.rs` and `benches/codec.rs`.
