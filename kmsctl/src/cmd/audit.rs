//! `kmsctl audit tail|show|verify|export`.

use crate::client::{Client, Failure};
use crate::output::{object, rows, Output};

#[derive(clap::Subcommand, Debug)]
pub enum Audit {
    /// The last records.
    Tail {
        /// How many (at most 1000).
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
    /// One record, by its sequence number.
    Show { seq: u64 },
    /// Check the whole chain (rotated files too) and its checkpoint
    /// signatures; exit status 5 when it is broken.
    Verify,
    /// The whole chain as JSON Lines, oldest first, to a file (or stdout),
    /// for `kmsd audit verify` offline.
    Export {
        #[arg(long, short = 'f', value_name = "FILE")]
        file: Option<std::path::PathBuf>,
    },
}

pub fn run(c: &Client, cmd: Audit, out: Output) -> Result<(), Failure> {
    match cmd {
        Audit::Tail { lines } => {
            let v = c.get(&format!("/v1/audit?tail={lines}"))?;
            rows(
                &v,
                out,
                &[
                    ("SEQ", "seq"),
                    ("TIME", "time"),
                    ("IDENTITY", "identity"),
                    ("OP", "op"),
                    ("KEY", "key"),
                    ("DECISION", "decision"),
                    ("RV", "rv"),
                ],
            );
        }
        Audit::Show { seq } => object(&c.get(&format!("/v1/audit/records/{seq}"))?, out),
        Audit::Export { file } => {
            let text = c.get_text("/v1/audit/export")?;
            match file {
                Some(f) => std::fs::write(&f, text)
                    .map_err(|e| Failure::Usage(format!("{}: {e}", f.display())))?,
                None => print!("{text}"),
            }
        }
        Audit::Verify => {
            let v = c.get("/v1/audit/verify")?;
            object(&v, out);
            if v["valid"] != true {
                return Err(Failure::Rejected(format!(
                    "the audit chain is broken: {}",
                    v["error"].as_str().unwrap_or("?")
                )));
            }
        }
    }
    Ok(())
}
