//! `kmsctl status`: version, tokens, contexts, policies, audit head, health.

use crate::client::{Client, Failure};
use crate::output::{object, Output};

pub fn run(c: &Client, out: Output) -> Result<(), Failure> {
    let mut v = c.get("/v1/status")?;
    v["ready"] = c
        .get("/ready")
        .map(|r| r["ready"].clone())
        .unwrap_or_default();
    object(&v, out);
    Ok(())
}
