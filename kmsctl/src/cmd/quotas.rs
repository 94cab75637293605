//! `kmsctl quotas show`: the quota settings and the rate buckets in use.

use crate::client::{Client, Failure};
use crate::output::{object, rows, Output};

#[derive(clap::Subcommand, Debug)]
pub enum Quotas {
    /// Settings, then the buckets in use (identity, key, rate, available).
    Show,
}

pub fn run(c: &Client, cmd: Quotas, out: Output) -> Result<(), Failure> {
    let Quotas::Show = cmd;
    let v = c.get("/v1/quotas")?;
    if out == Output::Json {
        println!("{v}");
        return Ok(());
    }
    let mut settings = v.clone();
    if let Some(o) = settings.as_object_mut() {
        o.remove("buckets");
    }
    object(&settings, out);
    println!();
    rows(
        &v["buckets"],
        out,
        &[
            ("IDENTITY", "identity"),
            ("KEY", "key"),
            ("RATE", "rate"),
            ("AVAILABLE", "available"),
        ],
    );
    Ok(())
}
