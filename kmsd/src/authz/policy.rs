//! Policy in Cedar, default deny (DESIGN.md decision 9). kmsd ships its
//! schema ([`SCHEMA`]); a policy file is parsed and validated against it
//! (strict mode) when kmsd starts, on SIGHUP and by `kmsd --check`, and a
//! bad file is refused with its file, line, column and reason while the
//! policy already loaded keeps serving.
//!
//! Entities: `Kms::Identity::"<name>"` in its `Kms::Role::"<role>"`s;
//! `Kms::Token::"<token name>"`; every object is a `Kms::Key::"<key id>"` in
//! its token (session objects and objects without a key id are
//! `Kms::Key::"session:<token>"`, with `session_object` true). Actions are
//! [`Action`]s by name. A policy is named in audit records by its
//! `@id("...")` annotation, else by its position (`policy0`, `policy1`, ...).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, PolicyId, PolicySet, PrincipalConstraint, Request, RequestBuilder,
    RestrictedExpression, Schema, ValidationMode, Validator,
};

use super::approvals::OnPending;
use super::quota::Rate;
use super::Action;

/// kmsd's Cedar schema. Policies are validated against it.
pub const SCHEMA: &str = include_str!("kms.cedarschema");

/// Who asks.
#[derive(Clone, Debug)]
pub struct Principal<'a> {
    pub name: &'a str,
    pub roles: &'a [String],
}

/// What a policy sees of an object (`Kms::Key`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyView {
    /// kmsd's key id; empty for session objects.
    pub id: String,
    pub label: String,
    pub token: String,
    /// `private-key`, `public-key`, `secret-key`, `certificate`, `data`, `other`.
    pub class: String,
    /// `RSA`, `EC`, `EC_EDWARDS`, `AES`, ... (cryptoki's names without `CKK_`); empty when none.
    pub key_type: String,
    /// Bits: RSA modulus, EC field, secret key value; 0 when unknown.
    pub size: i64,
    /// The identity that created it through kmsd; empty for keys adopted
    /// from the HSM.
    pub owner: String,
    pub state: String,
    pub tags: Vec<String>,
    pub session_object: bool,
    pub sensitive: bool,
    pub extractable: bool,
}

/// What a call is judged on besides principal and resource.
#[derive(Clone, Debug, Default)]
pub struct Situation {
    pub mechanism: Option<u64>,
    /// The key id of the wrapping key, when a key is exported by wrapping.
    pub wrapping_key: Option<String>,
    /// Unix seconds.
    pub time: i64,
}

/// A decision and the policies that made it (`default-deny` when no
/// policy permitted), with the obligations their annotations carry (the
/// strictest of the permitting policies').
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Decision {
    pub allowed: bool,
    pub policies: Vec<String>,
    /// `@rate("N/s")`: uses of the key by this identity.
    pub rate: Option<Rate>,
    /// `@daily_limit("N")`: uses of the key per UTC day.
    pub daily_limit: Option<u64>,
    /// `@approvals("N")`: the call needs N approvals (dual control).
    pub approvals: Option<u32>,
    /// `@on_pending("wait")` or `("refuse")`: what the call does meanwhile.
    pub on_pending: Option<OnPending>,
    /// `@approver_role("name")`: the role approvers must hold (instead of
    /// `[dual_control] approver_role`).
    pub approver_role: Option<String>,
    /// `@rotate_every("30d")` (action `rotate`): the key's rotation period
    /// in seconds, the shortest of the permitting policies'.
    pub rotate_every: Option<u64>,
}

/// A policy's obligations, from its annotations.
#[derive(Clone, Debug, Default)]
struct Obligations {
    rate: Option<Rate>,
    daily_limit: Option<u64>,
    approvals: Option<u32>,
    on_pending: Option<OnPending>,
    approver_role: Option<String>,
    rotate_every: Option<u64>,
}

impl Decision {
    /// The policies that made the decision, for an audit record.
    pub fn rule(&self) -> String {
        self.policies.join(",")
    }
}

/// A policy file that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {reason}")]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

/// Who asked about which mechanism: (identity, roles, mechanism).
type Asked = (String, Vec<String>, u64);
/// (identity, roles, action): what a slice of the policy is for.
type Sliced = (String, Vec<String>, Action);
/// Everything a key decision depends on but the time: (identity, roles,
/// action, key, mechanism, wrapping key).
type KeyAsked = (
    String,
    Vec<String>,
    Action,
    KeyView,
    Option<u64>,
    Option<String>,
);

/// Answers kept for the life of a `Policy` (a reload is a new one): at
/// most `cap`, started over when full. Bounded by what is in use
/// (identities x roles x actions, keys, mechanisms).
struct Memo<K, V> {
    map: parking_lot::Mutex<HashMap<K, V>>,
    cap: usize,
}

impl<K: std::hash::Hash + Eq, V: Clone> Memo<K, V> {
    fn new(cap: usize) -> Self {
        Memo {
            map: parking_lot::Mutex::new(HashMap::new()),
            cap,
        }
    }

    fn get(&self, k: &K) -> Option<V> {
        self.map.lock().get(k).cloned()
    }

    fn keep(&self, k: K, v: V) {
        let mut m = self.map.lock();
        if m.len() >= self.cap {
            m.clear();
        }
        m.insert(k, v);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// The policies that can apply to one identity and action, and whether
/// any of them may read the time (then its decisions are not kept).
struct Slice {
    set: PolicySet,
    timeless: bool,
}

/// A loaded, validated policy.
pub struct Policy {
    pub path: PathBuf,
    set: PolicySet,
    /// Policy id -> the name audit records use.
    names: HashMap<PolicyId, String>,
    obligations: HashMap<PolicyId, Obligations>,
    authorizer: Authorizer,
    /// `mechanism_possible` answers, by (identity, roles, mechanism): they
    /// change only with the policy, and a new policy is a new `Policy`.
    possible: Memo<Asked, bool>,
    /// The policies that can apply, by (identity, roles, action); see
    /// [`Policy::slice`].
    slices: Memo<Sliced, Arc<Slice>>,
    /// Key decisions of slices that do not read the time: a decision is a
    /// function of what it was asked (the key's state and tags included),
    /// so a repeated one is answered without Cedar. Until reload.
    decisions: Memo<KeyAsked, Decision>,
}

fn schema() -> Schema {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(s, _)| s)
        .unwrap_or_else(|e| panic!("kmsd's own Cedar schema is invalid: {e:?}"))
}

/// `(line, column)`, both from 1, of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A policy error from a Cedar diagnostic: its first labelled position,
/// its message and its help.
fn error_of(file: &Path, text: &str, d: &dyn miette::Diagnostic) -> PolicyError {
    let offset = d
        .labels()
        .and_then(|mut l| l.next())
        .map(|l| l.offset())
        .unwrap_or(0);
    let (line, column) = position(text, offset);
    let mut reason = d.to_string();
    if let Some(help) = d.help() {
        reason = format!("{reason} ({help})");
    }
    PolicyError {
        file: file.display().to_string(),
        line,
        column,
        reason,
    }
}

impl Policy {
    /// Reads, parses and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            reason: format!("cannot read: {e}"),
        })?;
        Policy::parse(path, &text)
    }

    /// Parses and validates policy text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let set = PolicySet::from_str(text).map_err(|e| error_of(path, text, &e))?;
        let schema = schema();
        let result = Validator::new(schema).validate(&set, ValidationMode::Strict);
        if let Some(e) = result.validation_errors().next() {
            return Err(error_of(path, text, e));
        }
        let names = set
            .policies()
            .map(|p| {
                let name = p.annotation("id").unwrap_or(p.id().as_ref()).to_string();
                (p.id().clone(), name)
            })
            .collect();
        let mut obligations = HashMap::new();
        for p in set.policies() {
            // A bad annotation is an error at its position in the file.
            let at = |value: &str, why: String| {
                let offset = text.find(&format!("\"{value}\"")).unwrap_or(0);
                let (line, column) = position(text, offset);
                PolicyError {
                    file: path.display().to_string(),
                    line,
                    column,
                    reason: why,
                }
            };
            let rate = p
                .annotation("rate")
                .map(|v| Rate::parse(v).map_err(|e| at(v, format!("@rate: {e}"))))
                .transpose()?;
            let daily_limit = p
                .annotation("daily_limit")
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        at(v, format!("@daily_limit({v:?}): expected a number of uses"))
                    })
                })
                .transpose()?;
            let approvals = p
                .annotation("approvals")
                .map(|v| {
                    v.trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=16).contains(n))
                        .ok_or_else(|| {
                            at(
                                v,
                                format!(
                                    "@approvals({v:?}): expected a number of approvers, 1 to 16"
                                ),
                            )
                        })
                })
                .transpose()?;
            let on_pending = p
                .annotation("on_pending")
                .map(|v| {
                    OnPending::parse(v.trim()).ok_or_else(|| {
                        at(
                            v,
                            format!("@on_pending({v:?}): expected \"wait\" or \"refuse\""),
                        )
                    })
                })
                .transpose()?;
            let approver_role = p
                .annotation("approver_role")
                .map(|v| {
                    let r = v.trim();
                    let ok = !r.is_empty()
                        && r.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                    ok.then(|| r.to_string()).ok_or_else(|| {
                        at(v, format!("@approver_role({v:?}): expected a role name"))
                    })
                })
                .transpose()?;
            let rotate_every = p
                .annotation("rotate_every")
                .map(|v| {
                    humantime::parse_duration(v.trim())
                        .ok()
                        .map(|d| d.as_secs())
                        .filter(|s| *s > 0)
                        .ok_or_else(|| {
                            at(
                                v,
                                format!(
                                    "@rotate_every({v:?}): expected a duration such as \"90d\""
                                ),
                            )
                        })
                })
                .transpose()?;
            obligations.insert(
                p.id().clone(),
                Obligations {
                    rate,
                    daily_limit,
                    approvals,
                    on_pending,
                    approver_role,
                    rotate_every,
                },
            );
        }
        Ok(Policy {
            path: path.to_path_buf(),
            set,
            names,
            obligations,
            authorizer: Authorizer::new(),
            possible: Memo::new(100_000),
            slices: Memo::new(10_000),
            decisions: Memo::new(10_000),
        })
    }

    /// The policies whose scope can match `who` doing `action`. Cedar
    /// evaluates every policy of the set it is given, and a file holding
    /// many teams' policies holds mostly other identities' and other
    /// actions': they cannot be satisfied, so leaving them out changes no
    /// decision (`slices_decide_as_the_whole_file`). Only scopes that
    /// certainly do not match are left out: `principal == Kms::Identity`
    /// of another name, `principal in Kms::Role` of a role `who` does not
    /// hold (roles do not nest), `is` another type, and actions named
    /// without `action`. Kept per (identity, roles, action) until the
    /// policy is reloaded.
    fn slice(&self, who: &Principal, action: Action) -> Arc<Slice> {
        let key = (who.name.to_string(), who.roles.to_vec(), action);
        if let Some(s) = self.slices.get(&key) {
            return s;
        }
        let me = uid("Identity", who.name);
        let roles: Vec<EntityUid> = who.roles.iter().map(|r| uid("Role", r)).collect();
        let act = action_uid(action);
        let (identity, role) = (me.type_name().clone(), uid("Role", "").type_name().clone());
        // `principal in u`: u is the identity, one of its roles, or an
        // entity of a type kmsd's principals are never in.
        let within = |u: &EntityUid| {
            u == &me || roles.contains(u) || (u.type_name() != &identity && u.type_name() != &role)
        };
        let known_action = |u: &EntityUid| Action::ALL.iter().any(|a| &action_uid(*a) == u);
        let keep = |p: &cedar_policy::Policy| {
            let principal = match p.principal_constraint() {
                PrincipalConstraint::Any => true,
                PrincipalConstraint::Eq(u) => u == me,
                PrincipalConstraint::In(u) => within(&u),
                PrincipalConstraint::Is(t) => t == identity,
                PrincipalConstraint::IsIn(t, u) => t == identity && within(&u),
            };
            let action = match p.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(u) => u == act || !known_action(&u),
                ActionConstraint::In(v) => v.iter().any(|u| *u == act || !known_action(u)),
            };
            principal && action
        };
        let set = PolicySet::from_policies(self.set.policies().filter(|p| keep(p)).cloned())
            .unwrap_or_else(|_| self.set.clone());
        // Any mention of "time" counts (a policy's text is small, and read
        // once per slice): a false alarm only costs the cache.
        let timeless = set.policies().all(|p| !p.to_string().contains("time"));
        let sliced = Arc::new(Slice { set, timeless });
        self.slices.keep(key, sliced.clone());
        sliced
    }

    /// How many policies the file holds.
    pub fn len(&self) -> usize {
        self.set.policies().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `who` may do `action` on `key`.
    pub fn decide_key(
        &self,
        who: &Principal,
        action: Action,
        key: &KeyView,
        s: &Situation,
    ) -> Decision {
        let slice = self.slice(who, action);
        let asked = slice.timeless.then(|| {
            (
                who.name.to_string(),
                who.roles.to_vec(),
                action,
                key.clone(),
                s.mechanism,
                s.wrapping_key.clone(),
            )
        });
        if let Some(d) = asked.as_ref().and_then(|a| self.decisions.get(a)) {
            return d;
        }
        let resource = key_uid(key);
        let entity = key_entity(&resource, key);
        let token = token_entity(&key.token);
        let d = self.decide(
            &slice.set,
            who,
            action,
            resource,
            vec![entity, token],
            s,
            key,
        );
        if let Some(a) = asked {
            self.decisions.keep(a, d.clone());
        }
        d
    }

    /// Whether `who` may do `action` (login) on `token`.
    pub fn decide_token(
        &self,
        who: &Principal,
        action: Action,
        token: &str,
        s: &Situation,
    ) -> Decision {
        let uid = uid("Token", token);
        let slice = self.slice(who, action);
        self.decide(
            &slice.set,
            who,
            action,
            uid,
            vec![token_entity(token)],
            s,
            &KeyView::default(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        set: &PolicySet,
        who: &Principal,
        action: Action,
        resource: EntityUid,
        mut entities: Vec<Entity>,
        s: &Situation,
        key: &KeyView,
    ) -> Decision {
        entities.extend(principal_entities(who));
        let denied = |why: &str| Decision {
            allowed: false,
            policies: vec![why.to_string()],
            ..Default::default()
        };
        // Not checked against the schema per call: kmsd builds these
        // entities and the context from typed values, so they conform by
        // construction (`built_entities_conform_to_the_schema` checks it),
        // and the check cost more than the evaluation.
        let Ok(entities) = Entities::from_entities(entities, None) else {
            return denied("invalid-entities");
        };
        let Some(context) = context(s, key) else {
            return denied("invalid-context");
        };
        let Ok(request) = Request::new(
            uid("Identity", who.name),
            action_uid(action),
            resource,
            context,
            None,
        ) else {
            return denied("invalid-request");
        };
        let r = self.authorizer.is_authorized(&request, set, &entities);
        // Cedar reports them in no particular order: by name, so that
        // records and the first-named obligations do not vary.
        let mut reasons: Vec<&PolicyId> = r.diagnostics().reason().collect();
        reasons.sort_by_key(|id| self.names.get(*id));
        let policies: Vec<String> = reasons
            .iter()
            .map(|id| {
                self.names
                    .get(*id)
                    .cloned()
                    .unwrap_or_else(|| id.to_string())
            })
            .collect();
        let allowed = r.decision() == CedarDecision::Allow;
        let mut d = Decision {
            allowed,
            policies: if policies.is_empty() {
                vec!["default-deny".into()]
            } else {
                policies
            },
            ..Default::default()
        };
        if allowed {
            for o in reasons.iter().filter_map(|id| self.obligations.get(*id)) {
                d.rate = match (d.rate, o.rate) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                d.daily_limit = match (d.daily_limit, o.daily_limit) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                // Dual control: the most approvals any permitting policy asks.
                d.approvals = d.approvals.max(o.approvals);
                d.on_pending = d.on_pending.or(o.on_pending);
                if d.approver_role.is_none() {
                    d.approver_role.clone_from(&o.approver_role);
                }
                d.rotate_every = match (d.rotate_every, o.rotate_every) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        d
    }

    /// Whether some key, at some time, could be used by `who` with
    /// `mechanism` for some action: false when every policy that could
    /// permit it is ruled out whatever the key (the mechanism is then
    /// absent from `who`'s mechanism list and refused with
    /// `CKR_MECHANISM_INVALID`).
    pub fn mechanism_possible(&self, who: &Principal, mechanism: u64) -> bool {
        let key = (who.name.to_string(), who.roles.to_vec(), mechanism);
        if let Some(known) = self.possible.get(&key) {
            return known;
        }
        let answer = self.evaluate_mechanism(who, mechanism);
        self.possible.keep(key, answer);
        answer
    }

    fn evaluate_mechanism(&self, who: &Principal, mechanism: u64) -> bool {
        let Ok(entities) = Entities::from_entities(principal_entities(who), None) else {
            return true;
        };
        Action::WITH_MECHANISM.iter().any(|a| {
            let pairs = vec![
                (
                    "mechanism".to_string(),
                    RestrictedExpression::new_string(crate::core::mechanism_name(mechanism)),
                ),
                (
                    "mechanism_number".to_string(),
                    RestrictedExpression::new_long(mechanism as i64),
                ),
                (
                    "key_type".to_string(),
                    RestrictedExpression::new_unknown("key_type"),
                ),
                (
                    "key_size".to_string(),
                    RestrictedExpression::new_unknown("key_size"),
                ),
                (
                    "wrapping_key".to_string(),
                    RestrictedExpression::new_unknown("wrapping_key"),
                ),
                (
                    "time".to_string(),
                    RestrictedExpression::new_unknown("time"),
                ),
            ];
            let Ok(context) = Context::from_pairs(pairs) else {
                return true;
            };
            let request = RequestBuilder::default()
                .principal(uid("Identity", who.name))
                .action(action_uid(*a))
                .context(context)
                .build();
            let r = self
                .authorizer
                .is_authorized_partial(&request, &self.set, &entities);
            r.decision() != Some(CedarDecision::Deny)
        })
    }
}

fn uid(kind: &str, id: &str) -> EntityUid {
    // Parsed once: Cedar parses a type name with its policy parser.
    static TYPES: OnceLock<HashMap<&'static str, EntityTypeName>> = OnceLock::new();
    let types = TYPES.get_or_init(|| {
        ["Role", "Identity", "Token", "Key", "Action"]
            .into_iter()
            .map(|k| {
                let t = EntityTypeName::from_str(&format!("Kms::{k}")).expect("kmsd's entity type");
                (k, t)
            })
            .collect()
    });
    let t = types.get(kind).cloned().unwrap_or_else(|| {
        EntityTypeName::from_str(&format!("Kms::{kind}")).expect("kmsd's entity type")
    });
    EntityUid::from_type_name_and_id(t, EntityId::new(id))
}

fn action_uid(a: Action) -> EntityUid {
    uid("Action", a.name())
}

fn key_uid(k: &KeyView) -> EntityUid {
    if k.id.is_empty() {
        uid("Key", &format!("session:{}", k.token))
    } else {
        uid("Key", &k.id)
    }
}

fn string(s: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(s.to_string())
}

fn principal_entities(who: &Principal) -> Vec<Entity> {
    let roles: HashSet<EntityUid> = who.roles.iter().map(|r| uid("Role", r)).collect();
    let mut v: Vec<Entity> = roles
        .iter()
        .map(|r| Entity::new_no_attrs(r.clone(), HashSet::new()))
        .collect();
    let attrs = HashMap::from([("name".to_string(), string(who.name))]);
    if let Ok(e) = Entity::new(uid("Identity", who.name), attrs, roles) {
        v.push(e);
    }
    v
}

fn token_entity(name: &str) -> Entity {
    let attrs = HashMap::from([("name".to_string(), string(name))]);
    Entity::new(uid("Token", name), attrs, HashSet::new())
        .unwrap_or_else(|_| Entity::new_no_attrs(uid("Token", name), HashSet::new()))
}

fn key_entity(resource: &EntityUid, k: &KeyView) -> Entity {
    let attrs = HashMap::from([
        ("id".to_string(), string(&k.id)),
        ("label".to_string(), string(&k.label)),
        ("token".to_string(), string(&k.token)),
        ("class".to_string(), string(&k.class)),
        ("key_type".to_string(), string(&k.key_type)),
        ("size".to_string(), RestrictedExpression::new_long(k.size)),
        ("owner".to_string(), string(&k.owner)),
        ("state".to_string(), string(&k.state)),
        (
            "tags".to_string(),
            RestrictedExpression::new_set(k.tags.iter().map(|t| string(t))),
        ),
        (
            "session_object".to_string(),
            RestrictedExpression::new_bool(k.session_object),
        ),
        (
            "sensitive".to_string(),
            RestrictedExpression::new_bool(k.sensitive),
        ),
        (
            "extractable".to_string(),
            RestrictedExpression::new_bool(k.extractable),
        ),
    ]);
    let parents = HashSet::from([uid("Token", &k.token)]);
    Entity::new(resource.clone(), attrs, parents.clone())
        .unwrap_or_else(|_| Entity::new_no_attrs(resource.clone(), parents))
}

/// The request context; `None` if Cedar refuses it (it cannot, for
/// these fixed names and types).
fn context(s: &Situation, k: &KeyView) -> Option<Context> {
    let m = s.mechanism;
    Context::from_pairs([
        (
            "mechanism".to_string(),
            string(&m.map(crate::core::mechanism_name).unwrap_or_default()),
        ),
        (
            "mechanism_number".to_string(),
            RestrictedExpression::new_long(m.map_or(-1, |m| m as i64)),
        ),
        ("key_type".to_string(), string(&k.key_type)),
        (
            "key_size".to_string(),
            RestrictedExpression::new_long(k.size),
        ),
        (
            "wrapping_key".to_string(),
            string(s.wrapping_key.as_deref().unwrap_or_default()),
        ),
        ("time".to_string(), RestrictedExpression::new_long(s.time)),
    ])
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KeyView {
        KeyView {
            id: "k-1".into(),
            label: "release".into(),
            token: "dev".into(),
            class: "private-key".into(),
            key_type: "EC".into(),
            size: 256,
            owner: "alice".into(),
            state: "active".into(),
            tags: vec!["prod".into()],
            ..Default::default()
        }
    }

    fn user() -> Vec<String> {
        vec!["user".into()]
    }

    const CKM_ECDSA: u64 = 0x1041;
    const CKM_RSA_PKCS: u64 = 0x1;

    #[test]
    fn schema_parses() {
        let _ = schema();
    }

    // Every kind of scope, for identities with and without the roles
    // named: the slice for each (identity, action) decides every call as
    // the whole file does, and leaves out what cannot match.
    #[test]
    fn slices_decide_as_the_whole_file() {
        let text = r#"
@id("any") permit (principal, action == Kms::Action::"digest", resource);
@id("eq-alice") permit (principal == Kms::Identity::"alice", action in [Kms::Action::"sign", Kms::Action::"verify"], resource);
@id("eq-bob") permit (principal == Kms::Identity::"bob", action, resource);
@id("in-user") permit (principal in Kms::Role::"user", action == Kms::Action::"encrypt", resource) when { resource.key_type == "EC" };
@id("in-admin") permit (principal in Kms::Role::"admin", action, resource);
@id("is-identity") permit (principal is Kms::Identity, action == Kms::Action::"find", resource);
@id("is-in-auditor") permit (principal is Kms::Identity in Kms::Role::"auditor", action == Kms::Action::"read-attribute", resource);
@id("no-destroy-for-users") forbid (principal in Kms::Role::"user", action == Kms::Action::"destroy", resource);
@id("forbid-carol") forbid (principal == Kms::Identity::"carol", action, resource) when { context.mechanism == "CKM_ECDSA" };
@id("login") permit (principal, action == Kms::Action::"login", resource);
"#;
        let p = Policy::parse(Path::new("p.cedar"), text).unwrap();
        let s = Situation {
            mechanism: Some(CKM_ECDSA),
            ..Default::default()
        };
        let people: [(&str, Vec<String>); 5] = [
            ("alice", vec!["user".into()]),
            ("bob", vec![]),
            ("carol", vec!["admin".into()]),
            ("dave", vec!["auditor".into(), "user".into()]),
            ("erin", vec!["admin".into(), "user".into()]),
        ];
        let mut left_out = 0;
        for (name, roles) in &people {
            let who = Principal { name, roles };
            for a in Action::ALL {
                let slice = p.slice(&who, a);
                let set = &slice.set;
                left_out += p.len() - set.policies().count();
                let (sliced, whole) = if a == Action::Login {
                    let t = || vec![token_entity("dev")];
                    let r = || uid("Token", "dev");
                    let k = KeyView::default();
                    (
                        p.decide(set, &who, a, r(), t(), &s, &k),
                        p.decide(&p.set, &who, a, r(), t(), &s, &k),
                    )
                } else {
                    let k = key();
                    let r = key_uid(&k);
                    let e = || vec![key_entity(&r, &k), token_entity(&k.token)];
                    (
                        p.decide(set, &who, a, r.clone(), e(), &s, &k),
                        p.decide(&p.set, &who, a, r.clone(), e(), &s, &k),
                    )
                };
                assert_eq!(sliced, whole, "{name} {a:?}");
            }
        }
        assert!(
            left_out > 0,
            "slices leave out the policies that cannot match"
        );
        let roles = vec!["user".to_string()];
        let alice = Principal {
            name: "alice",
            roles: &roles,
        };
        let names = |a| -> Vec<String> {
            let slice = p.slice(&alice, a);
            let mut v: Vec<String> = slice
                .set
                .policies()
                .map(|x| p.names[x.id()].clone())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(Action::Sign), vec!["eq-alice".to_string()]);
        assert_eq!(
            names(Action::Destroy),
            vec!["no-destroy-for-users".to_string()]
        );
    }

    // A repeated key decision is answered from the cache, exactly as Cedar
    // answers it (a key in another state is another question); a slice
    // with a policy that reads the time is decided by Cedar every time.
    #[test]
    fn decisions_kept_unless_a_policy_reads_the_time() {
        let p = Policy::parse(
            Path::new("p.cedar"),
            r#"@id("active-keys") permit (principal, action == Kms::Action::"sign", resource) when { resource.state == "active" };
@id("until-2030") permit (principal, action == Kms::Action::"decrypt", resource) when { context.time < 1893456000 };"#,
        )
        .unwrap();
        let roles = user();
        let who = Principal {
            name: "alice",
            roles: &roles,
        };
        let at = |time| Situation {
            mechanism: Some(CKM_ECDSA),
            time,
            ..Default::default()
        };
        let k = key();
        let first = p.decide_key(&who, Action::Sign, &k, &at(1));
        assert!(first.allowed);
        assert_eq!(p.decisions.len(), 1);
        assert_eq!(p.decide_key(&who, Action::Sign, &k, &at(2)), first);
        assert_eq!(p.decisions.len(), 1, "answered from the cache");
        let disabled = KeyView {
            state: "disabled".into(),
            ..key()
        };
        assert!(!p.decide_key(&who, Action::Sign, &disabled, &at(3)).allowed);
        assert!(
            p.decide_key(&who, Action::Decrypt, &k, &at(1_800_000_000))
                .allowed
        );
        assert!(
            !p.decide_key(&who, Action::Decrypt, &k, &at(1_900_000_000))
                .allowed
        );
        assert_eq!(
            p.decisions.len(),
            2,
            "time-dependent decisions are not kept"
        );
    }

    // Decisions skip Cedar's per-call schema check of the entities and
    // the request: what kmsd builds must conform (every action, a key
    // with tags, a session object, the login request on a token).
    #[test]
    fn built_entities_conform_to_the_schema() {
        let schema = schema();
        let roles = vec!["user".to_string(), "admin".to_string()];
        let who = Principal {
            name: "alice",
            roles: &roles,
        };
        let s = Situation {
            mechanism: Some(CKM_ECDSA),
            wrapping_key: Some("k-2".into()),
            time: 1_800_000_000,
        };
        let session = KeyView {
            token: "dev".into(),
            session_object: true,
            ..Default::default()
        };
        for k in [key(), session] {
            let resource = key_uid(&k);
            let mut entities = vec![key_entity(&resource, &k), token_entity(&k.token)];
            entities.extend(principal_entities(&who));
            Entities::from_entities(entities, Some(&schema)).expect("entities conform");
            for a in Action::ALL.iter().filter(|a| **a != Action::Login) {
                let ctx = context(&s, &k).expect("context");
                Request::new(
                    uid("Identity", who.name),
                    action_uid(*a),
                    resource.clone(),
                    ctx,
                    Some(&schema),
                )
                .unwrap_or_else(|e| panic!("{a:?}: {e}"));
            }
        }
        let ctx = context(&s, &KeyView::default()).expect("context");
        let mut entities = vec![token_entity("dev")];
        entities.extend(principal_entities(&who));
        Entities::from_entities(entities, Some(&schema)).expect("entities conform");
        Request::new(
            uid("Identity", "alice"),
            action_uid(Action::Login),
            uid("Token", "dev"),
            ctx,
            Some(&schema),
        )
        .expect("login request conforms");
    }

    #[test]
    fn default_deny_and_permit_by_role() {
        let p = Policy::parse(
            Path::new("p.cedar"),
            r#"@id("users-sign")
permit(principal in Kms::Role::"user", action == Kms::Action::"sign", resource in Kms::Token::"dev")
when { context.mechanism == "CKM_ECDSA" };"#,
        )
        .unwrap();
        let roles = user();
        let who = Principal {
            name: "alice",
            roles: &roles,
        };
        let s = Situation {
            mechanism: Some(CKM_ECDSA),
            ..Default::default()
        };
        let d = p.decide_key(&who, Action::Sign, &key(), &s);
        assert!(d.allowed);
        assert_eq!(d.policies, vec!["users-sign".to_string()]);
        let d = p.decide_key(&who, Action::Decrypt, &key(), &s);
        assert_eq!(d.policies, vec!["default-deny".to_string()]);
        assert!(!d.allowed);
        let none: Vec<String> = vec![];
        let nobody = Principal {
            name: "bob",
            roles: &none,
        };
        assert!(!p.decide_key(&nobody, Action::Sign, &key(), &s).allowed);
    }

    #[test]
    fn forbid_by_tag_wins() {
        let p = Policy::parse(
            Path::new("p.cedar"),
            r#"permit(principal, action, resource);
@id("no-prod") forbid(principal, action, resource is Kms::Key) when { resource.tags.contains("prod") };"#,
        )
        .unwrap();
        let roles = user();
        let who = Principal {
            name: "alice",
            roles: &roles,
        };
        let d = p.decide_key(&who, Action::Sign, &key(), &Situation::default());
        assert!(!d.allowed);
        assert_eq!(d.policies, vec!["no-prod".to_string()]);
    }

    #[test]
    fn mechanisms_never_permitted_are_known() {
        let p = Policy::parse(
            Path::new("p.cedar"),
            r#"permit(principal, action == Kms::Action::"sign", resource)
when { context.mechanism == "CKM_ECDSA" && resource.size >= 256 };"#,
        )
        .unwrap();
        let roles = user();
        let who = Principal {
            name: "alice",
            roles: &roles,
        };
        assert!(p.mechanism_possible(&who, CKM_ECDSA));
        assert!(!p.mechanism_possible(&who, CKM_RSA_PKCS));
    }

    #[test]
    fn annotations_carry_obligations() {
        let p = Policy::parse(
            Path::new("p.cedar"),
            r#"@rate("10/s") @daily_limit("500")
permit(principal, action == Kms::Action::"sign", resource);
@rate("2/s")
permit(principal, action, resource is Kms::Key) when { resource.label == "release" };"#,
        )
        .unwrap();
        let roles = user();
        let who = Principal {
            name: "alice",
            roles: &roles,
        };
        let d = p.decide_key(&who, Action::Sign, &key(), &Situation::default());
        assert_eq!(d.rate, Some(Rate::parse("2/s").unwrap()));
        assert_eq!(d.daily_limit, Some(500));
        let e = Policy::parse(
            Path::new("p.cedar"),
            "permit(principal, action, resource);\n@rate(\"lots\")\npermit(principal, action, resource);\n",
        )
        .err()
        .expect("refused");
        assert_eq!((e.line, e.column), (2, 7), "{e}");
    }

    // @rotate_every on policies permitting kmsd the action rotate: the
    // shortest of the permitting ones; nothing for a key none permits;
    // a duration that is none refused at its position.
    #[test]
    fn rotation_schedule_annotations() {
        let p = Policy::parse(
            Path::new("p.cedar"),
            r#"@rotate_every("30d")
permit(principal == Kms::Identity::"kmsd", action == Kms::Action::"rotate", resource);
@rotate_every("7d")
permit(principal, action == Kms::Action::"rotate", resource is Kms::Key) when { resource.tags.contains("prod") };"#,
        )
        .unwrap();
        let who = Principal {
            name: "kmsd",
            roles: &[],
        };
        let s = Situation::default();
        let plain = KeyView {
            tags: vec![],
            ..key()
        };
        let d = p.decide_key(&who, Action::Rotate, &plain, &s);
        assert_eq!(d.rotate_every, Some(30 * 86_400));
        let d = p.decide_key(&who, Action::Rotate, &key(), &s);
        assert_eq!(
            d.rotate_every,
            Some(7 * 86_400),
            "tagged prod: the shortest"
        );
        let other = Principal {
            name: "alice",
            roles: &[],
        };
        let d = p.decide_key(&other, Action::Rotate, &plain, &s);
        assert_eq!((d.allowed, d.rotate_every), (false, None), "not kmsd");
        let e = Policy::parse(
            Path::new("p.cedar"),
            "permit(principal, action, resource);\n@rotate_every(\"soon\")\npermit(principal, action, resource);\n",
        )
        .err()
        .expect("refused");
        assert!(e.reason.contains("@rotate_every"), "{e}");
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn dual_control_annotations() {
        let p = Policy::parse(
            Path::new("p.cedar"),
            r#"@approvals("1")
permit(principal, action == Kms::Action::"sign", resource);
@approvals("3") @approver_role("security-officer") @on_pending("wait")
permit(principal, action, resource is Kms::Key) when { resource.label == "release" };"#,
        )
        .unwrap();
        let roles = user();
        let who = Principal {
            name: "alice",
            roles: &roles,
        };
        let d = p.decide_key(&who, Action::Sign, &key(), &Situation::default());
        assert_eq!(d.approvals, Some(3), "the most approvals asked");
        assert_eq!(d.approver_role.as_deref(), Some("security-officer"));
        assert_eq!(d.on_pending, Some(OnPending::Wait));
        let e = Policy::parse(
            Path::new("p.cedar"),
            "@approver_role(\"two words\")\npermit(principal, action, resource);\n",
        )
        .err()
        .expect("refused");
        assert!(e.reason.contains("@approver_role"), "{e}");
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let e = Policy::parse(
            Path::new("p.cedar"),
            "permit(principal, action, resource);\npermit(principal, acton, resource);\n",
        )
        .err()
        .expect("refused");
        assert_eq!((e.file.as_str(), e.line), ("p.cedar", 2), "{e}");
        assert!(e.column > 1, "{e}");
    }

    #[test]
    fn schema_error_names_position() {
        let e = Policy::parse(
            Path::new("p.cedar"),
            "permit(principal, action == Kms::Action::\"sign\", resource)\nwhen { resource.colour == \"red\" };\n",
        )
        .err()
        .expect("refused");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.reason.contains("colour"), "{e}");
    }
}
