use std::collections::BTreeSet;
use std::path::Path;

use rstest::rstest;

use super::{Grant, Policy, PolicyError};
use crate::auth::Principal;

const SOURCE: &str = "/etc/zm/policy.toml";

/// The line and problem of a policy that must be refused.
fn refused(text: &str) -> (usize, String) {
    match Policy::parse(text, SOURCE) {
        Ok(policy) => panic!("accepted: {policy:?}"),
        Err(PolicyError::Invalid { file, line, problem }) => {
            assert_eq!(file, SOURCE);
            (line, problem)
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

fn policy(text: &str) -> Policy {
    match Policy::parse(text, SOURCE) {
        Ok(policy) => policy,
        Err(error) => panic!("refused: {error}"),
    }
}

fn spiffe(id: &str) -> Principal {
    Principal::Spiffe(id.to_owned())
}

fn jwt(value: &str) -> Principal {
    Principal::Jwt(value.to_owned())
}

fn grant(attributes: &[&str]) -> Option<Grant> {
    Some(Grant { role_attributes: attributes.iter().map(|a| (*a).to_owned()).collect() })
}

#[test]
fn the_error_names_the_file_the_line_and_the_key() {
    let text = "# comment\n\n[[allow]]\nspiffe_id = \"spiffe://td/gateway\"\nservice_types = [\n  \"gateway\",\n  \"gatway\",\n]\n";
    let error = Policy::parse(text, SOURCE).err().map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some("policy /etc/zm/policy.toml, line 7: service_types: unknown service type \"gatway\" (known: gateway)")
    );
}

const RULE: &str = "[[allow]]\nspiffe_id = \"spiffe://td/gateway\"\nservice_types = [\"gateway\"]\n";

#[rstest]
#[case::empty_file("", 1, "no [[allow]] rules; with none, nobody could be served")]
#[case::only_comments("# nothing\n", 1, "no [[allow]] rules; with none, nobody could be served")]
#[case::empty_array("# none\nallow = []\n", 2, "allow: no rules; with none, nobody could be served")]
#[case::allow_as_table("# x\n[allow]\nanonymous = true\n", 2, "allow: expected [[allow]] rules (an array of tables)")]
#[case::rule_not_a_table("\nallow = [\"x\"]\n", 2, "allow: each rule must be a table, not a string")]
#[case::unknown_top_level_key("deny = 1\n", 1, "unknown key \"deny\" (known: allow, provision)")]
#[case::unknown_rule_key(
    "[[allow]]\nanonymous = true\nservice_types = [\"gateway\"]\nrole = \"x\"\n",
    4,
    "unknown key \"role\" (known: spiffe_id, jwt_claim, anonymous, service_types, role_attributes)"
)]
#[case::no_principal(
    "# x\n\n[[allow]]\nservice_types = [\"gateway\"]\n",
    3,
    "the rule names no principal: give one of spiffe_id, jwt_claim or anonymous = true"
)]
#[case::two_principals(
    "[[allow]]\nspiffe_id = \"spiffe://td/a\"\nservice_types = [\"gateway\"]\njwt_claim = \"ci\"\n",
    4,
    "jwt_claim: a rule names one principal, and this one already has spiffe_id"
)]
#[case::anonymous_false(
    "[[allow]]\nanonymous = false\nservice_types = [\"gateway\"]\n",
    2,
    "anonymous: only `anonymous = true` is meaningful; leave the key out otherwise"
)]
#[case::anonymous_not_a_bool(
    "[[allow]]\nservice_types = [\"gateway\"]\nanonymous = \"yes\"\n",
    3,
    "anonymous: expected true, not a string"
)]
#[case::spiffe_id_a_number(
    "[[allow]]\nspiffe_id = 5\nservice_types = [\"gateway\"]\n",
    2,
    "spiffe_id: expected a string, not a number"
)]
#[case::spiffe_id_a_date(
    "[[allow]]\nspiffe_id = 1979-05-27\nservice_types = [\"gateway\"]\n",
    2,
    "spiffe_id: expected a string, not a date-time"
)]
#[case::jwt_claim_empty(
    "[[allow]]\njwt_claim = \"\"\nservice_types = [\"gateway\"]\n",
    2,
    "jwt_claim: must not be empty"
)]
#[case::service_types_missing(
    "[[allow]]\nanonymous = true\nrole_attributes = [\"a\"]\n",
    1,
    "service_types: missing; name the service types this rule allows (known: gateway)"
)]
#[case::role_attributes_without_service_types(
    "[[allow]]\nanonymous = true\nservice_types = []\nrole_attributes = [\"a\"]\n",
    4,
    "role_attributes: with service_types = [] nothing is issued to grant them to"
)]
#[case::service_types_a_string(
    "[[allow]]\nanonymous = true\nservice_types = \"gateway\"\n",
    3,
    "service_types: expected an array of strings, not a string"
)]
#[case::service_type_a_number(
    "[[allow]]\nanonymous = true\nservice_types = [\n\"gateway\",\n5]\n",
    5,
    "service_types: expected a string, not a number"
)]
#[case::service_type_twice(
    "[[allow]]\nanonymous = true\nservice_types = [\"gateway\", \"gateway\"]\n",
    3,
    "service_types: \"gateway\" is listed twice"
)]
#[case::role_attribute_empty(
    "[[allow]]\nanonymous = true\nservice_types = [\"gateway\"]\nrole_attributes = [\"\"]\n",
    4,
    "role_attributes: a role attribute must not be empty"
)]
#[case::role_attribute_with_hash(
    "[[allow]]\nanonymous = true\nservice_types = [\"gateway\"]\nrole_attributes = [\"#hosts\"]\n",
    4,
    "role_attributes: \"#hosts\": role attributes are given without the leading #"
)]
#[case::role_attribute_with_space(
    "[[allow]]\nanonymous = true\nservice_types = [\"gateway\"]\nrole_attributes = [\"a b\"]\n",
    4,
    "role_attributes: \"a b\": a role attribute must not contain whitespace or commas"
)]
#[case::role_attribute_with_comma(
    "[[allow]]\nanonymous = true\nservice_types = [\"gateway\"]\nrole_attributes = [\"a,b\"]\n",
    4,
    "role_attributes: \"a,b\": a role attribute must not contain whitespace or commas"
)]
#[case::role_attribute_twice(
    "[[allow]]\nanonymous = true\nservice_types = [\"gateway\"]\nrole_attributes = [\"a\", \"a\"]\n",
    4,
    "role_attributes: \"a\" is listed twice"
)]
#[case::role_attributes_a_string(
    "[[allow]]\nanonymous = true\nservice_types = [\"gateway\"]\nrole_attributes = \"a\"\n",
    4,
    "role_attributes: expected an array of strings, not a string"
)]
fn an_invalid_policy_is_refused_at_its_line(#[case] text: &str, #[case] line: usize, #[case] problem: &str) {
    assert_eq!(refused(text), (line, problem.to_owned()));
}

#[rstest]
#[case::dotted_key_in_a_rule("[[allow]]\nanonymous = true\nservice_types.x = 1\n", 3, "\"x\"")]
#[case::dotted_key_at_the_top("# x\nallow.x = 1\n", 2, "\"x\"")]
#[case::nested_table_header("[[allow]]\nanonymous = true\n[allow.x.y]\nq = 1\n", 3, "\"y\"")]
fn a_dotted_key_is_refused_at_its_line(#[case] text: &str, #[case] line: usize, #[case] key: &str) {
    let problem = format!("{key}: nested tables are not part of a policy (only [[allow]] rules of plain keys)");
    assert_eq!(refused(text), (line, problem));
}

#[test]
fn a_sub_table_of_a_rule_is_an_unknown_key() {
    let text = "[[allow]]\nanonymous = true\nservice_types = [\"gateway\"]\n[allow.extra]\nq = 1\n";
    let known = "spiffe_id, jwt_claim, anonymous, service_types, role_attributes";
    assert_eq!(refused(text), (4, format!("unknown key \"extra\" (known: {known})")));
}

#[test]
fn an_error_in_a_later_rule_names_its_line() {
    let text = format!("{RULE}\n{RULE}\n[[allow]]\njwt_claim = \"ci\"\nservice_types = [\"gatway\"]\n");
    assert_eq!(refused(&text), (11, "service_types: unknown service type \"gatway\" (known: gateway)".to_owned()));
}

#[rstest]
#[case::duplicate_key("[[allow]]\nanonymous = true\nanonymous = true\n", 3)]
#[case::unterminated_string("[[allow]]\nservice_types = [\"gateway\"]\nspiffe_id = \"spiffe://td/a\n", 3)]
#[case::bad_header("\n\n[[allow]\n", 3)]
fn a_toml_syntax_error_is_refused_at_its_line(#[case] text: &str, #[case] line: usize) {
    let (at, problem) = refused(text);
    assert_eq!(at, line, "{problem}");
    assert!(!problem.is_empty() && !problem.contains('\n'), "one line, no source snippet: {problem:?}");
}

#[rstest]
#[case::not_spiffe("http://td/gateway", "it must start with \"spiffe://\"")]
#[case::no_path("spiffe://td", "it needs a path after the trust domain")]
#[case::empty_path("spiffe://td/", "the path after the trust domain is empty")]
#[case::empty_trust_domain("spiffe:///gateway", "the trust domain is empty")]
#[case::upper_case_trust_domain(
    "spiffe://TD/gateway",
    "the trust domain may only hold lowercase letters, digits, '.', '-' and '_', not 'T'"
)]
#[case::port(
    "spiffe://td:443/gateway",
    "the trust domain may only hold lowercase letters, digits, '.', '-' and '_', not ':'"
)]
#[case::empty_segment("spiffe://td/a//b", "the path has an empty, '.' or '..' segment (\"\")")]
#[case::trailing_slash("spiffe://td/a/", "the path has an empty, '.' or '..' segment (\"\")")]
#[case::dot_segment("spiffe://td/a/./b", "the path has an empty, '.' or '..' segment (\".\")")]
#[case::dot_dot_segment("spiffe://td/a/../b", "the path has an empty, '.' or '..' segment (\"..\")")]
#[case::inner_wildcard("spiffe://td/a/*/b", "the only wildcard is a final \"/*\" (any path below)")]
#[case::partial_wildcard("spiffe://td/gateway*", "the only wildcard is a final \"/*\" (any path below)")]
#[case::double_wildcard("spiffe://td/a/**", "the only wildcard is a final \"/*\" (any path below)")]
#[case::query("spiffe://td/a?b=c", "path segments may only hold letters, digits, '.', '-' and '_', not '?'")]
#[case::space("spiffe://td/a b", "path segments may only hold letters, digits, '.', '-' and '_', not ' '")]
fn an_invalid_spiffe_id_is_refused(#[case] id: &str, #[case] why: &str) {
    let text = format!("[[allow]]\nservice_types = [\"gateway\"]\nspiffe_id = \"{id}\"\n");
    assert_eq!(refused(&text), (3, format!("spiffe_id: {id:?} is not a SPIFFE ID pattern: {why}")));
}

#[test]
fn the_example_policy_is_valid() {
    let example = policy(include_str!("../../policy.example.toml"));
    assert_eq!(example.rule_count(), 4);
    assert_eq!(example.classes(), BTreeSet::from(["spiffe", "jwt"]));
    assert_eq!(
        example.grant(&spiffe("spiffe://ziti-gateway.test/gateways/eu-1"), "gateway"),
        grant(&["gateway-hosts"])
    );
    assert_eq!(example.grant(&jwt("ci-runner"), "gateway"), grant(&["gateway-hosts", "ci"]));
    assert_eq!(example.grant(&Principal::Anonymous, "gateway"), None);
    let other = spiffe("spiffe://ziti-gateway.test/api");
    assert!(example.admits(&other) && example.grant(&other, "gateway").is_none(), "known, issued nothing");
}

#[test]
fn the_format_of_the_brief_is_accepted() {
    let text = r#"
# Who may ask ziti-management for identities, and what they get. First matching rule wins.
[[allow]]
spiffe_id = "spiffe://ziti-gateway.test/gateway"
service_types = ["gateway"]
role_attributes = ["gateway-hosts"]

[[allow]]
jwt_claim = "ci-runner"
service_types = ["gateway"]
role_attributes = ["gateway-hosts", "ci"]

[[allow]]
anonymous = true
service_types = ["gateway"]
role_attributes = []
"#;
    let policy = policy(text);
    assert_eq!(policy.rule_count(), 3);
    assert_eq!(policy.classes(), BTreeSet::from(["spiffe", "jwt", "anonymous"]));
    assert_eq!(policy.grant(&Principal::Anonymous, "gateway"), grant(&[]));
}

#[test]
fn an_exact_spiffe_id_matches_only_itself() {
    let policy = policy(RULE);
    assert_eq!(policy.grant(&spiffe("spiffe://td/gateway"), "gateway"), grant(&[]));
    assert_eq!(policy.grant(&spiffe("spiffe://td/gateway/x"), "gateway"), None);
    assert_eq!(policy.grant(&spiffe("spiffe://td/gateways"), "gateway"), None);
    assert_eq!(policy.grant(&spiffe("spiffe://other/gateway"), "gateway"), None);
}

#[rstest]
#[case::child("spiffe://td/gateways/eu-1", true)]
#[case::grandchild("spiffe://td/gateways/eu/1", true)]
#[case::itself("spiffe://td/gateways", false)]
#[case::itself_with_slash("spiffe://td/gateways/", false)]
#[case::sibling_with_the_same_prefix("spiffe://td/gatewaysX/eu-1", false)]
#[case::sibling_without_slash("spiffe://td/gatewaysX", false)]
#[case::other_trust_domain("spiffe://other/gateways/eu-1", false)]
#[case::trust_domain_with_the_same_prefix("spiffe://td.evil/gateways/eu-1", false)]
#[case::parent("spiffe://td/", false)]
fn a_prefix_pattern_matches_descendants_only(#[case] id: &str, #[case] matches: bool) {
    let policy = policy(
        "[[allow]]\nspiffe_id = \"spiffe://td/gateways/*\"\nservice_types = [\"gateway\"]\nrole_attributes = [\"g\"]\n",
    );
    assert_eq!(policy.grant(&spiffe(id), "gateway").is_some(), matches);
    assert_eq!(policy.admits(&spiffe(id)), matches);
}

#[test]
fn a_jwt_claim_matches_exactly() {
    let policy =
        policy("[[allow]]\njwt_claim = \"ci-runner\"\nservice_types = [\"gateway\"]\nrole_attributes = [\"ci\"]\n");
    assert_eq!(policy.grant(&jwt("ci-runner"), "gateway"), grant(&["ci"]));
    assert_eq!(policy.grant(&jwt("ci-runner2"), "gateway"), None);
    assert_eq!(policy.grant(&jwt("CI-RUNNER"), "gateway"), None);
    assert_eq!(policy.grant(&spiffe("ci-runner"), "gateway"), None);
    assert_eq!(policy.grant(&Principal::Anonymous, "gateway"), None);
}

#[test]
fn a_jwt_whose_claim_reads_like_a_spiffe_id_is_not_that_spiffe_id() {
    let policy = policy(RULE);
    assert_eq!(policy.grant(&jwt("spiffe://td/gateway"), "gateway"), None);
    assert!(!policy.admits(&jwt("spiffe://td/gateway")));
}

#[test]
fn an_anonymous_rule_matches_only_anonymous_callers() {
    let policy = policy("[[allow]]\nanonymous = true\nservice_types = [\"gateway\"]\nrole_attributes = [\"a\"]\n");
    assert_eq!(policy.grant(&Principal::Anonymous, "gateway"), grant(&["a"]));
    assert_eq!(policy.grant(&jwt("anonymous"), "gateway"), None);
    assert_eq!(policy.grant(&spiffe("spiffe://td/gateway"), "gateway"), None);
}

#[test]
fn the_first_matching_rule_wins() {
    let policy = policy(
        r#"
[[allow]]
spiffe_id = "spiffe://td/gateways/special"
service_types = ["gateway"]
role_attributes = ["special"]

[[allow]]
spiffe_id = "spiffe://td/gateways/*"
service_types = ["gateway"]
role_attributes = ["any"]

[[allow]]
spiffe_id = "spiffe://td/gateways/special"
service_types = ["gateway"]
role_attributes = ["never"]
"#,
    );
    assert_eq!(policy.grant(&spiffe("spiffe://td/gateways/special"), "gateway"), grant(&["special"]));
    assert_eq!(policy.grant(&spiffe("spiffe://td/gateways/other"), "gateway"), grant(&["any"]));
}

#[test]
fn a_service_type_no_rule_allows_gets_nothing() {
    let policy = policy(RULE);
    assert_eq!(policy.grant(&spiffe("spiffe://td/gateway"), "database"), None);
    assert_eq!(policy.grant(&spiffe("spiffe://td/gateway"), ""), None);
    // Named by a rule, so it may still resolve identities and keep its own leases.
    assert!(policy.admits(&spiffe("spiffe://td/gateway")));
}

#[test]
fn admits_only_principals_some_rule_names() {
    let policy = policy(RULE);
    assert!(policy.admits(&spiffe("spiffe://td/gateway")));
    assert!(!policy.admits(&spiffe("spiffe://td/other")));
    assert!(!policy.admits(&Principal::Anonymous));
}

#[test]
fn without_a_file_anonymous_callers_get_a_gateway_identity() {
    let policy = Policy::anonymous_gateway(vec!["gateway-hosts".to_owned()]);
    assert_eq!(policy.rule_count(), 1);
    assert_eq!(policy.classes(), BTreeSet::from(["anonymous"]));
    assert_eq!(policy.grant(&Principal::Anonymous, "gateway"), grant(&["gateway-hosts"]));
    assert_eq!(policy.grant(&spiffe("spiffe://td/gateway"), "gateway"), None);
    assert_eq!(policy.grant(&Principal::Anonymous, "database"), None);
}

#[test]
fn load_reads_the_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("policy.toml");
    std::fs::write(&good, RULE).expect("write");
    assert_eq!(Policy::load(&good).map(|p| p.rule_count()), Ok(1));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[allow]]\nanonymous = true\n").expect("write");
    let error = Policy::load(&bad).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.starts_with(&format!("policy {}, line 1: service_types: missing", bad.display())), "{error}");
}

#[test]
fn load_of_a_missing_file_says_which() {
    let path = Path::new("/nonexistent/zm/policy.toml");
    let error = Policy::load(path).err();
    assert!(matches!(&error, Some(PolicyError::Unreadable { path: p, .. }) if p == path), "{error:?}");
    let message = error.map(|e| e.to_string()).unwrap_or_default();
    assert!(message.starts_with("cannot read the policy file /nonexistent/zm/policy.toml: "), "{message}");
}

#[test]
fn a_rule_without_service_types_admits_its_principal_but_grants_nothing() {
    let policy =
        Policy::parse("[[allow]]\nspiffe_id = \"spiffe://td/workloads/*\"\nservice_types = []\n", "known.toml")
            .expect("valid");
    let principal = Principal::Spiffe("spiffe://td/workloads/api".to_owned());
    assert!(policy.admits(&principal), "known: it may resolve identities");
    assert_eq!(policy.grant(&principal, "gateway"), None, "but is issued nothing");
}

#[test]
fn a_whole_trust_domain_pattern_matches_its_workloads_only() {
    let policy =
        Policy::parse("[[allow]]\nspiffe_id = \"spiffe://td/*\"\nservice_types = []\n", "td.toml").expect("valid");
    assert!(policy.admits(&Principal::Spiffe("spiffe://td/a".to_owned())));
    assert!(policy.admits(&Principal::Spiffe("spiffe://td/a/b".to_owned())));
    assert!(!policy.admits(&Principal::Spiffe("spiffe://td.evil/a".to_owned())));
    assert!(!policy.admits(&Principal::Spiffe("spiffe://td/".to_owned())));
}

#[test]
fn the_provision_table_lists_the_role_attributes_tokens_may_grant() {
    let policy = policy(&format!("{RULE}\n[provision]\nrole_attributes = [\"gateway-hosts\", \"gateway-clients\"]\n"));
    let provision = policy.provision().expect("a [provision] table");
    assert_eq!(provision.role_attributes, ["gateway-hosts", "gateway-clients"]);
    assert_eq!(policy.rule_count(), 1);
    assert!(Policy::parse(RULE, SOURCE).expect("valid").provision().is_none(), "no table, no provisioning");
}

#[test]
fn a_policy_that_only_provisions_needs_no_allow_rules() {
    let policy = policy("# IdP identities only\n[provision]\nrole_attributes = []\n");
    assert_eq!(policy.rule_count(), 0);
    assert_eq!(policy.provision().map(|p| p.role_attributes.len()), Some(0));
    assert!(!policy.admits(&jwt("anyone")), "provisioning admits nobody to the other calls");
}

#[rstest]
#[case::unknown_key(
    "[provision]\nrole_attributes = []\nroles = [\"x\"]\n",
    3,
    "provision: unknown key \"roles\" (known: role_attributes)"
)]
#[case::no_role_attributes(
    "# x\n[provision]\n",
    2,
    "provision: role_attributes missing; list the role attributes tokens may grant (may be [])"
)]
#[case::bad_attribute(
    "[provision]\nrole_attributes = [\n  \"ok\",\n  \"#hash\",\n]\n",
    4,
    "role_attributes: \"#hash\": role attributes are given without the leading #"
)]
#[case::repeated_attribute(
    "[provision]\nrole_attributes = [\"a\", \"a\"]\n",
    2,
    "role_attributes: \"a\" is listed twice"
)]
#[case::not_a_table("provision = 1\n", 1, "provision: expected a [provision] table, not a number")]
fn bad_provision_tables_are_refused_with_their_line(#[case] text: &str, #[case] line: usize, #[case] problem: &str) {
    assert_eq!(refused(text), (line, problem.to_owned()));
}
