//! `kmsd audit verify` over any bytes: a tampered or damaged audit file is
//! reported as a bad record, never a crash. The input is split at the first
//! 0xff byte into two files (rotation), so chains across files are explored.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data.iter().position(|x| *x == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let files = vec![
        (PathBuf::from("audit.log.1"), a.to_vec()),
        (PathBuf::from("audit.log"), b.to_vec()),
    ];
    let _ = kmsd::audit::verify::verify_contents(&files, None, None);
    let _ = kmsd::audit::verify::verify_contents(&files[..1], Some(&[0; 32]), Some((3, "00")));
});
