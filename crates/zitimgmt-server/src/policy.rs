//! The caller policy: which authenticated principals may request which service types,
//! and which role attributes the identities issued to them get.
//!
//! The policy is a TOML file of `[[allow]]` rules; the first rule that names the caller
//! and the requested service type wins (see `policy.example.toml` next to this crate's
//! `Cargo.toml`):
//!
//! ```toml
//! [[allow]]
//! spiffe_id = "spiffe://ziti-gateway.test/gateways/*"   # or exact; or jwt_claim = "..."; or anonymous = true
//! service_types = ["gateway"]
//! role_attributes = ["gateway-hosts"]
//! ```
//!
//! A rule with `service_types = []` makes a principal known without issuing it
//! anything: it may resolve identities (the gateway's callers), nothing more.
//!
//! An optional `[provision]` table lists the role attributes that identities
//! provisioned from identity-provider tokens may be given (see [`crate::provision`]);
//! claim values outside it are not applied. With it, the `[[allow]]` rules may be left out:
//!
//! ```toml
//! [provision]
//! role_attributes = ["gateway-hosts", "gateway-clients"]
//! ```
//!
//! Every mistake in the file is reported with the file, the line and the key, so that
//! the server refuses to start on a policy that does not say what its author meant.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use thiserror::Error;
use toml::Spanned;

use crate::auth::Principal;

#[cfg(test)]
mod tests;

/// The service types a caller can request an identity for.
pub const SERVICE_TYPES: &[&str] = &["gateway"];

/// The keys of a rule; each rule has exactly one of the first three.
const RULE_KEYS: &[&str] = &["spiffe_id", "jwt_claim", "anonymous", "service_types", "role_attributes"];

/// The keys of the `[provision]` table.
const PROVISION_KEYS: &[&str] = &["role_attributes"];

/// A caller policy: an ordered list of rules, the first match wins.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    provision: Option<ProvisionPolicy>,
}

/// The `[provision]` table: what identities provisioned from IdP tokens may get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionPolicy {
    /// The role attributes a token's roles claim may grant; other values are not applied.
    pub role_attributes: Vec<String>,
}

/// What a matching rule grants: the role attributes of the identity issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Role attributes (without `#`) the identity is created with.
    pub role_attributes: Vec<String>,
}

/// Why a policy could not be loaded.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read the policy file {}: {reason}", path.display())]
    Unreadable {
        /// The file named in the configuration.
        path: PathBuf,
        /// The I/O error, as text.
        reason: String,
    },
    /// The file was read but is not a valid policy.
    #[error("policy {file}, line {line}: {problem}")]
    Invalid {
        /// The file (or other source) the text came from.
        file: String,
        /// The 1-based line of the problem.
        line: usize,
        /// What is wrong, starting with the key concerned.
        problem: String,
    },
}

#[derive(Debug, Clone)]
struct Rule {
    who: Who,
    service_types: Vec<String>,
    role_attributes: Vec<String>,
}

/// The principal a rule names.
#[derive(Debug, Clone)]
enum Who {
    Spiffe(SpiffePattern),
    Jwt(String),
    Anonymous,
}

#[derive(Debug, Clone)]
enum SpiffePattern {
    Exact(String),
    /// Any ID strictly below this prefix, which ends in `/`.
    Below(String),
}

impl Policy {
    /// Reads and validates the policy file at `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| PolicyError::Unreadable { path: path.to_owned(), reason: error.to_string() })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Validates a policy given as text; `source` names it in errors (usually the path).
    pub fn parse(text: &str, source: &str) -> Result<Self, PolicyError> {
        let invalid = |span: Range<usize>, problem: String| PolicyError::Invalid {
            file: source.to_owned(),
            line: line_of(text, span.start),
            problem,
        };
        let document: Node = match toml::from_str(text) {
            Ok(document) => document,
            Err(error) => {
                let span = error.span().unwrap_or(0..0);
                // Valid TOML that still does not load holds a table without a position of
                // its own (a dotted key such as `a.b = 1`); the error points at its last key.
                let problem = if toml::from_str::<toml::Table>(text).is_ok() {
                    let key = text.get(span.clone()).unwrap_or_default();
                    format!("{key:?}: nested tables are not part of a policy (only [[allow]] rules of plain keys)")
                } else {
                    one_line(error.message())
                };
                return Err(invalid(span, problem));
            }
        };
        rules(document)
            .map(|(rules, provision)| Self { rules, provision })
            .map_err(|Located { span, problem }| invalid(span, problem))
    }

    /// The policy when no file is given: anonymous callers may request a gateway identity with these attributes.
    pub fn anonymous_gateway(role_attributes: Vec<String>) -> Self {
        Self {
            rules: vec![Rule { who: Who::Anonymous, service_types: vec!["gateway".to_owned()], role_attributes }],
            provision: None,
        }
    }

    /// The `[provision]` table, when the policy has one.
    pub fn provision(&self) -> Option<&ProvisionPolicy> {
        self.provision.as_ref()
    }

    /// The first rule that matches both the principal and the service type.
    pub fn grant(&self, principal: &Principal, service_type: &str) -> Option<Grant> {
        self.rules
            .iter()
            .find(|rule| rule.who.matches(principal) && rule.service_types.iter().any(|t| t == service_type))
            .map(|rule| Grant { role_attributes: rule.role_attributes.clone() })
    }

    /// Whether any rule names this principal (it may then resolve identities and keep its own leases).
    pub fn admits(&self, principal: &Principal) -> bool {
        self.rules.iter().any(|rule| rule.who.matches(principal))
    }

    /// Which principal classes the rules name ("spiffe", "jwt", "anonymous"), so config can refuse a policy naming a method that is not enabled.
    pub fn classes(&self) -> BTreeSet<&'static str> {
        self.rules.iter().map(|rule| rule.who.class()).collect()
    }

    /// How many rules the policy has.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

impl Who {
    fn matches(&self, principal: &Principal) -> bool {
        match (self, principal) {
            (Self::Spiffe(pattern), Principal::Spiffe(id)) => pattern.matches(id),
            (Self::Jwt(claim), Principal::Jwt(value)) => claim == value,
            (Self::Anonymous, Principal::Anonymous) => true,
            _ => false,
        }
    }

    /// The same names as [`Principal::class`].
    fn class(&self) -> &'static str {
        match self {
            Self::Spiffe(_) => "spiffe",
            Self::Jwt(_) => "jwt",
            Self::Anonymous => "anonymous",
        }
    }
}

impl SpiffePattern {
    fn matches(&self, id: &str) -> bool {
        match self {
            Self::Exact(exact) => id == exact,
            // A descendant has at least one more non-empty segment; a bare string prefix
            // would let `.../gatewaysX/...` through.
            Self::Below(prefix) => {
                id.strip_prefix(prefix.as_str()).is_some_and(|rest| !rest.split('/').any(str::is_empty))
            }
        }
    }

    /// Parses `spiffe://<trust domain>/<path>`, optionally ending in `/*`, or
    /// `spiffe://<trust domain>/*`.
    fn parse(pattern: &str) -> Result<Self, String> {
        let rest = pattern.strip_prefix("spiffe://").ok_or("it must start with \"spiffe://\"")?;
        let (trust_domain, path) = rest.split_once('/').ok_or("it needs a path after the trust domain")?;
        if trust_domain.is_empty() {
            return Err("the trust domain is empty".to_owned());
        }
        if let Some(bad) = trust_domain.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')) {
            return Err(format!(
                "the trust domain may only hold lowercase letters, digits, '.', '-' and '_', not {bad:?}"
            ));
        }
        let (path, below) = match path.strip_suffix("/*") {
            Some(parent) => (parent, true),
            None if path == "*" => ("", true),
            None => (path, false),
        };
        if path.is_empty() && below {
            // `spiffe://<trust domain>/*`: every workload of the trust domain.
            return Ok(Self::Below(format!("spiffe://{trust_domain}/")));
        }
        if path.is_empty() {
            return Err("the path after the trust domain is empty".to_owned());
        }
        for segment in path.split('/') {
            if segment.contains('*') {
                return Err("the only wildcard is a final \"/*\" (any path below)".to_owned());
            }
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(format!("the path has an empty, '.' or '..' segment ({segment:?})"));
            }
            if let Some(bad) =
                segment.chars().find(|c| !matches!(c, 'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
            {
                return Err(format!("path segments may only hold letters, digits, '.', '-' and '_', not {bad:?}"));
            }
        }
        Ok(if below {
            Self::Below(format!("spiffe://{trust_domain}/{path}/"))
        } else {
            Self::Exact(pattern.to_owned())
        })
    }
}

/// A problem at a byte range of the text.
struct Located {
    span: Range<usize>,
    problem: String,
}

fn at(span: &Range<usize>, problem: String) -> Located {
    Located { span: span.clone(), problem }
}

/// The parser's message may span lines; the error is one line.
fn one_line(message: &str) -> String {
    message.lines().map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join("; ")
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

fn rules(document: Node) -> Result<(Vec<Rule>, Option<ProvisionPolicy>), Located> {
    let Node::Table(entries) = document else {
        return Err(at(&(0..0), "expected a table of [[allow]] rules".to_owned()));
    };
    let mut allow = None;
    let mut provision = None;
    for (key, value) in entries {
        match key.as_str() {
            "allow" => allow = Some(value),
            "provision" => provision = Some(provision_table(value)?),
            _ => return Err(at(&value.span(), format!("unknown key {key:?} (known: allow, provision)"))),
        }
    }
    let Some(allow) = allow else {
        // Provisioning serves callers of its own (any verified token): rules are optional then.
        if provision.is_some() {
            return Ok((Vec::new(), provision));
        }
        return Err(at(&(0..0), "no [[allow]] rules; with none, nobody could be served".to_owned()));
    };
    let span = allow.span();
    let Node::Array(items) = allow.into_inner() else {
        return Err(at(&span, "allow: expected [[allow]] rules (an array of tables)".to_owned()));
    };
    if items.is_empty() {
        return Err(at(&span, "allow: no rules; with none, nobody could be served".to_owned()));
    }
    let rules = items.into_iter().map(rule).collect::<Result<_, _>>()?;
    Ok((rules, provision))
}

fn provision_table(value: Spanned<Node>) -> Result<ProvisionPolicy, Located> {
    let span = value.span();
    let node = value.into_inner();
    let Node::Table(entries) = node else {
        return Err(at(&span, format!("provision: expected a [provision] table, not {}", node.kind())));
    };
    let mut role_attributes = None;
    for (key, value) in entries {
        match key.as_str() {
            "role_attributes" => role_attributes = Some(role_attribute_list(value)?),
            _ => {
                let known = PROVISION_KEYS.join(", ");
                return Err(at(&value.span(), format!("provision: unknown key {key:?} (known: {known})")));
            }
        }
    }
    let Some(role_attributes) = role_attributes else {
        return Err(at(
            &span,
            "provision: role_attributes missing; list the role attributes tokens may grant (may be [])".to_owned(),
        ));
    };
    Ok(ProvisionPolicy { role_attributes })
}

fn rule(item: Spanned<Node>) -> Result<Rule, Located> {
    let span = item.span();
    let node = item.into_inner();
    let Node::Table(entries) = node else {
        return Err(at(&span, format!("allow: each rule must be a table, not {}", node.kind())));
    };
    let mut who: Option<(&'static str, Who)> = None;
    let mut service_types = None;
    let mut role_attributes_line = None;
    let mut role_attributes = Vec::new();
    for (key, value) in entries {
        let value_span = value.span();
        let named = match key.as_str() {
            "spiffe_id" => {
                let id = string(&key, value)?;
                let pattern = SpiffePattern::parse(&id)
                    .map_err(|why| at(&value_span, format!("spiffe_id: {id:?} is not a SPIFFE ID pattern: {why}")))?;
                Some(("spiffe_id", Who::Spiffe(pattern)))
            }
            "jwt_claim" => {
                let claim = string(&key, value)?;
                if claim.is_empty() {
                    return Err(at(&value_span, "jwt_claim: must not be empty".to_owned()));
                }
                Some(("jwt_claim", Who::Jwt(claim)))
            }
            "anonymous" => {
                if !boolean(&key, value)? {
                    return Err(at(
                        &value_span,
                        "anonymous: only `anonymous = true` is meaningful; leave the key out otherwise".to_owned(),
                    ));
                }
                Some(("anonymous", Who::Anonymous))
            }
            "service_types" => {
                service_types = Some(service_type_list(value)?);
                None
            }
            "role_attributes" => {
                role_attributes_line = Some(value_span.clone());
                role_attributes = role_attribute_list(value)?;
                None
            }
            _ => {
                let known = RULE_KEYS.join(", ");
                return Err(at(&value_span, format!("unknown key {key:?} (known: {known})")));
            }
        };
        if let Some((key, principal)) = named {
            if let Some((first, _)) = who {
                return Err(at(
                    &value_span,
                    format!("{key}: a rule names one principal, and this one already has {first}"),
                ));
            }
            who = Some((key, principal));
        }
    }
    let Some((_, who)) = who else {
        return Err(at(
            &span,
            "the rule names no principal: give one of spiffe_id, jwt_claim or anonymous = true".to_owned(),
        ));
    };
    let Some(service_types) = service_types else {
        let known = SERVICE_TYPES.join(", ");
        return Err(at(
            &span,
            format!("service_types: missing; name the service types this rule allows (known: {known})"),
        ));
    };
    if let Some(line) = role_attributes_line.filter(|_| service_types.is_empty() && !role_attributes.is_empty()) {
        return Err(at(
            &line,
            "role_attributes: with service_types = [] nothing is issued to grant them to".to_owned(),
        ));
    }
    Ok(Rule { who, service_types, role_attributes })
}

fn service_type_list(value: Spanned<Node>) -> Result<Vec<String>, Located> {
    let known = SERVICE_TYPES.join(", ");
    let types = string_list("service_types", value, |name| {
        if SERVICE_TYPES.contains(&name) {
            Ok(())
        } else {
            Err(format!("unknown service type {name:?} (known: {known})"))
        }
    })?;
    Ok(types)
}

fn role_attribute_list(value: Spanned<Node>) -> Result<Vec<String>, Located> {
    string_list("role_attributes", value, |attribute| {
        if attribute.is_empty() {
            Err("a role attribute must not be empty".to_owned())
        } else if attribute.starts_with('#') {
            Err(format!("{attribute:?}: role attributes are given without the leading #"))
        } else if attribute.chars().any(|c| c.is_whitespace() || c == ',') {
            Err(format!("{attribute:?}: a role attribute must not contain whitespace or commas"))
        } else {
            Ok(())
        }
    })
}

/// An array of strings, each checked, none repeated; errors point at the element.
fn string_list(
    key: &str,
    value: Spanned<Node>,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<Vec<String>, Located> {
    let span = value.span();
    let node = value.into_inner();
    let Node::Array(items) = node else {
        return Err(at(&span, format!("{key}: expected an array of strings, not {}", node.kind())));
    };
    let mut list: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let item_span = item.span();
        let text = string(key, item)?;
        check(&text).map_err(|problem| at(&item_span, format!("{key}: {problem}")))?;
        if list.contains(&text) {
            return Err(at(&item_span, format!("{key}: {text:?} is listed twice")));
        }
        list.push(text);
    }
    Ok(list)
}

fn string(key: &str, value: Spanned<Node>) -> Result<String, Located> {
    let span = value.span();
    match value.into_inner() {
        Node::String(text) => Ok(text),
        other => Err(at(&span, format!("{key}: expected a string, not {}", other.kind()))),
    }
}

fn boolean(key: &str, value: Spanned<Node>) -> Result<bool, Located> {
    let span = value.span();
    match value.into_inner() {
        Node::Boolean(flag) => Ok(flag),
        other => Err(at(&span, format!("{key}: expected true, not {}", other.kind()))),
    }
}

/// Any TOML value, with the position of every nested value, in document order. The
/// rules are checked by hand from this, rather than by typed serde structs, so that a
/// value of the wrong type is reported with its key (serde's message names only the type).
#[derive(Debug)]
enum Node {
    String(String),
    Boolean(bool),
    Array(Vec<Spanned<Node>>),
    Table(Vec<(String, Spanned<Node>)>),
    /// A number or date-time, which no key takes; the kind, for the message.
    Other(&'static str),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Self::String(_) => "a string",
            Self::Boolean(_) => "a boolean",
            Self::Array(_) => "an array",
            Self::Table(_) => "a table",
            Self::Other(kind) => kind,
        }
    }
}

/// How the `toml` crate hands a date-time to serde: a map with this one key.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, flag: bool) -> Result<Node, E> {
        Ok(Node::Boolean(flag))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Node, E> {
        Ok(Node::String(text.to_owned()))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Node, E> {
        Ok(Node::String(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == TOML_DATETIME_KEY {
                map.next_value::<IgnoredAny>()?;
                return Ok(Node::Other("a date-time"));
            }
            entries.push((key, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Table(entries))
    }
}
