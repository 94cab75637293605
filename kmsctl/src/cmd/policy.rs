//! `kmsctl policy show|validate FILE|reload`.

use std::path::PathBuf;

use crate::client::{Client, Failure};
use crate::output::{object, Output};

#[derive(clap::Subcommand, Debug)]
pub enum Policy {
    /// The policy file kmsd serves.
    Show,
    /// Check a policy file against kmsd's schema (nothing is loaded).
    Validate { file: PathBuf },
    /// Load the policy file again; an error keeps the policy in force.
    Reload,
}

pub fn run(c: &Client, cmd: Policy, out: Output) -> Result<(), Failure> {
    match cmd {
        Policy::Show => print!("{}", c.get_text("/v1/policy")?),
        Policy::Validate { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
            let v = c
                .post_text("/v1/policy/validate", &text)
                .map_err(|e| match e {
                    // The position names the file given here.
                    Failure::Rejected(m) => {
                        Failure::Rejected(m.replacen("policy:", &format!("{}:", file.display()), 1))
                    }
                    e => e,
                })?;
            object(&v, out);
        }
        Policy::Reload => object(&c.post("/v1/policy/reload", None)?, out),
    }
    Ok(())
}
