//! `kmsctl approvals list|show|approve|deny|watch`: dual control.

use crate::client::{Client, Failure};
use crate::output::{object, rows, Output};

#[derive(clap::Subcommand, Debug)]
pub enum Approvals {
    /// Requests and grants, newest first.
    List,
    /// One request.
    Show { id: String },
    /// Approve a request (not your own; you need its approver role).
    Approve { id: String },
    /// Deny a request: the call it is for stays refused.
    Deny { id: String },
    /// Print requests as they appear and change (pending ones first), one
    /// line each (a JSON object per line with -o json), until interrupted.
    Watch {
        /// Seconds between looks.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
        interval: u64,
        /// Stop after this many seconds.
        #[arg(long = "for", value_name = "SECS")]
        for_secs: Option<u64>,
    },
}

pub fn run(c: &Client, cmd: Approvals, out: Output) -> Result<(), Failure> {
    match cmd {
        Approvals::List => rows(
            &c.get("/v1/approvals")?,
            out,
            &[
                ("ID", "id"),
                ("STATE", "state"),
                ("REQUESTER", "requester"),
                ("ACTION", "action"),
                ("KEY", "key"),
                ("LABEL", "label"),
                ("MECHANISM", "mechanism"),
                ("APPROVERS", "approvers"),
                ("REQUIRED", "required"),
                ("EXPIRES", "expires"),
            ],
        ),
        Approvals::Show { id } => object(&c.get(&format!("/v1/approvals/{id}"))?, out),
        Approvals::Approve { id } => {
            object(&c.post(&format!("/v1/approvals/{id}/approve"), None)?, out)
        }
        Approvals::Deny { id } => object(&c.post(&format!("/v1/approvals/{id}/deny"), None)?, out),
        Approvals::Watch { interval, for_secs } => watch(c, out, interval, for_secs)?,
    }
    Ok(())
}

fn watch(c: &Client, out: Output, interval: u64, for_secs: Option<u64>) -> Result<(), Failure> {
    use std::collections::HashMap;
    use std::io::Write;
    let end = for_secs.map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s));
    // What was last printed of each request: (state, approvers).
    let mut seen: HashMap<String, (String, usize)> = HashMap::new();
    let mut first = true;
    loop {
        let list = c.get("/v1/approvals")?;
        let mut list = list.as_array().cloned().unwrap_or_default();
        list.reverse(); // oldest first
        for a in &list {
            let id = a["id"].as_str().unwrap_or_default().to_string();
            let state = a["state"].as_str().unwrap_or_default().to_string();
            let have = a["approvers"].as_array().map_or(0, Vec::len);
            let now = (state.clone(), have);
            if seen.get(&id) == Some(&now) {
                continue;
            }
            // At the start, only what still waits.
            let show = !first || state == "pending";
            seen.insert(id.clone(), now);
            if !show {
                continue;
            }
            let line = match out {
                Output::Json => a.to_string(),
                Output::Table => format!(
                    "{id}  {state:<8}  {have}/{}  {} {} on {}  {} {}{}",
                    a["required"],
                    a["requester"].as_str().unwrap_or_default(),
                    a["action"].as_str().unwrap_or_default(),
                    a["token"].as_str().unwrap_or_default(),
                    a["key"].as_str().unwrap_or_default(),
                    a["label"].as_str().unwrap_or_default(),
                    a["mechanism"]
                        .as_str()
                        .map(|m| format!(" {m}"))
                        .unwrap_or_default(),
                ),
            };
            let mut o = std::io::stdout().lock();
            if writeln!(o, "{line}").and_then(|_| o.flush()).is_err() {
                return Ok(()); // the reader went away
            }
        }
        first = false;
        if end.is_some_and(|e| std::time::Instant::now() >= e) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(interval));
    }
}
