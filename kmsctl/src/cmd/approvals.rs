//! `kmsctl approvals list|show|approve|deny`: dual control.

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
    }
    Ok(())
}
