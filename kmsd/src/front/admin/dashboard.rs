//! The web dashboard, served by the admin listener under `/ui`: overview,
//! keys, approvals, audit, identities and quotas. Pages are rendered here
//! from the admin API's own answers (the same handlers, role checks and
//! data); their buttons call the API from `app.js`, so a click is the same
//! request, role check and audit record as the kmsctl command. Everything
//! is embedded; `maud` escapes every value (labels and identities are
//! chosen by clients), and the content security policy allows only this
//! origin's script and style.

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, Caller, Tail, C, D};
use crate::daemon::Daemon;

const CSS: &str = include_str!("app.css");
const JS: &str = include_str!("app.js");

/// Keys listed with their usage on one page.
const MAX_KEYS: usize = 500;

pub(super) fn routes() -> Router<std::sync::Arc<Daemon>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(overview))
        .route("/ui/keys", get(keys))
        .route("/ui/approvals", get(approvals))
        .route("/ui/audit", get(audit))
        .route("/ui/identities", get(identities))
        .route("/ui/app.css", get(|| async { asset(CSS, "text/css") }))
        .route("/ui/app.js", get(|| async { asset(JS, "text/javascript") }))
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// A page, or the API's refusal shown as one.
type Page = Result<Response, Shown>;

/// The API's refusal, as a page.
struct Shown(ApiError);

impl IntoResponse for Shown {
    fn into_response(self) -> Response {
        shown(self.0)
    }
}

fn shown(e: ApiError) -> Response {
    let status = e.status;
    let body = html! {
        (DOCTYPE)
        html { head { meta charset="utf-8"; title { "kmsd" } link rel="stylesheet" href="/ui/app.css"; }
        body { main { h1 { "kmsd" } p class="bad" { (e.message) } } } }
    };
    (status, secure(body)).into_response()
}

/// A page's HTML with the headers that keep it to itself.
fn secure(m: Markup) -> Response {
    let mut r = axum::response::Html(m.into_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn page(c: &Caller, here: &str, title: &str, body: Markup) -> Response {
    let nav = [
        ("/ui", "Overview"),
        ("/ui/keys", "Keys"),
        ("/ui/approvals", "Approvals"),
        ("/ui/audit", "Audit"),
        ("/ui/identities", "Identities & quotas"),
    ];
    secure(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "kmsd · " (title) }
                link rel="stylesheet" href="/ui/app.css";
                script src="/ui/app.js" defer {}
            }
            body {
                header {
                    strong { "kmsd" }
                    @for (href, name) in nav {
                        a href=(href) class=[(href == here).then_some("here")] { (name) }
                    }
                    span class="who" { (c.identity.name) " (" (c.identity.roles.join(", ")) ")" }
                }
                main {
                    h1 { (title) }
                    div id="msg" {}
                    (body)
                }
            }
        }
    })
}

fn is_admin(c: &Caller) -> bool {
    c.has(super::ADMINS)
}

/// A JSON value as text: strings without quotes, nothing for null.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
        v => v.to_string(),
    }
}

fn ok(v: Result<Json<Value>, ApiError>) -> Result<Value, Shown> {
    v.map(|j| j.0).map_err(Shown)
}

async fn overview(State(d): D, Extension(c): C) -> Page {
    let status = ok(super::status(State(d.clone()), Extension(c.clone())).await)?;
    let pending = status["pending_approvals"].as_u64().unwrap_or_default();
    let recent = ok(super::audit(
        State(d.clone()),
        Extension(c.clone()),
        Query(Tail { tail: Some(15) }),
    )
    .await)?;
    let backend = d.backend.slot_list(false).is_ok();
    let audit_ok = d.audit.ready().is_ok();
    let store = d.inventory.store.last_checkpoint().is_ok();
    let health = |ok: bool| if ok { ("ok", "ok") } else { ("bad", "failing") };
    let body = html! {
        div class="tiles" {
            div class="tile" { "tokens" b { (text(&status["tokens"])) } }
            div class="tile" { "client contexts" b { (text(&status["contexts"])) } }
            div class="tile" { "policies" b { (text(&status["policies"])) } }
            div class="tile" { "pending approvals" b class=[(pending > 0).then_some("warn")] { a href="/ui/approvals" { (pending) } } }
            div class="tile" { "audit head" b { "#" (text(&status["audit"]["sequence"])) } }
        }
        h2 { "Health" }
        table {
            tr { th { "backend (HSM)" } th { "audit log" } th { "store" } th { "version" } }
            tr {
                @for ok in [backend, audit_ok, store] {
                    td class=(health(ok).0) { (health(ok).1) }
                }
                td { (text(&status["version"])) }
            }
        }
        @if let Some(soon) = status["certificates_expiring"].as_array().filter(|v| !v.is_empty()) {
            h2 { "Certificates expiring within 30 days" }
            table {
                tr { th { "token" } th { "label" } th { "subject" } th { "not after" } th { "days left" } }
                @for c in soon {
                    tr {
                        td { (text(&c["token"])) }
                        td { (text(&c["label"])) }
                        td { (text(&c["subject"])) }
                        td class="mono" { (text(&c["not_after"])) }
                        td class="warn" { (text(&c["days_left"])) }
                    }
                }
            }
        }
        h2 { "Recent activity" }
        (records(recent.as_array().map(Vec::as_slice).unwrap_or_default()))
    };
    Ok(page(&c, "/ui", "Overview", body))
}

fn records(list: &[Value]) -> Markup {
    html! {
        table {
            tr { th { "#" } th { "time" } th { "identity" } th { "operation" } th { "key" } th { "decision" } th { "policy / reason" } th { "result" } }
            @for r in list.iter().rev() {
                tr {
                    td class="mono" { (text(&r["seq"])) }
                    td class="mono" { (text(&r["time"])) }
                    td { (text(&r["identity"])) }
                    td class="mono" { (if r["checkpoint"].is_object() { "signed checkpoint".to_string() } else { text(&r["op"]) }) }
                    td class="mono" { (text(&r["key"])) " " (text(&r["label"])) }
                    td class=[match r["decision"].as_str() { Some("deny") => Some("bad"), Some("allow") => Some("ok"), _ => None }] { (text(&r["decision"])) }
                    td { (text(&r["policy"])) " " (text(&r["reason"])) }
                    td class="mono" { (text(&r["rv"])) (text(&r["detail"])) }
                }
            }
        }
    }
}

async fn keys(State(d): D, Extension(c): C) -> Page {
    let list = ok(super::keys(State(d.clone()), Extension(c.clone())).await)?;
    let list = list.as_array().cloned().unwrap_or_default();
    let s = d.inventory.store.as_ref();
    let today = crate::authz::quota::today();
    let admin = is_admin(&c);
    let body = html! {
        @if list.len() > MAX_KEYS { p { "The first " (MAX_KEYS) " of " (list.len()) " keys; kmsctl keys list shows all." } }
        table {
            tr { th { "key" } th { "label" } th { "token" } th { "type" } th { "state" } th { "owner" } th { "uses (today)" } th { "tags" } @if admin { th { "" } } }
            @for k in list.iter().take(MAX_KEYS) {
                @let id = text(&k["id"]);
                @let kid = crate::store::KeyId(id.clone());
                @let uses: u64 = s.usage(&kid).map(|u| u.into_iter().map(|(_, n)| n).sum()).unwrap_or(0);
                @let daily = s.daily(&kid, today).unwrap_or(0);
                @let state = text(&k["state"]);
                tr {
                    td class="mono" { (id) }
                    td { (text(&k["label"])) }
                    td { (text(&k["token"])) }
                    td { (text(&k["key_type"])) " " (text(&k["class"])) }
                    td class=[(state != "active").then_some("warn")] { (state) }
                    td { (text(&k["owner"])) }
                    td { (uses) " (" (daily) ")" }
                    td { (text(&k["tags"])) }
                    @if admin {
                        td {
                            @if state == "active" {
                                button data-url=(format!("/v1/keys/{id}/disable")) { "Disable" }
                                " "
                                form class="act" data-url=(format!("/v1/keys/{id}/revoke")) {
                                    input name="reason" placeholder="reason" required size="12";
                                    " " button { "Revoke" }
                                }
                            }
                            @if state == "disabled" {
                                button data-url=(format!("/v1/keys/{id}/enable")) { "Enable" }
                            }
                            @if state == "pending-destroy" {
                                button data-url=(format!("/v1/keys/{id}/cancel-destroy")) { "Cancel destroy" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&c, "/ui/keys", "Keys", body))
}

async fn approvals(State(d): D, Extension(c): C) -> Page {
    let list = ok(super::approvals(State(d.clone()), Extension(c.clone())).await)?;
    let list = list.as_array().cloned().unwrap_or_default();
    let me = c.identity.name.clone();
    let body = html! {
        @if list.is_empty() { p { "No approval requests." } }
        table {
            tr { th { "request" } th { "state" } th { "requester" } th { "operation" } th { "key" } th { "mechanism" } th { "approvals" } th { "expires" } th { "" } }
            @for a in &list {
                @let id = text(&a["id"]);
                @let state = text(&a["state"]);
                @let approvers: Vec<String> = a["approvers"].as_array().map(|v| v.iter().map(text).collect()).unwrap_or_default();
                @let may = state == "pending"
                    && a["requester"].as_str() != Some(me.as_str())
                    && !approvers.contains(&me)
                    && c.identity.roles.iter().any(|r| Some(r.as_str()) == a["role"].as_str());
                tr {
                    td class="mono" { (id) }
                    td class=[match state.as_str() { "pending" => Some("warn"), "denied" | "expired" => Some("bad"), _ => None }] { (state) }
                    td { (text(&a["requester"])) }
                    td { (text(&a["action"])) " on " (text(&a["token"])) }
                    td class="mono" { (text(&a["key"])) " " (text(&a["label"])) }
                    td class="mono" { (text(&a["mechanism"])) }
                    td { (approvers.len()) " of " (text(&a["required"])) " (" (text(&a["role"])) ")" @if !approvers.is_empty() { ": " (approvers.join(", ")) } }
                    td class="mono" { (text(&a["expires"])) }
                    td {
                        @if may {
                            button data-url=(format!("/v1/approvals/{id}/approve")) { "Approve" }
                            " "
                            button data-url=(format!("/v1/approvals/{id}/deny")) { "Deny" }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&c, "/ui/approvals", "Approvals", body))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    /// Records shown (at most 1000).
    n: Option<usize>,
    /// Shown only records whose text contains this.
    q: Option<String>,
    /// Verify the whole chain.
    verify: Option<String>,
}

async fn audit(State(d): D, Extension(c): C, Query(aq): Query<AuditQuery>) -> Page {
    let n = aq.n.unwrap_or(100).min(1000);
    let q = aq.q.clone().unwrap_or_default();
    // Filtered over the last 1000 records, then the last n shown.
    let all = ok(super::audit(
        State(d.clone()),
        Extension(c.clone()),
        Query(Tail { tail: Some(1000) }),
    )
    .await)?;
    let all = all.as_array().cloned().unwrap_or_default();
    let hits: Vec<Value> = all
        .into_iter()
        .filter(|r| q.is_empty() || r.to_string().contains(&q))
        .collect();
    let shown = &hits[hits.len().saturating_sub(n)..];
    let verified = match aq.verify {
        Some(_) => Some(ok(super::verify_audit(
            State(d.clone()),
            Extension(c.clone()),
        )
        .await)?),
        None => None,
    };
    let body = html! {
        form class="filter" method="get" action="/ui/audit" {
            input name="q" value=(q) placeholder="identity, operation, key, decision…" size="40";
            " last " input name="n" value=(n) size="4"; " "
            button { "Filter" }
            " "
            a href="/ui/audit?verify=1" { "Verify the chain" }
        }
        @if let Some(v) = verified {
            @if v["valid"] == true {
                p class="ok" { "Chain verified: records " (text(&v["first"])) " to " (text(&v["last"])) ", " (text(&v["checkpoints"])) " signed checkpoints." }
            } @else {
                p class="bad" { "Chain broken: " (text(&v["error"])) }
            }
        }
        p { (shown.len()) " of " (hits.len()) " matching records (newest first)." }
        (records(shown))
    };
    Ok(page(&c, "/ui/audit", "Audit", body))
}

async fn identities(State(d): D, Extension(c): C) -> Page {
    let ids = ok(super::identities(State(d.clone()), Extension(c.clone())).await)?;
    let quotas = ok(super::quotas(State(d.clone()), Extension(c.clone())).await)?;
    let admin = is_admin(&c);
    let empty = Vec::new();
    let disabled: Vec<String> = ids["disabled"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(text)
        .collect();
    let body = html! {
        table {
            tr { th { "identity" } th { "certificate name" } th { "roles" } th { "tokens" } @if admin { th { "" } } }
            @for i in ids["enabled"].as_array().unwrap_or(&empty) {
                @let name = text(&i["name"]);
                tr {
                    td { (name) }
                    td class="mono" { (text(&i["subject"])) }
                    td { (text(&i["roles"])) }
                    td { (text(&i["tokens"])) }
                    @if admin { td { button data-url=(format!("/v1/identities/{name}/disable")) { "Disable" } } }
                }
            }
            @for name in &disabled {
                tr {
                    td { (name) } td class="bad" { "disabled" } td {} td {}
                    @if admin { td { button data-url=(format!("/v1/identities/{name}/enable")) { "Enable" } } }
                }
            }
        }
        h2 { "Quotas" }
        table {
            tr { th { "rate per identity" } th { "rate per identity and key" } th { "uses per key per day" } }
            tr {
                td { (or_none(&quotas["identity_rate"])) }
                td { (or_none(&quotas["key_rate"])) }
                td { (or_none(&quotas["daily_limit_per_key"])) }
            }
        }
        h2 { "Rate buckets in use" }
        table {
            tr { th { "identity" } th { "key" } th { "rate" } th { "calls available now" } }
            @for b in quotas["buckets"].as_array().unwrap_or(&empty) {
                tr {
                    td { (text(&b["identity"])) }
                    td class="mono" { (text(&b["key"])) }
                    td { (text(&b["rate"])) }
                    td { (text(&b["available"])) }
                }
            }
        }
    };
    Ok(page(&c, "/ui/identities", "Identities & quotas", body))
}

fn or_none(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::Number(n) if n.as_u64() == Some(0) => "none".into(),
        v => text(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn values_are_escaped() {
        let m = html! { td { (text(&Value::String("<script>x</script>".into()))) } };
        assert_eq!(m.into_string(), "<td>&lt;script&gt;x&lt;/script&gt;</td>");
    }

    #[test]
    fn error_pages_keep_the_status() {
        let r = shown(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "no"));
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
    }
}
